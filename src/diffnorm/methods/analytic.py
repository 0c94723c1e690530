"""The local infinite-plane estimate ``γ² = 4π(M − 1)√(κ₁₁κ₂₂)``.

With ``alpha_x = κ₁₁·e2u/e1u`` and ``alpha_y = κ₂₂·e1v/e2v``, ``κ₁₁κ₂₂ = alpha_x·alpha_y``, so
the formula needs the cell-centred scaled diffusivities only (mean of the cell's open faces in
each direction). A cell open in one direction only uses that direction's value for both; an
isolated cell has ``L W⁻¹ = 1/w`` exactly, so ``γ² = area`` there. No boundary or lattice
effects: about 20 % off on average, a factor of 2 at coasts.

In a closed basin the rows of ``L`` sum to one (``K·1 = 0``), so the correlation cannot spread
over more than the basin and ``γ²`` is about the basin's area at most: the estimate is capped
there, which fixes the worst cases (lakes, dead-end cells) at no cost.
"""

from __future__ import annotations

import math

import numpy as np

from diffnorm.fields import Fields
from diffnorm.methods.base import MethodOutput, register


def cell_mean_alpha(fields: Fields) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``alpha`` over each cell's open faces along x and along y (NaN where none)."""
    slots = fields.slot_alpha()
    totals = fields.topology.cell_sums(slots)
    counts = fields.topology.cell_sums((slots > 0).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return tuple(np.where(c > 0, t / c, np.nan) for t, c in zip(totals, counts, strict=True))


def analytic_gamma_squared(fields: Fields) -> np.ndarray:
    """``4π(M − 1)√(ᾱx ᾱy)`` on ocean cells (NaN on land)."""
    ax, ay = cell_mean_alpha(fields)
    ax_f = np.where(np.isnan(ax), ay, ax)
    ay_f = np.where(np.isnan(ay), ax, ay)
    g2 = 4.0 * math.pi * (fields.steps - 1) * np.sqrt(ax_f * ay_f)
    g2 = np.where(np.isnan(g2), fields.area, g2)
    return cap_by_basin_area(fields, g2)


def cap_by_basin_area(fields: Fields, g2: np.ndarray) -> np.ndarray:
    """``min(γ², area of the cell's basin)`` (the bound ``γ² ≤ A``), NaN on land."""
    labels = fields.basin_labels
    weights = np.where(fields.mask, fields.area * fields.topology.cell_factor, 0.0)
    basin_area = np.bincount(labels.ravel(), weights=weights.ravel())
    return np.where(fields.mask, np.minimum(g2, basin_area[labels]), np.nan)


@register(
    "analytic",
    "local infinite-plane formula 4 pi (M-1) sqrt(k11 k22), O(n)",
    needs_operator=False,
    steps_free=True,
)
def analytic(fields: Fields, *, progress=None) -> MethodOutput:
    g2 = analytic_gamma_squared(fields).ravel()[fields.ocean]
    return MethodOutput(1.0 / g2, tolerance=None, info={"solves": 0})
