"""Selected inversion and the certified contour rule against dense linear algebra."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import diffnorm.methods.selinv as sv
from conftest import dense_variance, random_fields
from diffnorm.fields import Fields, FieldsError
from diffnorm.linalg.ldl import analyse, selected_inverse_diagonal
from diffnorm.linalg.ordering import band_ordering, metis_ordering
from diffnorm.methods import DEFAULT_METHOD, SelinvCertificateError, estimate
from diffnorm.operator import make_operator, system_matrix


def _grid_matrix(fields) -> sp.csr_matrix:
    a = sp.csr_matrix(system_matrix(fields))
    a.sort_indices()
    return a


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("shift", [0.0, 0.4, -0.7, 0.2 + 0.3j, -0.1 - 0.5j])
def test_selected_inverse_diagonal_matches_dense_inverse(periodic, shift):
    fields = random_fields(ny=12, nx=15, periodic_x=periodic, seed=4)
    a = sp.csr_matrix(_grid_matrix(fields) / fields.area.max())  # O(1) entries: shifts matter
    a.sort_indices()
    symbolic = analyse(a, metis_ordering(a))
    got = selected_inverse_diagonal(symbolic, a.data, shift)
    want = np.diag(np.linalg.inv(a.toarray() - shift * np.eye(a.shape[0])))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_orderings_are_permutations_and_metis_has_less_fill_than_row_order():
    fields = random_fields(ny=40, nx=40, islands=False, periodic_x=True)
    a = _grid_matrix(fields)
    natural = analyse(a, np.arange(a.shape[0]))
    nd = analyse(a, metis_ordering(a))
    band = analyse(a, band_ordering(a))  # the fallback without pymetis
    for perm in (nd.perm, band.perm):
        assert np.array_equal(np.sort(perm), np.arange(a.shape[0]))
    # row order has the bandwidth nx: ~n·nx entries; dissection ~n log n
    assert nd.factor_nnz < 0.6 * natural.factor_nnz
    assert nd.flops() < 0.6 * natural.flops()
    assert band.factor_nnz <= natural.factor_nnz


def test_selinv_falls_back_to_the_band_ordering_without_pymetis(monkeypatch):
    import diffnorm.linalg.ordering as ordering

    monkeypatch.setattr(ordering, "metis_ordering", lambda pattern: None)
    sv._CACHE.clear()
    fields = random_fields(steps=6)
    result = estimate(fields, "selinv")
    sv._CACHE.clear()
    assert result.info["ordering"] == "band"
    np.testing.assert_allclose(
        1.0 / result.gamma[fields.mask] ** 2, dense_variance(fields), rtol=2e-6
    )


@pytest.mark.parametrize("steps", [4, 10, 20])
def test_circle_rule_error_is_one_sided_and_bounded(steps):
    rule = sv.CircleRule.for_truncation(steps, steps, 1e-6)
    z, w = rule.points()
    x = np.geomspace(1.0, 1e3, 2000)
    terms = [wk / (x - zk) for zk, wk in zip(z, w, strict=True)]
    r = np.real(sum(terms))
    # floating-point sum of large weights: the round-off the method bounds after its run
    roundoff = 8 * np.finfo(float).eps * sum(np.abs(t) for t in terms)
    excess = r - x ** (-float(steps))
    assert np.all(excess >= -roundoff)
    assert np.all(excess <= rule.truncation * x ** (-float(steps)) + roundoff)
    ratio = r * x**steps - 1
    assert abs(ratio[0] - rule.truncation) < 1e-3 * rule.truncation  # attained at x = 1


@pytest.mark.parametrize(
    ("steps", "kappa", "anisotropy", "periodic"),
    [(4, 0.8, 1.0, True), (6, 3.0, 3.0, False), (10, 0.3, 0.5, True), (20, 2.0, 2.0, True)],
)
def test_selinv_matches_dense_within_its_certificate(steps, kappa, anisotropy, periodic):
    fields = random_fields(
        steps=steps, kappa=kappa, anisotropy=anisotropy, periodic_x=periodic, seed=steps
    )
    result = estimate(fields, "selinv", tolerance=1e-6)
    assert "fallback" not in result.info
    exact = dense_variance(fields)
    got = 1.0 / result.gamma[fields.mask] ** 2
    error = np.abs(exact / got - 1)  # ε = (γ̂² − γ²)/γ² = v/v̂ − 1
    assert result.tolerance is not None and result.tolerance <= 1e-6
    assert error.max() <= result.tolerance
    assert np.all(error <= result.error_estimate[fields.mask])


def test_selinv_is_the_default_and_reuses_the_ordering_across_samples():
    assert DEFAULT_METHOD == "selinv"
    sv._CACHE.clear()
    first = estimate(random_fields(seed=1, kappa=0.5))
    second = estimate(random_fields(seed=2, kappa=2.0))  # same mask, other values
    assert first.method == second.method == "selinv"
    assert len(sv._CACHE) == 1
    assert first.info["nodes"] == 6 and first.info["factorizations"] == 4


def test_selinv_refuses_or_falls_back_when_it_cannot_certify(monkeypatch):
    fields = random_fields(ny=10, nx=12, steps=6)
    monkeypatch.setattr(sv, "ROUNDOFF_GROWTH", 1e12)  # a round-off bound above any tolerance
    with pytest.raises(SelinvCertificateError, match="not certified"):
        estimate(fields, "selinv", fallback=False)
    result = estimate(fields, "selinv")
    assert result.info["fallback"] == "probing"
    assert "not certified" in result.info["fallback_reason"]
    np.testing.assert_allclose(
        1.0 / result.gamma[fields.mask] ** 2, dense_variance(fields), rtol=2e-6
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nodes": 4}, "nodes must be >= steps"),
        ({"tolerance": 0.0}, "tolerance"),
        ({"threads": 0}, "threads"),
    ],
)
def test_selinv_rejects_bad_options(options, message):
    fields = random_fields(steps=6)
    with pytest.raises(ValueError, match=message):
        estimate(fields, "selinv", **options)


def test_selinv_on_the_torch_backend_builds_its_own_matrix():
    fields = random_fields(steps=6)
    op = make_operator(fields, "torch")
    result = estimate(op, "selinv")
    np.testing.assert_allclose(
        1.0 / result.gamma[fields.mask] ** 2, dense_variance(fields), rtol=2e-6
    )


def test_fields_that_no_solver_can_take_are_refused_by_name():
    base = random_fields(steps=6)
    area = np.where(base.mask, 1e-300, base.area)  # alpha/area = 1e308+: a units mistake
    with pytest.raises(FieldsError, match="alpha/area is .* give alpha_x, alpha_y and area"):
        Fields(base.mask, area, base.alpha_x, base.alpha_y, base.steps, base.periodic_x)


def test_selinv_adds_nodes_when_round_off_needs_them():
    fields = random_fields(steps=10, kappa=3.0)
    result = estimate(fields, "selinv", tolerance=1e-10)  # η/2 alone would allow N = M
    assert result.info["attempts"] == 2 and result.info["nodes"] > 10
    assert "fallback" not in result.info
    error = np.abs(dense_variance(fields) * result.gamma[fields.mask] ** 2 - 1)
    assert error.max() <= result.tolerance <= 1e-10
