"""A network's per-cell error estimate: quantiles of its |ε| by kind of cell, on held-out data.

A network's error depends first on where a cell is (``bench_generalization --strata``): next to
the coast, in a one-cell channel or a dead end it is several times what it is in the open
ocean. The cells are classed by distance to the coast (1, 2, 3–4, 5–7, ≥ 8 cells) and open
faces (≤ 2: channels, dead ends, corners; 3; 4), and a cell's estimate is the ``q``-quantile
of |ε| over the held-out cells of its class (a class with fewer than ``MIN_CELLS`` cells takes
its distance row's quantile). On data like the held-out set it covers a fraction ``q`` of the
cells by construction; on other grids the coverage is measured (``bench_generalization``
prints it), not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffnorm.fields import Fields

DISTANCE_BINS = ((1, 1), (2, 2), (3, 4), (5, 7), (8, 10**9))  # cells from the coast
METRIC = "manhattan"  # the distance the network's input has (computed once per fields)
FACE_BINS = ((0, 2), (3, 3), (4, 4))  # open faces
MIN_CELLS = 30


def cell_classes(fields: Fields) -> tuple[np.ndarray, np.ndarray]:
    """Distance and face class of every cell (−1 on land)."""
    from diffnorm.cells import cell_geometry
    from diffnorm.metrics import distance_to_coast

    d = distance_to_coast(fields, METRIC)
    faces = cell_geometry(fields)["open_faces"]
    di = np.full(fields.shape, -1)
    fi = np.full(fields.shape, -1)
    for k, (lo, hi) in enumerate(DISTANCE_BINS):
        di[(d >= lo) & (d <= hi) & fields.mask] = k
    for k, (lo, hi) in enumerate(FACE_BINS):
        fi[(faces >= lo) & (faces <= hi) & fields.mask] = k
    return di, fi


@dataclass
class ErrorModel:
    """``table[distance class][face class]``: the ``quantile`` of |ε| there."""

    quantile: float
    table: list[list[float]]
    cells: list[list[int]]

    @classmethod
    def fit(cls, samples: list[tuple[np.ndarray, Fields]], quantile: float = 0.9) -> ErrorModel:
        """From ``(ε on the grid, fields)`` pairs of held-out samples."""
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        groups: dict[tuple[int, int], list[np.ndarray]] = {}
        for eps, fields in samples:
            di, fi = cell_classes(fields)
            a = np.abs(eps)
            ok = fields.counted & np.isfinite(a)
            for i in range(len(DISTANCE_BINS)):
                for j in range(len(FACE_BINS)):
                    sel = ok & (di == i) & (fi == j)
                    groups.setdefault((i, j), []).append(a[sel])
        everything = np.concatenate([v for parts in groups.values() for v in parts])
        if everything.size == 0:
            raise ValueError("no held-out ocean cells to calibrate the error model on")
        table, cells = [], []
        for i in range(len(DISTANCE_BINS)):
            row = [np.concatenate(groups[(i, j)]) for j in range(len(FACE_BINS))]
            whole = np.concatenate(row)
            fallback = whole if whole.size >= MIN_CELLS else everything
            table.append(
                [float(np.quantile(v if v.size >= MIN_CELLS else fallback, quantile)) for v in row]
            )
            cells.append([int(v.size) for v in row])
        return cls(float(quantile), table, cells)

    def estimate(self, fields: Fields) -> np.ndarray:
        """The estimate of |ε| per cell (NaN on land)."""
        di, fi = cell_classes(fields)
        table = np.asarray(self.table)
        return np.where(fields.mask, table[np.maximum(di, 0), np.maximum(fi, 0)], np.nan)

    def to_dict(self) -> dict:
        return {
            "quantile": self.quantile,
            "metric": METRIC,
            "distance_bins": [list(b) for b in DISTANCE_BINS],
            "face_bins": [list(b) for b in FACE_BINS],
            "table": self.table,
            "cells": self.cells,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ErrorModel:
        if (
            [list(b) for b in DISTANCE_BINS] != d.get("distance_bins")
            or [list(b) for b in FACE_BINS] != d.get("face_bins")
            or d.get("metric") != METRIC
        ):
            raise ValueError("error model made with other cell classes: calibrate it again")
        return cls(float(d["quantile"]), d["table"], d["cells"])


def coverage(eps: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> float:
    """The fraction of ``mask`` cells whose |ε| is at most their estimate."""
    ok = mask & np.isfinite(eps) & np.isfinite(estimate)
    return float(np.mean(np.abs(eps[ok]) <= estimate[ok]))
