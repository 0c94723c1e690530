"""A network's per-cell error estimate: quantiles of its |ε| by kind of cell, on held-out data.

A network's error depends first on where a cell is (``bench_generalization --strata``): next to
the coast, in a one-cell channel or a dead end it is several times what it is in the open
ocean. The cells are classed by distance to the coast (1, 2, 3–4, 5–7, ≥ 8 cells) and open
faces (≤ 2: channels, dead ends, corners; 3; 4), and a cell's estimate is the ``q``-quantile
of |ε| over the held-out cells of its class (a class with fewer than ``MIN_CELLS`` cells takes
its distance row's quantile). On data like the held-out set it covers a fraction ``q`` of the
cells by construction; on other grids the coverage is measured (``bench_generalization``
prints it), not assumed.

Where the cell's class alone is blunt, the size of the network's own correction
``|t| = |log(γ̂²/γ²_baseline)|`` sharpens it: a network that moves far from its baseline is more
often wrong (ORCA1-like grid, Spearman ρ 0.36 between |ε| and |t|). With ``correction``
given, a cell takes the quantile of its class *and* its |t| bin (``CORRECTION_EDGES``). On
the unseen grids of ``bench_generalization`` (calibrated on the pooled val windows) that
flagged 69–75 % of the cells with |ε| > 5.5 % above 5.5 % instead of 28–39 %, at an overall
coverage of 89–98 % (91–99 % without the bins). A wrong cell is often the neighbour of one
the network moved far, so the bin is that of the largest |t| over the cell's
``CORRECTION_WINDOW²`` square of ocean cells (across the wrap and the fold): with
``windows-smooth-m10`` on the ORCA1-like, North-Atlantic and Table 8 grids it flagged 83 / 77 /
66 % of the cells above 5.5 % instead of 67 / 66 / 49 % (the cell's own |t|), 6.2 / 2.2 /
2.2 % of all cells instead of 3.8 / 1.4 / 1.9 %, at a coverage of 89.7 / 96.4 / 97.5 %
instead of 91.4 / 97.9 / 98.2 %; a 5 × 5 square flagged fewer (84 / 67 / 57 %). Files
calibrated before the window use the cell's own |t| (``correction_window`` 1).

A network for several M errs more at some M than at others; calibrated on held-out data that
spans more than one group of ``STEP_BINS``, each group's estimate is scaled so that it covers
the quantile on that group's held-out cells (``by_steps``). Pooled over M, the estimate of
``windows-general-m4-20`` had covered only 85.8 % of the ORCA1 cells at M = 4 (93.3 % at 10).

Under a north fold the ``cnn`` method solves the top ``EXACT_FOLD_ROWS`` rows exactly (its
default ``exact_fold_rows``); the 10 rows under that band are where the network's |ε| was 2–3×
the interior's and the class estimate covered only 78–91 % of the cells of polar test grids
(98–99 % further south). Those cells (the top ``FOLD_ROWS`` rows of a folded grid; the exact
ones are NaN in the held-out |ε|) stay out of the class fit and get one factor of their own
(``by_fold``, pooled over M) that makes them cover the quantile on the held-out folded grids.
No held-out cell was in the exact band itself: there the estimate is NaN (``cnn`` puts the
band's solve tolerance on the cells it solves; with a thinner band the rest stay unknown).

Dead ends (cells with one open face, :func:`dead_ends`) are fitted apart the same way
(``by_dead_end``): in the class of channels and corners they were the network's worst cells
(on ORCA1 0.3 % of the cells, mean |ε| 5.1 % against 3.1 % for two open faces, and the
maximum) and that class's estimate covered only 61–77 % of them on the unseen grids of
``bench_generalization`` against 87–97 % of the channels and corners.

The estimate also picks the τ of ``cnn --exact-above`` (:func:`served_threshold`): a better
network has lower estimates, so a fixed τ serves more of its coastal cells, and the tenth of
them the quantile leaves uncovered brings its tails back (``windows-smooth-gpu2-m10`` at τ =
0.015: maxima 0.030 and 0.024 on the North Atlantic and Table 8, against 0.0165 and 0.0134 for
the network before it). The calibration stores the largest τ at which the held-out cells with
an estimate at or below it have a Q99.99 |ε| of at most ``SERVED_Q9999`` (the smallest of
``TAU_RANGE`` when none does): the value at which
the hybrid met a third of randomization 10⁴ on the unseen grids with both networks (their
held-out windows' served Q99.99 at their measured τ: 0.044 at 0.015 and 0.043 at 0.0125; the
windows are coastal and have no later rounds, so the number is higher than a grid's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffnorm.fields import Fields
from diffnorm.metrics import STEP_BINS
from diffnorm.subgrid import EXACT_FOLD_ROWS

DISTANCE_BINS = ((1, 1), (2, 2), (3, 4), (5, 7), (8, 10**9))  # cells from the coast
METRIC = "manhattan"  # the distance the network's input has (computed once per fields)
FACE_BINS = ((0, 2), (3, 3), (4, 4))  # open faces
CORRECTION_EDGES = (0.03, 0.1, 0.3)  # |log(γ̂²/γ²_baseline)|: bins below, between, above
CORRECTION_WINDOW = 3  # the bin is that of the largest |t| over this square of ocean cells
MIN_CELLS = 30
SERVED_Q9999 = 0.045  # held-out served |ε| Q99.99 that gave the Goal on the unseen grids
TAU_RANGE = (0.005, 0.03)  # the τ served_threshold picks from
FOLD_ROWS = EXACT_FOLD_ROWS + 10  # the exact band and the 10 rows under it
DEAD_END_FACES = 1  # open faces of a dead end


def step_bin(steps: int) -> int:
    """The ``STEP_BINS`` group of M (−1 for none)."""
    return next((k for k, (lo, hi) in enumerate(STEP_BINS) if lo <= steps <= hi), -1)


def cell_classes(fields: Fields) -> tuple[np.ndarray, np.ndarray]:
    """Distance and face class of every cell (−1 on land)."""
    from diffnorm.cells import cell_geometry
    from diffnorm.metrics import distance_to_coast
    from diffnorm.ml.features import DISTANCE_CLIP

    d = distance_to_coast(fields, METRIC, DISTANCE_CLIP)  # the features' copy: bins end at 8
    faces = cell_geometry(fields)["open_faces"]
    di = np.full(fields.shape, -1)
    fi = np.full(fields.shape, -1)
    for k, (lo, hi) in enumerate(DISTANCE_BINS):
        di[(d >= lo) & (d <= hi) & fields.mask] = k
    for k, (lo, hi) in enumerate(FACE_BINS):
        fi[(faces >= lo) & (faces <= hi) & fields.mask] = k
    return di, fi


def fold_zone(fields: Fields) -> np.ndarray:
    """The ocean cells of the top ``FOLD_ROWS`` rows of a grid with a north fold (none on
    other grids)."""
    zone = np.zeros(fields.shape, dtype=bool)
    if fields.topology.folded:
        zone[-FOLD_ROWS:] = True
    return zone & fields.mask.astype(bool)


def dead_ends(fields: Fields) -> np.ndarray:
    """The ocean cells with ``DEAD_END_FACES`` open face outside the :func:`fold_zone` (whose
    own factor they take there)."""
    from diffnorm.cells import cell_geometry

    faces = cell_geometry(fields)["open_faces"]
    return (faces == DEAD_END_FACES) & fields.mask.astype(bool) & ~fold_zone(fields)


ZONES = {"fold": fold_zone, "dead_end": dead_ends}  # cells with a factor of their own


def outside_zones(fields: Fields) -> np.ndarray:
    """Cells the class table is fitted on: in none of the ``ZONES``."""
    return ~np.logical_or.reduce([zone(fields) for zone in ZONES.values()])


def correction_bins(fields: Fields, correction: np.ndarray, window: int) -> np.ndarray:
    """The |t| bin of each cell (0 … len(CORRECTION_EDGES)): of the largest |t| over the
    ocean cells of its ``window × window`` square, across the wrap and the fold."""
    from diffnorm.ml.features import square_reduce

    a = np.where(fields.mask, np.abs(correction), 0.0)  # land 0, as beyond closed edges
    return np.digitize(square_reduce(fields.topology, a, window, np.maximum), CORRECTION_EDGES)


def network_correction(fields: Fields, gamma: np.ndarray, target: str) -> np.ndarray | None:
    """``log(γ̂²/γ²_baseline)`` of a log-target network's γ̂ on the grid (0 on land; None for
    other targets): on its cells, the target it predicted."""
    from diffnorm.ml.features import LOG_TARGETS, raw_target

    if target not in LOG_TARGETS:
        return None
    return raw_target(fields, np.where(fields.mask, gamma, 1.0), target)


HeldOut = tuple[np.ndarray, Fields] | tuple[np.ndarray, Fields, np.ndarray]


def _ratios(
    samples: list[HeldOut], estimates: list[np.ndarray], zone: str | None
) -> list[tuple[int, np.ndarray]]:
    """``|ε| / estimate`` on each held-out sample's cells in ``zone`` (one of ``ZONES``; None:
    outside them all), with the sample's ``STEP_BINS`` group: what a factor is fitted on."""
    out = []
    for sample, est in zip(samples, estimates, strict=True):
        eps, fields = sample[0], sample[1]
        ok = fields.counted & np.isfinite(eps) & (est > 0)
        ok &= outside_zones(fields) if zone is None else ZONES[zone](fields)
        out.append((step_bin(fields.steps), np.abs(eps[ok]) / est[ok]))
    return out


def served_threshold(
    eps: list[np.ndarray], estimates: list[np.ndarray], target: float = SERVED_Q9999
) -> float | None:
    """The largest τ in ``TAU_RANGE`` (a value the estimates take) such that, at it and at every
    smaller one, the held-out cells with estimate ≤ τ have ``Q99.99 |ε| ≤ target``; None when
    the smallest fails. The cells above τ are the ones ``cnn --exact-above τ`` would solve."""
    a = np.concatenate([np.abs(e).ravel() for e in eps])
    s = np.concatenate([np.asarray(e, dtype=float).ravel() for e in estimates])
    ok = np.isfinite(a) & np.isfinite(s)
    a, s = a[ok], s[ok]
    order = np.argsort(s, kind="stable")
    a, s = a[order], s[order]
    best = None
    for tau in np.unique(s[(s >= TAU_RANGE[0]) & (s <= TAU_RANGE[1])]):
        served = a[: np.searchsorted(s, tau, side="right")]
        if served.size < MIN_CELLS:
            continue
        if np.quantile(served, 0.9999) > target:
            break
        best = float(tau)
    return best


@dataclass
class ErrorModel:
    """``table[distance class][face class]``: the ``quantile`` of |ε| there; with
    ``by_correction``, ``[distance][face][|t| bin]`` (a class with fewer than ``MIN_CELLS``
    cells in a bin takes its ``table`` value)."""

    quantile: float
    table: list[list[float]]
    cells: list[list[int]]
    by_correction: list[list[list[float]]] | None = None
    by_steps: list[float] | None = None  # a factor per STEP_BINS group (data with several M)
    by_fold: float | None = None  # a factor on fold_zone cells (data with folded grids)
    by_dead_end: float | None = None  # a factor on dead_ends cells
    correction_window: int = 1  # the |t| square of by_correction (1: files before it)
    exact_above: float | None = None  # served_threshold's τ (files before it: none)

    @classmethod
    def fit(
        cls, samples: list[HeldOut], quantile: float = 0.9, window: int = CORRECTION_WINDOW
    ) -> ErrorModel:
        """From ``(ε on the grid, fields)`` pairs of held-out samples, or ``(ε, fields,
        correction)`` triples (the network's ``log(γ̂²/γ²_baseline)`` on the grid): with a
        correction for every sample, the |t| bins are fitted too, each cell binned by the largest
        |t| over its ``window × window`` square."""
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        nd, nf, nc = len(DISTANCE_BINS), len(FACE_BINS), len(CORRECTION_EDGES) + 1
        with_t = bool(samples) and all(len(s) == 3 for s in samples)
        groups: dict[tuple[int, int, int], list[np.ndarray]] = {}
        for sample in samples:
            eps, fields = sample[0], sample[1]
            di, fi = cell_classes(fields)
            ci = (
                correction_bins(fields, sample[2], window)
                if with_t
                else np.zeros(fields.shape, dtype=int)
            )
            a = np.abs(eps)
            ok = fields.counted & np.isfinite(a) & outside_zones(fields)  # zones: own factors
            for i in range(nd):
                for j in range(nf):
                    sel = ok & (di == i) & (fi == j)
                    for c in range(nc):
                        groups.setdefault((i, j, c), []).append(a[sel & (ci == c)])
        cell = {k: np.concatenate(v) for k, v in groups.items()}
        everything = np.concatenate(list(cell.values()))
        if everything.size == 0:
            raise ValueError("no held-out ocean cells to calibrate the error model on")

        def q(v: np.ndarray) -> float:
            return float(np.quantile(v, quantile))

        table, cells, by_t = [], [], []
        for i in range(nd):
            row = [np.concatenate([cell[(i, j, c)] for c in range(nc)]) for j in range(nf)]
            whole = np.concatenate(row)
            fallback = whole if whole.size >= MIN_CELLS else everything
            table.append([q(v if v.size >= MIN_CELLS else fallback) for v in row])
            cells.append([int(v.size) for v in row])
            by_t.append(
                [
                    [
                        q(cell[(i, j, c)]) if cell[(i, j, c)].size >= MIN_CELLS else table[i][j]
                        for c in range(nc)
                    ]
                    for j in range(nf)
                ]
            )
        model = cls(
            float(quantile),
            table,
            cells,
            by_t if with_t else None,
            correction_window=window if with_t else 1,
        )
        # one estimate per sample, the class table's: the factors fitted below only scale it
        # (by_steps per M group, then each zone's, on cells of that zone alone)
        ests = [model.estimate(s[1], s[2] if with_t else None) for s in samples]
        if len({step_bin(s[1].steps) for s in samples}) > 1:  # each M group covers q
            ratios: dict[int, list[np.ndarray]] = {}
            for k, r in _ratios(samples, ests, None):
                ratios.setdefault(k, []).append(r)
            factors = [1.0] * len(STEP_BINS)
            for k, parts in ratios.items():
                r = np.concatenate(parts)
                if k >= 0 and r.size >= MIN_CELLS:
                    factors[k] = q(r)
            model.by_steps = factors
        scale = model.by_steps or [1.0] * len(STEP_BINS)
        for zone in ZONES:  # each zone's factor, pooled over M, after the M groups'
            r = [r / (scale[k] if k >= 0 else 1.0) for k, r in _ratios(samples, ests, zone)]
            r = np.concatenate(r)
            if r.size >= MIN_CELLS:
                setattr(model, f"by_{zone}", q(r))
        final = [model.estimate(s[1], s[2] if with_t else None) for s in samples]
        tau = served_threshold([np.where(s[1].counted, s[0], np.nan) for s in samples], final)
        # no τ in range keeps the served tail under the target: the smallest, not none (a
        # file with none would take the package's larger τ)
        model.exact_above = TAU_RANGE[0] if tau is None else tau
        return model

    def estimate(
        self, fields: Fields, correction: np.ndarray | None = None, least: bool = False
    ) -> np.ndarray:
        """The estimate of |ε| per cell (NaN on land and in the exact band under a fold); by
        class and |t| bin when the model has them and ``correction`` (the network's
        ``log(γ̂²/γ²_baseline)``) is given. ``least``: the smallest estimate any correction
        could give (the least over the |t| bins), known before the network runs."""
        di, fi = cell_classes(fields)
        d, f = np.maximum(di, 0), np.maximum(fi, 0)
        if self.by_correction is not None and least:
            values = np.asarray(self.by_correction).min(axis=-1)[d, f]
        elif self.by_correction is not None and correction is not None:
            bins = correction_bins(fields, correction, self.correction_window)
            values = np.asarray(self.by_correction)[d, f, bins]
        else:
            values = np.asarray(self.table)[d, f]
        group = step_bin(fields.steps)
        if self.by_steps is not None and group >= 0:
            values = values * self.by_steps[group]
        if self.by_fold is not None:
            values = np.where(fold_zone(fields), values * self.by_fold, values)
        if self.by_dead_end is not None:
            values = np.where(dead_ends(fields), values * self.by_dead_end, values)
        values = np.where(fields.mask, values, np.nan)
        if fields.topology.folded:
            # held out, these rows were solved exactly (cnn's band): no network error was seen
            # there; the cnn method puts its tolerance on the cells it solves, the rest stay
            # unknown
            values[-EXACT_FOLD_ROWS:] = np.nan
        return values

    def to_dict(self) -> dict:
        d = {
            "quantile": self.quantile,
            "metric": METRIC,
            "distance_bins": [list(b) for b in DISTANCE_BINS],
            "face_bins": [list(b) for b in FACE_BINS],
            "table": self.table,
            "cells": self.cells,
        }
        if self.by_correction is not None:
            d |= {
                "correction_edges": list(CORRECTION_EDGES),
                "correction_window": self.correction_window,
                "by_correction": self.by_correction,
            }
        if self.by_steps is not None:
            d |= {"step_bins": [list(b) for b in STEP_BINS], "by_steps": self.by_steps}
        if self.by_fold is not None:
            d |= {"fold_rows": FOLD_ROWS, "by_fold": self.by_fold}
        if self.by_dead_end is not None:
            d |= {"dead_end_faces": DEAD_END_FACES, "by_dead_end": self.by_dead_end}
        if self.exact_above is not None:
            d |= {"exact_above": self.exact_above, "served_q9999": SERVED_Q9999}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ErrorModel:
        if (
            [list(b) for b in DISTANCE_BINS] != d.get("distance_bins")
            or [list(b) for b in FACE_BINS] != d.get("face_bins")
            or d.get("metric") != METRIC
            or ("by_correction" in d and d.get("correction_edges") != list(CORRECTION_EDGES))
            or ("by_steps" in d and d.get("step_bins") != [list(b) for b in STEP_BINS])
            or ("by_fold" in d and d.get("fold_rows") != FOLD_ROWS)
            or ("by_dead_end" in d and d.get("dead_end_faces") != DEAD_END_FACES)
        ):
            raise ValueError("error model made with other cell classes: calibrate it again")
        return cls(
            float(d["quantile"]),
            d["table"],
            d["cells"],
            d.get("by_correction"),
            d.get("by_steps"),
            d.get("by_fold"),
            d.get("by_dead_end"),
            int(d.get("correction_window", 1)),
            d.get("exact_above"),
        )


def coverage(eps: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> float:
    """The fraction of ``mask`` cells whose |ε| is at most their estimate."""
    ok = mask & np.isfinite(eps) & np.isfinite(estimate)
    return float(np.mean(np.abs(eps[ok]) <= estimate[ok]))
