"""Spot checks: exact γ at a few cells, and an approximate method's measured error there.

An approximation (the network, randomization) on a user's own grid has no error bar of its
own. Exact ``v_i = ‖Ŝ^{M/2} e_i‖²/w_i`` at ``K`` cells costs one factorization and
``K·M/2`` solves, whatever the grid size. Half of the cells are drawn next to the coast
(distance ≤ 2 cells), where approximations fail first, half anywhere; each draw keeps its
cells at least ``spacing`` cells apart so they sample different places. A method that gives a
per-cell error estimate (the network's is calibrated on other grids than the user's) gets it
checked too: the share of the cells whose |ε| it covers, and the factor it would need to
cover its quantile there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffnorm.fields import Fields
from diffnorm.methods.brute import brute_variance
from diffnorm.metrics import distance_to_coast
from diffnorm.operator import DiffusionOperator, make_operator

COASTAL = 2.0  # cells
SPACING = 3  # cells between two verified cells: their errors are then less alike


@dataclass
class Verification:
    """``ε = (γ̂² − γ²)/γ²`` at the checked cells (grid indices ``j, i``), and the method's
    own estimate of |ε| there with the quantile it claims (when it has one; 1 for a bound)."""

    j: np.ndarray
    i: np.ndarray
    distance: np.ndarray
    eps: np.ndarray
    estimate: np.ndarray | None = None
    quantile: float = 0.9

    def summary(self) -> dict[str, float | int]:
        a = np.abs(self.eps)
        coastal = self.distance <= COASTAL
        out: dict[str, float | int] = {
            "verify_cells": int(a.size),
            "verify_mean_abs": float(a.mean()),
            "verify_max_abs": float(a.max()),
            "verify_coastal_cells": int(coastal.sum()),
        }
        if coastal.any():
            out["verify_coastal_max_abs"] = float(a[coastal].max())
        if (~coastal).any():
            out["verify_open_max_abs"] = float(a[~coastal].max())
        if self.estimate is not None:
            est = self.estimate
            known = np.isfinite(est)
            if known.any():
                a, est = a[known], est[known]
                out["verify_estimate_cells"] = int(a.size)
                out["verify_estimate_coverage"] = float(np.mean(a <= est))
                # the factor that would make the estimate cover its quantile q at these n cells:
                # split-conformal's ⌈(n + 1)·q⌉-th smallest |ε|/estimate, finite only when
                # that rank is at most n (at q = 0.9, n ≥ 9; never for a bound, q = 1)
                rank = int(np.ceil((a.size + 1) * self.quantile))
                if rank <= a.size:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        ratio = np.where(a > 0, a / est, 0.0)
                    out["verify_estimate_scale"] = float(np.sort(ratio)[rank - 1])
        return out


def pick_cells(fields: Fields, count: int, seed: int = 0, spacing: int = SPACING) -> np.ndarray:
    """Up to ``count`` ocean-vector indices, half coastal, at least ``spacing`` cells apart
    (Chebyshev distance across the wrap and the fold, :meth:`Topology.index_distance`),
    seeded."""
    if count < 1:
        raise ValueError(f"--verify: the number of cells to verify must be >= 1, got {count}")
    nx = fields.shape[1]
    ocean = fields.ocean
    dist = distance_to_coast(fields).ravel()[ocean]
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    cols: list[int] = []
    chosen: list[int] = []
    for pool, want in (
        (np.flatnonzero(dist <= COASTAL), (count + 1) // 2),
        (np.arange(ocean.size), count),
    ):
        for k in rng.permutation(pool):
            if len(chosen) >= want:
                break
            j, i = divmod(int(ocean[k]), nx)
            if chosen and fields.topology.index_distance(j, i, rows, cols).min() < spacing:
                continue
            rows.append(j)
            cols.append(i)
            chosen.append(int(k))
    return np.array(sorted(chosen), dtype=np.int64)


def verify(
    fields: Fields,
    gamma: np.ndarray,
    count: int,
    seed: int = 0,
    operator: DiffusionOperator | None = None,
    estimate: np.ndarray | None = None,
    quantile: float = 0.9,
) -> Verification:
    """Exact γ at ``count`` cells (:func:`pick_cells`) against ``gamma`` (``(ny, nx)``), and
    the method's per-cell error ``estimate`` (``(ny, nx)``, at its ``quantile``) if given."""
    op = operator if operator is not None else make_operator(fields)
    cols = pick_cells(fields, count, seed)
    exact = brute_variance(op, cols)
    ocean = op.ocean[cols]
    j, i = np.divmod(ocean, fields.shape[1])
    approx = np.asarray(gamma, dtype=np.float64).ravel()[ocean] ** -2.0
    dist = distance_to_coast(fields)[j, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = exact / approx - 1.0  # γ̂²/γ² − 1 with γ² = 1/v
    est = None if estimate is None else np.asarray(estimate, dtype=np.float64)[j, i]
    return Verification(j, i, dist, np.where(np.isfinite(eps), eps, np.inf), est, quantile)
