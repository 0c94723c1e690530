"""Smooth random parameter fields: length scales and anisotropy (DESIGN §3)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, special

from diffnorm.topology import Topology


def smooth_random_field(
    shape: tuple[int, int], correlation_cells: float, rng: np.random.Generator, topology: Topology
) -> np.ndarray:
    """White noise through a Gaussian filter of ``correlation_cells``, then zero mean and unit
    standard deviation; smooth across the wrap and the north fold of ``topology``, reflected
    at closed edges."""
    noise = rng.standard_normal(shape)
    mode = ("reflect", "wrap" if topology.periodic_x else "reflect")
    if not topology.folded:
        field = ndimage.gaussian_filter(noise, sigma=correlation_cells, mode=mode)
    else:
        # the rows beyond the fold are the mirrored rows below it
        rows = min(int(4 * correlation_cells) + 1, topology.fold_source()[0])
        north = topology.pad(noise, (rows, 0))[-rows:]
        tall = np.concatenate([noise, north])
        field = ndimage.gaussian_filter(tall, sigma=correlation_cells, mode=mode)[: shape[0]]
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _to_range(z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Standard-normal values mapped monotonically and log-uniformly into ``[lo, hi]``."""
    u = 0.5 * (1.0 + special.erf(z / math.sqrt(2.0)))
    return np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def random_cell_length_scales(
    shape: tuple[int, int],
    rng: np.random.Generator,
    d_min: float = 1.5,
    d_max: float = 6.0,
    anisotropy: tuple[float, float] = (1 / 3, 3.0),
    correlation_cells: float = 10.0,
    topology: Topology | None = None,
    lat: np.ndarray | None = None,
    lat_amplitude: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Length scales ``(d₁, d₂)`` in grid cells along x and y (smooth across the connections of
    ``topology``, by default an east–west periodic grid).

    A smooth field sets the geometric mean ``d`` (log-uniform in ``[d_min, d_max]`` through
    the normal CDF), an independent one the ratio ``a = κ₁₁/κ₂₂ = (d₁/d₂)²`` (log-uniform in
    ``anisotropy``): ``d₁ = d·a^{1/4}``, ``d₂ = d·a^{-1/4}``. With ``lat`` and
    ``lat_amplitude`` the mean is multiplied by ``exp(lat_amplitude·(|lat|/90 − ½))``. Both
    are finally clipped into ``[d_min, d_max]``, which limits the anisotropy at the extremes.
    """
    if not 0 < d_min <= d_max:
        raise ValueError(f"need 0 < d_min <= d_max, got {d_min}, {d_max}")
    a_lo, a_hi = anisotropy
    if not 0 < a_lo <= a_hi:
        raise ValueError(f"anisotropy range must be positive and ordered, got {anisotropy}")
    topo = topology if topology is not None else Topology.of(shape, periodic_x=True)
    d = _to_range(smooth_random_field(shape, correlation_cells, rng, topo), d_min, d_max)
    ratio = _to_range(smooth_random_field(shape, correlation_cells, rng, topo), a_lo, a_hi)
    if lat is not None and lat_amplitude:
        d = d * np.exp(lat_amplitude * (np.abs(lat) / 90.0 - 0.5))
    d1 = np.clip(d * ratio**0.25, d_min, d_max)
    d2 = np.clip(d * ratio**-0.25, d_min, d_max)
    return d1, d2


def metric_cell_length_scales(
    e1: np.ndarray,
    e2: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    d_min: float = 1.5,
    d_max: float = 6.0,
    correlation_cells: float = 10.0,
    topology: Topology | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Length scales in cells from one set in metres, ``dᵢ = L₁,₂/eᵢ``: the diffusivity that
    data-assimilation systems often give (κ constant in m², the study's Table 8, or smooth in
    m²), which makes the length scale in cells follow the grid's metric.

    ``L`` is constant (half the draws) or smooth (log-std 0.25 over ``correlation_cells``);
    its scale is log-uniform among those that keep the ocean's ``d`` inside ``[d_min, d_max]``
    (centred when none does). Half the draws are isotropic in metres, the others have one
    ratio ``L₁/L₂`` log-uniform in ``[1/√3, √3]``. Both are clipped into ``[d_min, d_max]``.
    """
    if not 0 < d_min <= d_max:
        raise ValueError(f"need 0 < d_min <= d_max, got {d_min}, {d_max}")
    topo = topology if topology is not None else Topology.of(e1.shape, periodic_x=False)
    log_l = np.zeros(e1.shape)
    if rng.random() < 0.5:
        log_l = 0.25 * smooth_random_field(e1.shape, correlation_cells, rng, topo)
    half_ratio = 0.0 if rng.random() < 0.5 else rng.uniform(-0.25, 0.25) * math.log(3.0)
    log_d1 = log_l + half_ratio - np.log(e1)
    log_d2 = log_l - half_ratio - np.log(e2)
    ocean = np.asarray(mask, dtype=bool)
    if not ocean.any():
        ocean = np.ones(e1.shape, dtype=bool)
    # the shift that keeps every ocean cell inside [d_min, d_max] when the spread allows it,
    # so that most draws are not clipped (the cell-unit draws cover the extremes)
    both = np.concatenate([log_d1[ocean], log_d2[ocean]])
    lo, hi = math.log(d_min) - both.min(), math.log(d_max) - both.max()
    shift = rng.uniform(lo, hi) if lo <= hi else 0.5 * (lo + hi)
    d1 = np.clip(np.exp(log_d1 + shift), d_min, d_max)
    d2 = np.clip(np.exp(log_d2 + shift), d_min, d_max)
    return d1, d2
