"""γ from a trained network: one forward pass (the model code lives in :mod:`diffnorm.ml`).

Basins of at most ``exact_basins`` cells (lakes, enclosed seas, small regional domains) are
solved exactly instead: they are where a local network is weakest (its input says nothing of a
basin's total area, which bounds γ² there: on closed rectangles of 114–1 600 cells with D 1.5–6
cells its mean |ε| was 1.6e-2 to 3.7e-3, its max 0.09 to 0.04), and up to ``EXACT_BASINS``
cells their solve costs about what the network's call does (one cold ``selinv`` of 1 594
cells 11 ms, the cnn call on that grid 9 ms). A grid made only of such basins is solved
without the network. So are the top
``exact_fold_rows`` rows of a grid with a north fold (:func:`diffnorm.subgrid.fold_band_variance`:
the band under the fold, padded by a halo of rows): the network's largest errors sat at the
fold's pivots, where a cell's northern neighbour is its own eastern or western one.
With ``exact_above=τ`` every cell whose calibrated error estimate exceeds τ is solved exactly
as well (:func:`diffnorm.subgrid.cells_variance`: one sparse solve on those cells padded by
their halos, which also gives every other cell whose own halo the region holds): the
network's tails, at the coast, for the cost of a solve on that region.
The estimates are then re-read on the γ returned, and the served cells now above τ (beside
solved ones, whose exact correction their estimate reads) are solved in another round, until
none is: every cell the network still serves then has its estimate ≤ τ (after
``EXACT_ROUNDS`` rounds, ``info["exact_above_left"]`` counts those still above).
Where the cells above τ whatever the network predicts (:func:`surely_solved`, from the least
estimate of each cell's class) already need most of the grid, the grid is solved whole before
the network runs (:func:`whole_grid`; ``info["exact_above_whole_grid"]``): the network would
cost its pass for nothing.

Every solve also *measures* the network where it solved: a cell's estimate is at least the
network's error on the solved cells of its 3 × 3 square (:func:`beside_measured`), so a
served cell beside a measured miss is doubted too (under a fold, the row below the band
reads the band's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from diffnorm.fields import Fields
from diffnorm.methods.base import MethodOutput, register
from diffnorm.operator import grid_stencil, system_block
from diffnorm.subgrid import (
    CELLS_TOLERANCE,
    EXACT_BASINS,
    EXACT_FOLD_ROWS,
    EXACT_ROUNDS,
    FOLD_TOLERANCE,
    SUGGESTED_EXACT_ABOVE,
    cells_region,
    cells_variance,
    covers,
    fold_band_cells,
    fold_band_variance,
    region_variance,
    whole_variance,
)

if TYPE_CHECKING:
    import torch

DENSE_ROUNDOFF = 1e-10  # |ε| of a small basin's dense solve: round-off, with room to spare
DENSE_BASIN_CELLS = 64  # basins up to this many unknowns by dense algebra, larger by selinv
BASIN_TOLERANCE = 1e-6  # selinv's on the larger basins (the same 10 nodes as 1e-4 at M = 10)
# what the network's own evaluation solves apart (diffnorm evaluate, the error models and the
# model cards were measured so): the network is measured on every larger basin
NETWORK_EXACT_BASINS = DENSE_BASIN_CELLS


def exact_above_value(value: float | str, name: str = "exact_above") -> float | str:
    """``exact_above`` as given, a number or its text (a command line's): ``"auto"`` (any
    case) or an |ε| ≥ 0 as a float; a ValueError naming ``name`` otherwise."""
    tau = value
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            tau = float(value)
        except ValueError:
            tau = float("nan")
    if isinstance(tau, bool) or not tau >= 0:
        raise ValueError(
            f"{name} must be auto (the model's calibrated τ) or an |ε| >= 0 (e.g. "
            f"{SUGGESTED_EXACT_ABOVE:g}), got {value!r}"
        )
    return float(tau)


def small_basins(fields: Fields, max_cells: int) -> list[np.ndarray]:
    """Indices into ``fields.ocean`` of each basin of at most ``max_cells`` unknowns."""
    ocean_labels = fields.basin_labels.ravel()[fields.ocean]
    sizes = np.bincount(ocean_labels)
    small = np.flatnonzero((sizes > 0) & (sizes <= max_cells))
    if max_cells < 1 or small.size == 0:
        return []
    by_label = np.argsort(ocean_labels, kind="stable")  # each basin's cells, in order
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return [by_label[starts[b] : starts[b + 1]] for b in small]


def small_basin_variance(
    fields: Fields, max_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`basins_variance` of the basins of at most ``max_cells`` cells."""
    return basins_variance(fields, small_basins(fields, max_cells))


def basins_variance(
    fields: Fields, basins: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ``v = diag((A⁻¹W)^M W⁻¹)`` on the ocean cells of ``basins`` (indices into
    ``fields.ocean``, whole basins): dense algebra per basin up to ``DENSE_BASIN_CELLS``
    cells, one ``selinv`` (to ``BASIN_TOLERANCE``) of the larger ones together (closed
    basins: no halo); returns (ocean indices, variances, each cell's |ε| bound)."""
    dense = [idx for idx in basins if idx.size <= DENSE_BASIN_CELLS]
    larger = [idx for idx in basins if idx.size > DENSE_BASIN_CELLS]
    parts = []
    if dense:
        w = fields.weights
        stencil = grid_stencil(fields, fields.ocean[np.concatenate(dense)])
        for idx in dense:
            s = np.linalg.solve(system_block(fields, idx, stencil), np.diag(w[idx]))
            v = np.diag(np.linalg.matrix_power(s, fields.steps)) / w[idx]
            parts.append((idx, v, np.full(idx.size, DENSE_ROUNDOFF)))
    if larger:
        idx = np.concatenate(larger)
        labels = fields.basin_labels  # the basins whole: their T-fold copies too
        region = np.isin(labels, np.unique(labels.ravel()[fields.ocean[idx]])) & (labels > 0)
        v = region_variance(fields, region, fields.ocean[idx], BASIN_TOLERANCE)
        parts.append((idx, v, np.full(idx.size, BASIN_TOLERANCE)))
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    idx, v, bound = (np.concatenate(p) for p in zip(*parts, strict=True))
    return idx, v, bound


def surely_solved(
    fields: Fields,
    net,
    flags: np.ndarray,
    exact_above: float,
    basins: list[np.ndarray],
    exact_fold_rows: int,
) -> np.ndarray:
    """The cells (a boolean grid of unknowns) that ``exact_above`` solves in its first round
    whatever the network predicts: those whose least possible estimate
    (:meth:`~diffnorm.ml.modelfile.GammaNetwork.error_floor`) is above τ, or that have none
    (``flags``: the domain flags; a grid the kernel wraps around), outside the small basins
    (``basins``: :func:`small_basins`') and the fold band solved anyway."""
    from diffnorm.ml.domain import FLAGS

    floor = net.error_floor(fields).ravel()[fields.ocean]
    todo = ~(floor <= exact_above) | ((flags.ravel()[fields.ocean] & FLAGS["wrap"]) > 0)
    for apart in (*basins, fold_band_cells(fields, exact_fold_rows)):
        todo[apart] = False
    cells = np.zeros(fields.shape, dtype=bool)
    cells.ravel()[fields.ocean[todo]] = True
    return cells


def beside_measured(
    fields: Fields, measured_on: list[np.ndarray], variance: np.ndarray, network: np.ndarray
) -> np.ndarray:
    """Per ocean cell, the largest error of the network *measured* on the cells of
    ``measured_on`` (ocean indices) in its ``CORRECTION_WINDOW²`` square,
    ``|log(v_network/v_exact)|`` (≈ |ε| where small; 0 with none there), across the wrap and
    the fold. A served cell beside a solved one where the network was off by that much
    is likely off too: on a 1/4° lat-lon grid at τ = 0.015, 18 of the 27 served cells above
    1.5 % lay beside solved cells, with estimates of 0.6–1 %."""
    from diffnorm.ml.calibration import CORRECTION_WINDOW
    from diffnorm.ml.features import square_reduce

    measured = np.zeros(fields.n_ocean)
    for cells in measured_on:
        measured[cells] = np.abs(np.log(network[cells] / variance[cells]))
    grid = square_reduce(
        fields.topology, fields.to_grid(measured, 0.0), CORRECTION_WINDOW, np.maximum
    )
    return grid.ravel()[fields.ocean]


@register("cnn", "trained CNN, one forward pass (model=file, checkpoint or shipped name)", False)
def cnn(
    fields: Fields,
    *,
    model=None,
    device: str | torch.device | None = "auto",
    tile: int | None = None,
    exact_basins: int = EXACT_BASINS,
    exact_fold_rows: int = EXACT_FOLD_ROWS,
    symmetries: int = 1,
    precision: str = "float32",
    exact_above: float | str | None = None,
    progress=None,
) -> MethodOutput:
    """``model``: a model file, a Lightning checkpoint, a shipped model's name or a loaded
    :class:`~diffnorm.ml.modelfile.GammaNetwork` (``None``: the shipped model for the grid,
    :func:`~diffnorm.ml.modelfile.closest_shipped`; with ``exact_above``, among those with an
    error model); ``tile``:
    predict in tiles of that many cells (with halos) to bound memory; ``exact_basins``: basins
    of at most this many cells are computed exactly (0: the network everywhere; a grid of
    such basins alone is solved without the network);
    ``exact_fold_rows``: on a grid with a north fold, so are that many rows under it;
    ``symmetries``: average the network over that many of the grid's flips and turns (up to 8
    on a closed grid, 4 on a periodic or folded one; costs as many passes); ``precision``:
    ``float32`` or ``bfloat16`` (the network under bfloat16 autocast: faster on hardware with
    bfloat16 arithmetic, slightly larger errors; see ``GammaNetwork.predict_target``);
    ``exact_above``: also solve exactly (to ``CELLS_TOLERANCE``) every cell whose error
    estimate is above this |ε|, or has none, in rounds until no served cell's estimate, re-read
    on the γ returned, is (needs a model with an error model); ``"auto"``: the τ the model's
    calibration picked (``GammaNetwork.exact_above``); text is read by
    :func:`exact_above_value`."""
    from diffnorm.ml.calibration import network_correction
    from diffnorm.ml.domain import FLAGS
    from diffnorm.ml.features import gamma_from_target
    from diffnorm.ml.modelfile import resolve_model

    if exact_fold_rows < 0:
        raise ValueError(f"exact_fold_rows must be >= 0 (0: none), got {exact_fold_rows}")
    if exact_above is not None:
        exact_above = exact_above_value(exact_above)
    # the cells are chosen by the error estimate: without a model named, one that has it
    net = resolve_model(model, fields, calibrated=exact_above is not None)
    if exact_above is not None and net.error_model is None:
        raise ValueError(
            f"exact_above: model {net.name!r} has no error model to choose the cells by; "
            "use a shipped model, or calibrate this one: `diffnorm evaluate` on held-out "
            "data, then `diffnorm export --format model --error-model DIR/evaluation.json`"
        )
    if exact_above == "auto":
        exact_above = net.exact_above
    basins = small_basins(fields, exact_basins)
    # nothing for the network to serve: no range to warn of (an M it does not serve is
    # refused all the same, as resolve_model refuses it)
    alone = fields.n_ocean > 0 and sum(b.size for b in basins) == fields.n_ocean
    flags, report = net.check_fields(fields, warn=not alone)
    if alone:
        report = {}
    dev = net.check_options(fields, device, symmetries, precision)  # refused alike either way
    info = {
        "model": net.name,
        "device": str(dev),
        "symmetries": int(symmetries),
        "precision": precision,
        "solves": 0,
        **{f"outside_{k}": v for k, v in report.items()},
    }
    if net.error_model is not None:
        info["error_quantile"] = net.error_model["quantile"]
        info["suggested_exact_above"] = net.exact_above
        info["exact_above_calibrated"] = "exact_above" in net.error_model
    if alone:
        return basins_only(fields, info, basins, exact_above, flags)
    if exact_above is not None:
        # when the cells τ solves whatever the network says already need most of the grid,
        # its first round would solve the grid whole: do that, without the network first
        # (ORCA1-like grid at τ 0.0124: 1.07 s with the network, against selinv's 0.65 s)
        surely = surely_solved(fields, net, flags, exact_above, basins, exact_fold_rows)
        if covers(fields, cells_region(fields, surely)):
            return whole_grid(fields, info, exact_above, flags)
    target = net.predict_target(fields, device, tile, symmetries, precision)
    gamma = gamma_from_target(fields, target, net.target)
    variance = gamma.ravel()[fields.ocean] ** -2.0
    network = variance.copy()  # the network's own, before any exact value replaces it
    small, exact, bound = basins_variance(fields, basins)
    fold_idx, fold_exact = fold_band_variance(fields, exact_fold_rows)
    variance[fold_idx] = fold_exact
    variance[small] = exact
    idx = np.union1d(small, fold_idx)
    info |= {"exact_cells": int(idx.size), "exact_fold_cells": int(fold_idx.size)}
    # no held-out cell was on a grid its kernel wraps around: no estimate there
    wraps = (flags.ravel()[fields.ocean] & FLAGS["wrap"]) > 0
    solved_tolerance = [(fold_idx, FOLD_TOLERANCE), (small, bound)]  # as variance is set
    # where the network is measured: not the small basins, which are whole basins and touch
    # other water only across corners, where no diffusion passes (a one-cell lake's miss of
    # 0.5 would become its diagonal neighbours' estimate)
    measured_on = [np.setdiff1d(fold_idx, small)]

    def error_of(variance: np.ndarray) -> np.ndarray | None:
        """The estimate for the γ returned: read from its correction, solved cells included,
        as the error model was calibrated (a served cell's |t| square reads its solved
        neighbours); the solved cells then carry their solve's tolerance."""
        returned = network_correction(fields, fields.to_grid(variance**-0.5), net.target)
        error = net.error_estimate(fields, returned)
        if error is None:
            return None
        error = error.ravel()[fields.ocean]
        error[wraps] = np.nan
        beside = beside_measured(fields, measured_on, variance, network)
        error = np.maximum(error, beside)
        for cells, tolerance in solved_tolerance:
            error[cells] = tolerance
        return error

    error = error_of(variance)
    if exact_above is not None:
        assert error is not None
        rounds, count = 0, 0
        while True:
            # each round re-reads the estimates on the γ returned: a served cell beside
            # solved ones sees their exact |t| in its square, and may now be above τ
            todo = ~(error <= exact_above)  # no estimate (NaN): solved too
            todo[idx] = False
            if not todo.any() or rounds == EXACT_ROUNDS:
                break
            rounds += 1
            cells = np.zeros(fields.shape, dtype=bool)
            cells.ravel()[fields.ocean[todo]] = True
            # with every cell the solve determines; all of them if that costs as much
            solved, v = cells_variance(fields, cells, interior=True)
            keep = ~np.isin(solved, idx)  # the small basins' dense solves are closer
            solved, v = solved[keep], v[keep]
            variance[solved] = v
            solved_tolerance.append((solved, CELLS_TOLERANCE))
            measured_on.append(solved)
            error = error_of(variance)
            idx = np.union1d(idx, solved)
            count += solved.size
        info["exact_above"] = float(exact_above)
        info["exact_above_cells"] = int(count)
        info["exact_above_rounds"] = rounds
        info["exact_above_left"] = int(todo.sum())  # 0 unless the rounds ran out
        info["exact_cells"] = int(idx.size)
    on_grid = np.zeros(fields.shape, dtype=bool)
    on_grid.ravel()[fields.ocean[idx]] = True
    flags[fields.topology.same_on_copies(on_grid)] = 0  # solved exactly: on known ground
    return MethodOutput(
        variance, tolerance=None, info=info, flags=flags, error_estimate=error, exact=idx
    )


def solved_info(fields: Fields, info: dict) -> dict:
    """``info`` (cnn's) for an output whose every cell was solved, the network not run: its
    estimate is then each solve's bound, not a quantile of the network's error."""
    info = {k: v for k, v in info.items() if k != "error_quantile"}
    return info | {
        "device": "none (the network did not run)",
        "exact_cells": int(fields.n_ocean),
        "exact_fold_cells": 0,
    }


def basins_only(
    fields: Fields, info: dict, basins: list[np.ndarray], exact_above: float | None, flags
) -> MethodOutput:
    """:func:`cnn`'s output on a grid whose every basin is one of ``basins`` (those of at most
    ``exact_basins`` cells: a small regional domain, a lake): all solved by
    :func:`basins_variance`, the network not run."""
    every, variance, bound = basins_variance(fields, basins)
    order = np.argsort(every)
    info = solved_info(fields, info) | {"exact_basins_only": True}
    if exact_above is not None:
        info |= {
            "exact_above": float(exact_above),
            "exact_above_cells": 0,
            "exact_above_rounds": 0,
            "exact_above_left": 0,
        }
    flags[...] = 0  # every cell solved exactly: on known ground
    return MethodOutput(
        variance[order],
        tolerance=None,
        info=info,
        flags=flags,
        error_estimate=bound[order],
        exact=every[order],
    )


def whole_grid(fields: Fields, info: dict, exact_above: float, flags) -> MethodOutput:
    """:func:`cnn`'s output when ``exact_above`` solves the whole grid before the network
    runs (``info``: cnn's, without the network's results): one solve of the grid as
    :func:`cells_variance` makes. Every cell is that solve's, the small basins and the band
    under a fold too (so ``exact_above_cells`` counts them, ``exact_fold_cells`` is 0 and
    their estimate is the solve's tolerance, where the network's path solves them apart,
    more tightly)."""
    every, variance = whole_variance(fields)
    info = solved_info(fields, info) | {
        "exact_above": float(exact_above),
        "exact_above_cells": int(fields.n_ocean),
        "exact_above_rounds": 1,
        "exact_above_left": 0,
        "exact_above_whole_grid": True,
    }
    flags[...] = 0  # every cell solved exactly: on known ground
    error = np.full(fields.n_ocean, CELLS_TOLERANCE)
    return MethodOutput(
        variance, tolerance=None, info=info, flags=flags, error_estimate=error, exact=every
    )
