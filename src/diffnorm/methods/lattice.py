"""The local homogeneous-*lattice* estimate: exact for constant κ on an unbounded grid.

On an infinite lattice with constant grid diffusivities ``κx = alpha_x/area``,
``κy = alpha_y/area`` the symbol of ``S`` is ``(1 + 2κx(1 − cos a) + 2κy(1 − cos b))⁻¹``, so
``v·w = (S^M)₀₀ = (2π)⁻² ∬ (1 + 2κx(1 − cos a) + 2κy(1 − cos b))^{−M} da db``. Writing
``x^{−M} = Γ(M)⁻¹ ∫ t^{M−1} e^{−tx} dt`` separates the two angles, each giving a modified
Bessel function: ``v·w = Γ(M)⁻¹ ∫₀^∞ t^{M−1} e^{−t} ive(0, 2tκx) ive(0, 2tκy) dt`` with
``ive(0, z) = e^{−z} I₀(z)``, which generalized Gauss–Laguerre quadrature evaluates to round-off.

Unlike the infinite-plane formula ``4π(M − 1)√(κ₁₁κ₂₂)`` it keeps the lattice effects (8 % at
D = 2 cells, far more below) and the dimension of the neighbourhood: a cell open along x only
is a 1-D lattice (``κy = 0``), an isolated cell has ``γ² = w``. Per cell it uses the mean κ of
its open faces in each direction (0 where there is none) and, like ``analytic``, caps γ² by
the area of its basin. Cost: a table lookup per cell (the table, one per M, is exact to about
1e-7 and built once).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import RectBivariateSpline
from scipy.linalg import eigh_tridiagonal
from scipy.special import ive

from diffnorm.fields import Fields
from diffnorm.methods.base import MethodOutput, register

NODES = 64
K_MIN, K_MAX = 1e-4, 1e4  # cells²; beyond, the table extrapolates with the asymptotic slope
OFFSET = 1e-3  # table variable u = log(κ + OFFSET) includes κ = 0 (closed direction)


def gamma_quadrature(n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss nodes ``t_j`` and weights ``w_j`` (sum 1) of ``n`` points for the Gamma(M, 1)
    density ``t^{M−1} e^{−t} / Γ(M)``: Golub–Welsch on the generalized Laguerre recurrence
    (α = M − 1; diagonal ``2k + α + 1``, off-diagonal ``√(k(k + α))``). The weights come
    normalized, with no ``Γ(M)`` to overflow (``roots_genlaguerre``'s did for M ≥ 172);
    they match it to round-off below that."""
    k = np.arange(n, dtype=np.float64)
    alpha = float(steps) - 1.0
    t, vectors = eigh_tridiagonal(2.0 * k + alpha + 1.0, np.sqrt(k[1:] * (k[1:] + alpha)))
    return t, vectors[0] ** 2


def lattice_point_variance(kx: np.ndarray, ky: np.ndarray, steps: int) -> np.ndarray:
    """``(S^M)₀₀`` on the infinite lattice with unit cell area, by quadrature (exact)."""
    t, w = gamma_quadrature(NODES, steps)
    kx = np.asarray(kx, dtype=np.float64)[..., None]
    ky = np.asarray(ky, dtype=np.float64)[..., None]
    return (w * ive(0, 2 * t * kx) * ive(0, 2 * t * ky)).sum(-1)


@functools.lru_cache(maxsize=16)
def _table(steps: int) -> RectBivariateSpline:
    u = np.linspace(np.log(OFFSET), np.log(K_MAX + OFFSET), 241)
    k = np.exp(u) - OFFSET
    values = np.log(lattice_point_variance(k[:, None], k[None, :], steps))
    return RectBivariateSpline(u, u, values, kx=3, ky=3)


def lattice_variance_unit_area(kx: np.ndarray, ky: np.ndarray, steps: int) -> np.ndarray:
    """``(S^M)₀₀`` for arrays of κx, κy ≥ 0 (cells²) from the cached table."""
    kx = np.clip(np.asarray(kx, dtype=np.float64), 0.0, K_MAX)
    ky = np.clip(np.asarray(ky, dtype=np.float64), 0.0, K_MAX)
    spline = _table(steps)
    return np.exp(spline(np.log(kx + OFFSET), np.log(ky + OFFSET), grid=False))


def cell_kappa(fields: Fields) -> tuple[np.ndarray, np.ndarray]:
    """Mean κ = alpha/area over each cell's open faces along x and y (0 where none), once per
    Fields (read-only: the images baseline and the range flags both ask)."""
    return fields.derived("cell_kappa", lambda: _cell_kappa(fields))


def _cell_kappa(fields: Fields) -> tuple[np.ndarray, np.ndarray]:
    from diffnorm.methods.analytic import cell_mean_alpha

    ax, ay = cell_mean_alpha(fields)
    with np.errstate(invalid="ignore", divide="ignore"):
        kx = np.where(np.isnan(ax), 0.0, ax) / fields.area
        ky = np.where(np.isnan(ay), 0.0, ay) / fields.area
    return np.where(fields.mask, kx, 0.0), np.where(fields.mask, ky, 0.0)


def lattice_gamma_squared(fields: Fields) -> np.ndarray:
    """``γ² = w / (S^M)₀₀(κx, κy)`` capped by the basin area, on ocean cells (NaN on land)."""
    kx, ky = cell_kappa(fields)
    from diffnorm.methods.analytic import cap_by_basin_area

    return cap_by_basin_area(fields, fields.area / lattice_variance_unit_area(kx, ky, fields.steps))


@register("lattice", "local homogeneous-lattice value (exact for constant kappa), O(n)", False)
def lattice(fields: Fields, *, progress=None) -> MethodOutput:
    g2 = lattice_gamma_squared(fields).ravel()[fields.ocean]
    return MethodOutput(1.0 / g2, tolerance=None, info={"solves": 0})
