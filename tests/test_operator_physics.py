"""The operator against known physics: the lattice value, the continuum limit, walls,
scale invariance and the symmetry of L W⁻¹."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import random_fields
from diffnorm.fields import Fields
from diffnorm.methods import estimate
from diffnorm.methods.brute import brute_variance
from diffnorm.operator import make_operator


def lattice_variance(kappa: float, steps: int, nx: int | None = None, ny: int = 4096) -> float:
    """``diag(L W⁻¹)·w`` on a homogeneous lattice (periodic ``nx`` or infinite) by FFT."""
    nx = nx or 4096
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    symbol = 1 + kappa * (2 - 2 * np.cos(2 * np.pi * fx)) + kappa * (2 - 2 * np.cos(2 * np.pi * fy))
    return float(np.mean(symbol ** (-float(steps))))


def uniform_fields(ny, nx, kappa, steps, periodic_x=True, area=1e8) -> Fields:
    a = np.full((ny, nx), area)
    return Fields(np.ones((ny, nx)), a, kappa * a, kappa * a, steps, periodic_x)


def rows(op, j: int) -> np.ndarray:
    return np.flatnonzero(np.arange(op.n) // op.fields.shape[1] == j)


def test_interior_matches_fft_lattice_value():
    ny, nx, steps, kappa = 70, 48, 8, 1.0
    fields = uniform_fields(ny, nx, kappa, steps)
    op = make_operator(fields)
    v = brute_variance(op, rows(op, ny // 2)) * 1e8
    assert np.max(np.abs(v / lattice_variance(kappa, steps, nx=nx) - 1)) <= 1e-9


def test_lattice_value_tends_to_continuum():
    steps = 10
    ratios = []
    for d in (2.0, 5.0, 10.0):
        kappa = d**2 / (2 * steps - 4)
        continuum_g2 = 4 * math.pi * (steps - 1) * kappa
        ratios.append(1 / lattice_variance(kappa, steps) / continuum_g2)
    # discrete variance ≈ 8 % above the continuum at D = 2Δx, ≈ 1 % at 5Δx, then → 0
    assert 0.88 < ratios[0] < 0.96
    assert 0.98 < ratios[1] < 1.0
    assert abs(ratios[2] - 1) < 0.004
    assert abs(ratios[2] - 1) < abs(ratios[1] - 1) < abs(ratios[0] - 1)


def test_straight_wall_halves_gamma_squared():
    steps, d = 10, 5.0
    kappa = d**2 / (2 * steps - 4)
    fields = uniform_fields(64, 40, kappa, steps)
    op = make_operator(fields)
    g2_wall = 1 / brute_variance(op, rows(op, 0)[:3])
    g2_mid = 1 / brute_variance(op, rows(op, 32)[:3])
    assert g2_wall / g2_mid == pytest.approx(np.full(3, 0.5), abs=0.02)


def test_corner_quarters_gamma_squared():
    steps, d = 10, 5.0
    kappa = d**2 / (2 * steps - 4)
    fields = uniform_fields(64, 64, kappa, steps, periodic_x=False)
    op = make_operator(fields)
    g2 = 1 / brute_variance(op, np.array([0, 32 * 64 + 32]))
    assert g2[0] / g2[1] == pytest.approx(0.25, abs=0.02)


def test_scale_invariance(small_fields):
    c = 7.5
    scaled = small_fields.replace(
        area=small_fields.area * c,
        alpha_x=small_fields.alpha_x * c,
        alpha_y=small_fields.alpha_y * c,
    )
    g = estimate(small_fields, "brute").gamma
    gs = estimate(scaled, "brute").gamma
    m = small_fields.mask
    np.testing.assert_allclose(gs[m] ** 2, c * g[m] ** 2, rtol=1e-11)


@pytest.mark.parametrize("periodic_x", [True, False])
def test_lw_inverse_is_symmetric_and_matches_definitions(periodic_x):
    fields = random_fields(ny=12, nx=14, steps=6, periodic_x=periodic_x, seed=8)
    op = make_operator(fields)
    eye = np.eye(op.n)
    # C/Γ² = L^{1/2} W⁻¹ (L^{1/2})ᵀ must equal L W⁻¹ = S^M W⁻¹, symmetric
    lw = op.apply_sqrt(op.apply_sqrt_adjoint(eye) / op.weights[:, None])
    s = eye
    for _ in range(fields.steps):
        s = op.apply_s(s)
    np.testing.assert_allclose(lw, lw.T, rtol=1e-10, atol=1e-12 * np.abs(lw).max())
    np.testing.assert_allclose(lw, s / op.weights[None, :], rtol=1e-9, atol=1e-12 * lw.max())
    assert np.all(lw >= -1e-14 * lw.max())  # an M-matrix inverse power: no negative entries
    np.testing.assert_allclose(np.diag(lw), brute_variance(op), rtol=1e-10)
    # adjoint identities
    x, y = np.random.default_rng(0).standard_normal((2, op.n))
    assert x @ op.apply_s(y) == pytest.approx(op.apply_st(x) @ y, rel=1e-11)
    assert x @ op.apply_sqrt(y) == pytest.approx(op.apply_sqrt_adjoint(x) @ y, rel=1e-11)


def test_normalized_correlation_has_unit_diagonal(small_fields):
    op = make_operator(small_fields)
    gamma = op.from_grid(estimate(op, "brute").gamma)
    idx = np.array([0, 5, op.n - 1])
    cols = np.zeros((op.n, idx.size))
    cols[idx, np.arange(idx.size)] = 1
    c = op.apply_correlation(cols, gamma)
    np.testing.assert_allclose(c[idx, np.arange(idx.size)], 1.0, rtol=1e-10)
