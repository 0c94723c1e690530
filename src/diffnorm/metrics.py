"""Error metrics of DESIGN §5, the same for every method.

Per sample, on ocean cells (each T-fold cell once: pass ``Fields.counted`` as the mask),
``ε_i = (γ̂_i² − γ_i²)/γ_i²``: mean |ε|, RMSE, the 99.99 %
quantile of |ε| and max |ε|; and mean |ε| by distance to the coast (1, 2, 3, … cells). Over
samples: mean ± std of each per-sample metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffnorm.fields import Fields

METRIC_NAMES: tuple[str, ...] = ("mean_abs", "rmse", "q9999", "max_abs")
# no '|' in labels: they head Markdown tables
METRIC_LABELS = {
    "mean_abs": "mean abs(ε)",
    "rmse": "RMSE(ε)",
    "q9999": "Q99.99 abs(ε)",
    "max_abs": "max abs(ε)",
}


def relative_error(gamma_hat: np.ndarray, gamma: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``ε = (γ̂² − γ²)/γ²`` on the ocean cells of ``mask`` (1-D array)."""
    g_hat = np.asarray(gamma_hat, dtype=np.float64)[mask]
    g = np.asarray(gamma, dtype=np.float64)[mask]
    if not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise ValueError("reference gamma must be finite and > 0 on every ocean cell")
    return (g_hat**2 - g**2) / g**2


def error_metrics(eps: np.ndarray) -> dict[str, float]:
    """The four summary metrics of one sample's errors (NaN errors count as failures: inf)."""
    a = np.abs(np.where(np.isfinite(eps), eps, np.inf))
    return {
        "mean_abs": float(a.mean()),
        "rmse": float(np.sqrt(np.mean(a**2))),
        "q9999": float(np.quantile(a, 0.9999)),
        "max_abs": float(a.max()),
    }


def sample_metrics(gamma_hat: np.ndarray, gamma: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return error_metrics(relative_error(gamma_hat, gamma, mask))


def aggregate(per_sample: Iterable[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation over samples of each metric."""
    rows = list(per_sample)
    return {
        name: (float(np.mean([r[name] for r in rows])), float(np.std([r[name] for r in rows])))
        for name in METRIC_NAMES
    }


def distance_to_coast(
    fields: Fields, metric: str = "euclidean", limit: float | None = None
) -> np.ndarray:
    """Signed distance in cells to the coast (≥ 1 on ocean, ≤ −1 on land), across the wrap and
    the fold, closed edges counting as coast (``limit``: clipped to ±limit): see
    :meth:`Topology.distance_to_coast`."""
    return fields.distance_to_coast(metric, limit)


def error_by_distance(
    eps_grid: np.ndarray, distance: np.ndarray, mask: np.ndarray, max_distance: int = 10
) -> dict[int, float]:
    """Mean |ε| over ocean cells at each rounded distance 1 … ``max_distance`` to the coast
    (the last bin holds everything farther)."""
    d = np.minimum(np.rint(distance[mask]).astype(int), max_distance)
    e = np.abs(eps_grid[mask])
    return {int(k): float(e[d == k].mean()) for k in range(1, max_distance + 1) if np.any(d == k)}


# cells are sorted by these (name, descriptor, bins as (label, low, high) with low <= x < high)
# groups of M (even, inclusive): the "steps M" strata and the error model's factors per M
STEP_BINS = ((4, 6), (8, 12), (14, 20), (22, 10**9))
STRATA: dict[str, tuple[str, tuple[tuple[str, float, float], ...]]] = {
    "coast distance": (
        "distance",
        (("1", 0.5, 1.5), ("2", 1.5, 2.5), ("3-7", 2.5, 7.5), (">=8", 7.5, np.inf)),
    ),
    "open faces": ("open_faces", tuple((str(k), k - 0.5, k + 0.5) for k in range(5))),
    "passage": ("passage", (("no", -0.5, 0.5), ("one cell wide", 0.5, 1.5))),
    "D (cells)": (
        "d_mean",
        (("<2", 0, 2), ("2-4", 2, 4), ("4-8", 4, 8), (">=8", 8, np.inf)),
    ),
    "anisotropy kx/ky": (
        "anisotropy",
        (("<1/3", 0, 1 / 3), ("1/3-3", 1 / 3, 3), (">3", 3, np.inf)),
    ),
    "steps M": (
        "steps",
        tuple(
            (f"{lo}-{hi}" if hi < STEP_BINS[-1][1] else f">{lo - 2}", lo, hi + 1)
            for lo, hi in STEP_BINS
        ),
    ),
}


def error_strata(eps_grid: np.ndarray, fields: Fields) -> dict[str, dict[str, dict]]:
    """Mean and max |ε| and the cell count per stratum of :data:`STRATA` (each T-fold cell
    once): where an approximate method is good and where it is not."""
    from diffnorm.cells import cell_geometry

    cells = {k: v.astype(np.float64) for k, v in cell_geometry(fields).items()}
    cells["distance"] = distance_to_coast(fields)
    cells["steps"] = np.full(fields.shape, float(fields.steps))  # one per sample
    m = fields.counted & np.isfinite(eps_grid)
    a = np.abs(eps_grid)
    out: dict[str, dict[str, dict]] = {}
    for name, (key, bins) in STRATA.items():
        rows = {}
        for label, lo, hi in bins:
            sel = m & (cells[key] >= lo) & (cells[key] < hi)
            if sel.any():
                rows[label] = {
                    "cells": int(sel.sum()),
                    "mean_abs": float(a[sel].mean()),
                    "max_abs": float(a[sel].max()),
                }
        out[name] = rows
    return out


def merge_strata(parts: list[dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    """Strata of several samples as one (cell-weighted means, overall maxima)."""
    out: dict[str, dict[str, dict]] = {}
    for part in parts:
        for name, rows in part.items():
            for label, r in rows.items():
                acc = out.setdefault(name, {}).setdefault(
                    label, {"cells": 0, "mean_abs": 0.0, "max_abs": 0.0}
                )
                total = acc["cells"] + r["cells"]
                acc["mean_abs"] = (
                    acc["mean_abs"] * acc["cells"] + r["mean_abs"] * r["cells"]
                ) / total
                acc["cells"] = total
                acc["max_abs"] = max(acc["max_abs"], r["max_abs"])
    for name, rows in out.items():  # the bins in their order, whichever sample came first
        if name in STRATA:
            order = [label for label, _, _ in STRATA[name][1]]
            out[name] = {k: rows[k] for k in sorted(rows, key=order.index)}
    return out


def strata_table(strata: dict[str, dict[str, dict]]) -> str:
    """A Markdown table: stratum, cells, mean |ε|, max |ε|."""
    lines = ["| stratum | cells | mean abs(ε) | max abs(ε) |", "|---|---|---|---|"]
    for name, rows in strata.items():
        for label, r in rows.items():
            lines.append(
                f"| {name} {label} | {r['cells']} | {r['mean_abs']:.2e} | {r['max_abs']:.2e} |"
            )
    return "\n".join(lines)
