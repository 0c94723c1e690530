"""The PyTorch stencil backend agrees with the sparse direct one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_fields
from diffnorm.fields import Fields
from diffnorm.methods import estimate
from diffnorm.operator import SparseOperator, system_matrix
from diffnorm.torch_operator import SlowBackendWarning, TorchStencilOperator

# the tests run it on a CPU on purpose; the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore::diffnorm.torch_operator.SlowBackendWarning")


@pytest.fixture(params=[True, False], ids=["periodic", "closed"])
def fields(request) -> Fields:
    return random_fields(ny=12, nx=17, steps=6, periodic_x=request.param, seed=5)


@pytest.mark.filterwarnings("default::diffnorm.torch_operator.SlowBackendWarning")
def test_a_cpu_torch_backend_warns_that_sparse_is_faster():
    with pytest.warns(SlowBackendWarning, match="--backend sparse"):
        TorchStencilOperator(random_fields(ny=12, nx=17, seed=1), device="cpu")


def test_stencil_equals_matrix(fields):
    op = TorchStencilOperator(fields, device="cpu")
    x = np.random.default_rng(0).standard_normal((op.n, 3))
    y = op._from_grid_tensor(op.apply_matrix(op._to_grid_tensor(x)), 2)
    expected = system_matrix(fields) @ x
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def test_solve_and_powers_match_sparse(fields):
    t_op = TorchStencilOperator(fields, device="cpu")
    s_op = SparseOperator(fields)
    b = np.random.default_rng(1).standard_normal((t_op.n, 5))
    np.testing.assert_allclose(t_op.solve(b), s_op.solve(b), rtol=1e-10, atol=1e-22)
    np.testing.assert_allclose(t_op.solve(b[:, 0]), s_op.solve(b[:, 0]), rtol=1e-10, atol=1e-22)
    np.testing.assert_allclose(t_op.sym_power(b, 3), s_op.sym_power(b, 3), rtol=1e-10)


def test_exact_gamma_matches_sparse(fields):
    g_sparse = estimate(fields, "brute").gamma
    g_torch = estimate(fields, "brute", backend="torch").gamma
    m = fields.mask
    assert np.max(np.abs(g_torch[m] ** 2 / g_sparse[m] ** 2 - 1)) <= 1e-9
    # short length scales, so that probing probes (30 colours) instead of using brute force
    short = random_fields(ny=12, nx=17, steps=4, periodic_x=fields.periodic_x, seed=5, kappa=0.02)
    g_sparse = estimate(short, "brute").gamma
    p_torch = estimate(short, "probing", backend="torch", tolerance=1e-4)
    assert "fallback" not in p_torch.info and p_torch.info["colours"] <= 30
    m = short.mask
    assert np.max(np.abs(p_torch.gamma[m] ** 2 / g_sparse[m] ** 2 - 1)) <= 1e-4


def test_isolated_cell_and_float32():
    mask = np.ones((5, 6))
    mask[1:4, 1:4] = 0
    mask[2, 2] = 1  # an isolated ocean cell: (W + K) = w there
    area = np.full((5, 6), 2.0)
    f = Fields(mask, area, np.ones((5, 6)), np.ones((5, 6)), 4, True)
    g = estimate(f, "brute", backend="torch").gamma
    assert g[2, 2] ** 2 == pytest.approx(2.0, rel=1e-12)
    f32 = TorchStencilOperator(f, device="cpu", dtype=torch.float32)
    b = np.random.default_rng(2).standard_normal((f32.n, 4))
    np.testing.assert_allclose(f32.solve(b), SparseOperator(f).solve(b), rtol=2e-5, atol=1e-6)


def test_non_convergence_is_reported(fields):
    op = TorchStencilOperator(fields, device="cpu", max_iter=2)
    with pytest.raises(RuntimeError, match="did not converge"):
        op.solve(np.ones(op.n))
