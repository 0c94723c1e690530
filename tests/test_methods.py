"""Every γ method against dense linear algebra or against the exact methods."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from conftest import dense_variance, random_fields
from diffnorm.fields import Fields
from diffnorm.grid import box_grid, fields_from_cell_length_scales
from diffnorm.methods import ProbingCertificateError, estimate, method_options
from diffnorm.methods.brute import brute_variance
from diffnorm.ml.modelfile import ModelFileError
from diffnorm.operator import make_operator


def rel_err_g2(gamma_hat: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    ok = np.isfinite(gamma)
    return (gamma_hat[ok] ** 2 - gamma[ok] ** 2) / gamma[ok] ** 2


@pytest.mark.parametrize("columns", [[1.5], [[0, 1]], ["0"]])
def test_brute_refuses_columns_that_are_not_whole_indices(small_fields, columns):
    with pytest.raises(ValueError, match="columns must be a 1-D list of whole ocean-cell"):
        estimate(small_fields, "brute", columns=columns)


def test_brute_on_some_columns_equals_brute_everywhere_there(small_fields):
    everywhere = estimate(small_fields, "brute").gamma[small_fields.mask]
    some = estimate(small_fields, "brute", columns=[0.0, 3]).gamma[small_fields.mask]
    np.testing.assert_allclose(some[[0, 3]], everywhere[[0, 3]], rtol=1e-12)
    assert np.isnan(some[1])


@pytest.mark.parametrize(
    "periodic_x, steps, anisotropy, seed",
    [(True, 6, 1.0, 0), (False, 4, 2.0, 1), (True, 8, 0.5, 2), (False, 10, 1.0, 3)],
)
def test_brute_matches_dense(periodic_x, steps, anisotropy, seed):
    fields = random_fields(steps=steps, periodic_x=periodic_x, anisotropy=anisotropy, seed=seed)
    exact = dense_variance(fields)
    result = estimate(fields, "brute", block_size=7)
    gamma = result.gamma[fields.mask]
    assert np.all(np.isnan(result.gamma[~fields.mask]))
    assert np.max(np.abs(gamma**-2 / exact - 1)) <= 1e-10
    assert result.tolerance == 0.0


def test_probing_small_grid_is_exact(small_fields):
    # a stride as large as the grid: probing would not save 4x over brute force and uses it
    exact = dense_variance(small_fields)
    result = estimate(small_fields, "probing", tolerance=1e-8)
    assert result.info["fallback"] == "brute" and result.error_estimate is None
    gamma = result.gamma[small_fields.mask]
    assert np.max(np.abs(gamma**-2 / exact - 1)) <= 1e-8


@pytest.mark.parametrize("periodic_x", [True, False])
def test_probing_probes_a_small_grid_with_short_length_scales(periodic_x):
    # D below one cell and M = 4: a 5x5 stride is certified to 1e-4 on 14x17 cells
    fields = random_fields(steps=4, periodic_x=periodic_x, kappa=0.02)
    result = estimate(fields, "probing", tolerance=1e-4)
    assert "fallback" not in result.info and result.info["stride"] == (5, 5)
    assert result.info["colours"] < fields.n_ocean / 4
    err = np.abs(dense_variance(fields) * result.gamma[fields.mask] ** 2 - 1)
    assert 1e-8 < err.max() <= result.tolerance == 1e-4  # aliased, within the certificate
    assert np.all(err <= result.error_estimate[fields.mask])


def _medium(periodic_x: bool, seed: int = 4) -> Fields:
    return random_fields(ny=48, nx=64, steps=8, periodic_x=periodic_x, seed=seed, kappa=0.08)


@pytest.mark.parametrize("estimator", ["split", "full"])
@pytest.mark.parametrize("periodic_x", [True, False])
@pytest.mark.parametrize("tolerance", [1e-4, 1e-8])
def test_probing_within_tolerance_of_brute(periodic_x, tolerance, estimator):
    fields = _medium(periodic_x)
    op = make_operator(fields)
    exact = estimate(op, "brute")
    result = estimate(op, "probing", tolerance=tolerance, estimator=estimator)
    assert "fallback" not in result.info, "the grid should be large enough to probe"
    assert result.info["colours"] < op.n / 4
    err = np.abs(rel_err_g2(result.gamma, exact.gamma))
    assert err.max() <= tolerance
    # the certificate bounds the actual error
    assert err.max() <= result.error_estimate[fields.mask].max()
    assert result.tolerance == tolerance
    if estimator == "full":  # all entries of Ŝ^M are >= 0: an upper bound of v, γ² from below
        assert np.all(result.gamma[fields.mask] <= exact.gamma[fields.mask] * (1 + 1e-12))


def test_probing_too_small_stride_is_caught():
    fields = _medium(True)
    with pytest.raises(ProbingCertificateError, match="not certified"):
        estimate(fields, "probing", tolerance=1e-6, stride=3)


def test_probing_stride_compatible_with_wrap():
    # 62 columns are not a multiple of the stride: the wrap must not alias close cells
    fields = _medium(True, seed=5)
    op = make_operator(fields)
    exact = estimate(op, "brute")
    result = estimate(op, "probing", tolerance=1e-6, stride=(20, 15))
    assert np.abs(rel_err_g2(result.gamma, exact.gamma)).max() <= 1e-6


def test_randomization_error_matches_theory():
    fields = random_fields(ny=60, nx=80, steps=6, seed=6, kappa=0.3, islands=False)
    op = make_operator(fields)
    exact = estimate(op, "brute")
    n_samples = 100
    result = estimate(op, "randomization", samples=n_samples, seed=11)
    mean_abs = np.abs(rel_err_g2(result.gamma, exact.gamma)).mean()
    expected = 2 / math.sqrt(math.pi * n_samples)
    assert abs(mean_abs / expected - 1) <= 0.15
    assert result.info["expected_mean_abs_error"] == pytest.approx(expected)


def test_randomization_is_seeded_and_block_independent(small_fields):
    a = estimate(small_fields, "randomization", samples=37, seed=3, block_size=8)
    b = estimate(small_fields, "randomization", samples=37, seed=3, block_size=37)
    c = estimate(small_fields, "randomization", samples=37, seed=4)
    np.testing.assert_allclose(a.gamma, b.gamma, rtol=1e-12)
    assert not np.allclose(a.gamma[small_fields.mask], c.gamma[small_fields.mask])


def test_analytic_far_from_walls_and_at_walls():
    ny, nx, steps = 40, 48, 10
    d = 6.0  # length scale in cells
    kappa = d**2 / (2 * steps - 4)
    area = np.full((ny, nx), 1e8)
    fields = Fields(np.ones((ny, nx)), area, kappa * area, kappa * area, steps, True)
    op = make_operator(fields)
    interior = np.flatnonzero((np.arange(op.n) // nx) == ny // 2)[:4]
    wall = np.flatnonzero((np.arange(op.n) // nx) == 0)[:4]
    v = brute_variance(op, np.concatenate([interior, wall]))
    g2 = 1 / v
    analytic = estimate(fields, "analytic").gamma.ravel() ** 2
    assert analytic[0] == pytest.approx(4 * math.pi * (steps - 1) * kappa * 1e8)
    # lattice effect at D = 6 cells is below 1 %
    assert g2[:4] / analytic[interior] == pytest.approx(np.ones(4), abs=0.01)
    # at a straight wall the exact γ² is about half the local formula
    assert g2[4:] / analytic[wall] == pytest.approx(np.full(4, 0.5), abs=0.03)


def test_estimate_rejects_unknown_method_and_option(small_fields):
    with pytest.raises(ValueError, match="unknown method 'exact'"):
        estimate(small_fields, "exact")
    with pytest.raises(TypeError, match="unknown option"):
        estimate(small_fields, "brute", samples=3)
    assert set(method_options("randomization")) == {"samples", "seed", "block_size"}


def test_numpy_values_and_whole_floats_are_taken_as_python_numbers(small_fields):
    result = estimate(
        small_fields, "randomization", samples=2e1, seed=np.array(3), block_size=np.int64(8)
    )
    assert result.attrs()["option_samples"] == 20 and result.attrs()["option_seed"] == 3
    assert all(isinstance(result.options[k], int) for k in ("samples", "seed"))
    same = estimate(small_fields, "randomization", samples=20, seed=3, block_size=8)
    np.testing.assert_array_equal(result.gamma, same.gamma)
    selinv = estimate(small_fields, "selinv", fallback=np.bool_(True))
    assert selinv.attrs()["option_fallback"] in (1, True)
    import torch

    from diffnorm.ml.modelfile import OutOfRangeWarning

    for device in (None, torch.device("cpu")):  # the cnn's device is not only a string
        with pytest.warns(OutOfRangeWarning):  # a tiny periodic grid: its kernels wrap
            r = estimate(small_fields, "cnn", device=device, exact_basins=np.int64(4))
        assert r.info["device"] == "cpu" and r.options["exact_basins"] == 4
    a = estimate(small_fields, "probing", stride=(14.0, np.float64(14)))
    b = estimate(small_fields, "probing", stride=[14, 14])
    np.testing.assert_array_equal(a.gamma, b.gamma)


@pytest.mark.parametrize(
    "method, options, error, pattern",
    [
        ("randomization", {"seed": -1}, ValueError, "seed must be a whole number >= 0, got -1"),
        ("randomization", {"seed": 1.5}, TypeError, "seed must be a whole number, got 1.5"),
        ("randomization", {"samples": float("nan")}, TypeError, "samples must be a whole number"),
        ("probing", {"stride": 2.5}, TypeError, "stride must be a whole number or a pair"),
        ("selinv", {"tolerance": "1e-6"}, TypeError, "tolerance must be a number, got '1e-6'"),
        ("selinv", {"tolerance": None}, TypeError, "tolerance must be a number, got None"),
        ("selinv", {"threads": "2"}, TypeError, "threads must be a whole number"),
        ("selinv", {"fallback": "no"}, TypeError, "fallback must be True or False"),
        ("cnn", {"exact_basins": -1}, ValueError, "exact_basins must be a whole number >= 0"),
        ("probing", {"stride": (0, 8)}, ValueError, "stride must be a pair of whole numbers >= 1"),
        ("randomization", {"seed": 2**70}, ValueError, "seed must be a whole number <= 2"),
        ("selinv", {"fallback": 1}, TypeError, "fallback must be True or False"),
    ],
)
def test_estimate_checks_the_type_and_range_of_options(
    small_fields, method, options, error, pattern
):
    with pytest.raises(error, match=f"method '{method}': option {pattern}"):
        estimate(small_fields, method, **options)


def test_a_backend_or_a_model_that_does_not_apply_is_refused_by_name(small_fields):
    with pytest.raises(ValueError, match="backend: method 'analytic' does not solve"):
        estimate(small_fields, "analytic", backend="torch")
    with pytest.raises(ModelFileError, match="model must be a shipped model's name"):
        estimate(small_fields, "cnn", model=3)


def test_an_operator_of_other_fields_is_refused(small_fields):
    other = small_fields.replace(alpha_x=small_fields.alpha_x * 2.0)
    op = make_operator(small_fields)
    same = small_fields.replace()  # equal values, another object: the operator serves it
    assert np.array_equal(
        estimate(same, "brute", operator=op).gamma, estimate(op, "brute").gamma, equal_nan=True
    )
    with pytest.raises(ValueError, match="operator: it was built for other fields"):
        estimate(other, "brute", operator=op)


def test_lattice_and_images_take_a_large_m():
    # the quadrature's weights overflowed for M >= 172 (no finite γ at any cell)
    fields = fields_from_cell_length_scales(box_grid(20, 20), 3.0, 3.0, steps=200)
    ref = estimate(fields, "selinv").gamma
    images = estimate(fields, "images").gamma
    assert np.nanmax(np.abs(images**2 / ref**2 - 1)) < 1e-4
    assert np.isfinite(estimate(fields, "lattice").gamma[fields.mask]).all()


def test_result_metadata(small_fields):
    result = estimate(small_fields, "randomization", samples=10, seed=1)
    attrs = result.attrs()
    assert attrs["method"] == "randomization"
    assert attrs["option_samples"] == 10
    assert result.wall_time > 0


def test_analytic_is_capped_by_the_basin_area():
    mask = np.zeros((8, 9))
    mask[2, 3:5] = 1  # a two-cell lake
    mask[5:8, :] = 1  # and a strip of open water
    area = np.full((8, 9), 1e8)
    fields = Fields(mask, area, 4e8 * np.ones((8, 9)), 4e8 * np.ones((8, 9)), 10, True)
    analytic = estimate(fields, "analytic").gamma ** 2
    exact = estimate(fields, "brute").gamma ** 2
    assert analytic[2, 3] == pytest.approx(2e8)
    assert abs(analytic[2, 3] / exact[2, 3] - 1) < 0.05


def _expected_owners(op, col) -> dict[tuple[int, int], int]:
    """Brute force: the owner of (cell, colour) is the nearest lattice point of the colour
    (owner_y, owner_x) when it is an ocean cell of the cell's basin, else the cell of that
    colour in the basin when there is exactly one, else nobody."""
    nx = op.fields.shape[1]
    basin = op.fields.topology.basin_labels(op.fields.mask).ravel()[op.ocean]
    index = {int(g): k for k, g in enumerate(op.ocean)}
    jj, ii = np.divmod(op.ocean, nx)
    owners = {}
    for c in np.unique(col.colour):
        cy, cx = divmod(int(c), col.ncx)
        points = np.flatnonzero(col.colour == c)
        for k in range(op.n):
            o = index.get(int(col.owner_y[cy, jj[k]] * nx + col.owner_x[cx, ii[k]]), -1)
            mine = points[basin[points] == basin[k]]
            if o >= 0 and basin[o] == basin[k]:
                owners[k, int(c)] = o
            elif mine.size == 1:
                owners[k, int(c)] = int(mine[0])
    return owners


@pytest.mark.parametrize("periodic_x", [True, False])
def test_probing_split_sums_over_the_cells_owned_by_each_lattice_point(periodic_x):
    # the split estimate of a probed cell is Σ u² over the cells it owns (see _expected_owners;
    # across the wrap when periodic): never over cells of another basin, whose response comes
    # from other probes (the grid has islands and a one-cell lake)
    from diffnorm.methods.probing import _probe, make_colouring

    fields = random_fields(ny=21, nx=23, steps=4, periodic_x=periodic_x, seed=8, kappa=0.05)
    op = make_operator(fields)
    col = make_colouring(op, 5, 7)  # 23 columns: blocks of 7 and 8 across the wrap
    estimate, _, _ = _probe(op, col, "split", 4, None, 0, col.count)
    probes = np.zeros((op.n, col.count))
    probes[np.arange(op.n), col.colour] = 1.0
    response = op.sym_power(probes, fields.steps // 2)
    expected = np.zeros(op.n)
    for (k, c), o in _expected_owners(op, col).items():
        expected[o] += response[k, c] ** 2
    np.testing.assert_allclose(estimate, expected, rtol=1e-12, atol=0)


def _basins(periodic_x: bool, kappa: float = 0.1) -> Fields:
    """Two seas and a two-row channel between one-cell land strips, a bay, and three lakes
    smaller than the strides used below (one of 1 cell, 2 cells and a staircase over 5 rows)."""
    mask = np.ones((40, 48))
    mask[[17, 20], :] = 0
    mask[22, 30:] = 0
    mask[3:10, 5:10] = 0
    for dy, dx in [(0, 0), (0, 1), (1, 1), (2, 1), (2, 2), (3, 2), (4, 2)]:
        mask[4 + dy, 6 + dx] = 1
    mask[3:6, 20:23] = 0
    mask[4, 21] = 1
    mask[30:33, 10:14] = 0
    mask[31, 11:13] = 1
    fields = random_fields(40, 48, 8, periodic_x, seed=7, kappa=kappa, islands=False)
    return fields.replace(mask=mask)


@pytest.mark.parametrize("periodic_x", [True, False])
@pytest.mark.parametrize("stride", [(6, 6), (5, 8)])
def test_probing_basins_do_not_interact(periodic_x, stride):
    # γ in a basin is the same with or without the other basins on the grid, and basins with
    # at most one cell of each colour (here: smaller than the strides) are exact
    fields = _basins(periodic_x)
    labels = fields.topology.basin_labels(fields.mask)
    assert labels.max() == 6
    exact = estimate(fields, "brute").gamma
    together = estimate(fields, "probing", tolerance=0.5, stride=stride).gamma
    for b in range(1, labels.max() + 1):
        alone = fields.replace(mask=(labels == b).astype(float))
        gamma = estimate(alone, "probing", tolerance=0.5, stride=stride).gamma
        np.testing.assert_allclose(together[labels == b], gamma[labels == b], rtol=1e-12)
        if np.count_nonzero(labels == b) <= 7:  # the lakes
            np.testing.assert_allclose(together[labels == b], exact[labels == b], rtol=1e-12)


@pytest.mark.parametrize("periodic_x", [True, False])
@pytest.mark.parametrize(
    "tolerance, stride", [(1e-4, None), (1e-6, None), (1e-2, (6, 6)), (1e-3, (10, 10))]
)
def test_probing_with_basins_is_within_tolerance_or_refuses(periodic_x, tolerance, stride):
    fields = _basins(periodic_x)
    exact = estimate(fields, "brute").gamma
    try:
        result = estimate(fields, "probing", tolerance=tolerance, stride=stride)
    except ProbingCertificateError:
        assert stride is not None
        return
    assert "fallback" not in result.info and result.info["colours"] < fields.n_ocean / 4
    assert np.abs(rel_err_g2(result.gamma, exact)).max() <= tolerance


def test_lattice_method_is_exact_for_constant_kappa_on_a_periodic_lattice():
    from diffnorm.methods.lattice import lattice_point_variance, lattice_variance_unit_area
    from diffnorm.methods.probing import lattice_kernel

    for kx, ky in ((0.3, 0.3), (2.0, 0.5), (4.0, 1e-3)):
        k0 = lattice_kernel(kx, ky, 10)[0, 0]
        np.testing.assert_allclose(lattice_point_variance(kx, ky, 10), k0, rtol=1e-9)
        np.testing.assert_allclose(lattice_variance_unit_area(kx, ky, 10), k0, rtol=1e-6)
    # a doubly periodic box larger than the kernel: brute force sees the infinite lattice
    ny = nx = 24
    ones = np.ones((ny, nx))
    f = random_fields(ny=ny, nx=nx, steps=6, islands=False).replace(
        area=ones * 1e8, alpha_x=ones * 0.7e8, alpha_y=ones * 0.4e8
    )
    # the last row is closed (no fold): compare in the middle rows, far from it
    exact = estimate(f, "brute").gamma[8:16]
    np.testing.assert_allclose(estimate(f, "lattice").gamma[8:16], exact, rtol=1e-6)
    # a one-cell-wide periodic channel is a 1-D lattice
    chan = f.replace(mask=np.pad(np.ones((1, nx)), ((5, ny - 6), (0, 0))))
    np.testing.assert_allclose(
        estimate(chan, "lattice").gamma[5], estimate(chan, "brute").gamma[5], rtol=1e-6
    )


def test_an_m_far_above_those_in_use_warns_before_the_work():
    from diffnorm.methods import LARGE_STEPS, LargeStepsWarning

    big = fields_from_cell_length_scales(box_grid(6, 6), 2.0, 2.0, steps=LARGE_STEPS + 2)
    with pytest.warns(LargeStepsWarning, match="M = 1002 .* cost of lattice grows with M"):
        result = estimate(big, "lattice")
    assert np.isfinite(result.gamma[big.mask]).all()  # a warning, not a refusal
    usual = fields_from_cell_length_scales(box_grid(6, 6), 2.0, 2.0, steps=LARGE_STEPS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeStepsWarning)
        estimate(usual, "lattice")
        estimate(big, "analytic")  # a formula: its cost does not grow with M
