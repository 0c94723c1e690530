"""Exact γ on part of a grid: solve a sub-grid padded by a halo, keep its interior.

A crop's edges are walls. A wall ``H`` cells away changes the variance at a cell by about the
kernel of ``S^M`` at the image distance ``2H`` (DESIGN §1: γ² halves *at* a wall), so a halo
whose kernel has fallen below the tolerance at ``2H`` leaves the interior's γ as on the whole
grid. :func:`halo_width` finds that ``H`` from the homogeneous-lattice kernel at the largest
grid diffusivity of the crop (tested against whole-grid solves), which makes training targets
from grids too large to solve whole (1/12° crops) at a fraction of the cost.

:func:`fold_band_variance` does the same for the rows under a north fold: the band of the top
rows, the whole width, keeps the wrap and the fold and gets a wall only at its south edge. The
``cnn`` method solves those rows so, where the network is weakest (the fold's pivots).

:func:`cells_variance` solves any set of cells: the grid with every ocean cell farther than
its halo from the set turned to land (walls), wrap and fold kept, by one ``selinv``. Each cell
gets the halo of the largest grid diffusivity within the set's widest halo of it, so the
region stays near the cells where the length scale is short; where a cell's halo reaches a
north fold, the top rows are kept whole (both sides of the fold) as in the fold band, whose
halo (:func:`band_depth`) grows until it covers the largest diffusivity within it. The same
solve determines every other cell of the region whose own halo it holds
(:func:`region_interior`). ``cnn --exact-above τ`` solves so the cells whose error estimate
exceeds τ, and keeps the interior's γ too.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from diffnorm.fields import Fields

EXACT_FOLD_ROWS = 6  # rows under a north fold the cnn method solves exactly by default
# basins of at most this many cells the cnn method solves exactly by default: a cold selinv of
# one costs ~1.5× the cnn call on a grid of it (2 019 cells: 14 ms against 9.4 ms; 4 090
# cells: 35 ms against 13 ms), where the network's mean |ε| is 3–16e-3 (methods.cnn)
EXACT_BASINS = 2048
FOLD_TOLERANCE = 1e-4  # |ε| of the fold band's γ² against the whole grid's (halo and solve)
CELLS_TOLERANCE = 1e-4  # the same for cells_variance's region
DIFFUSIVITY_BIN = 1.25  # cells_variance: halos of diffusivities rounded up to powers of this
# cells_variance: a region holding this share of the ocean, with cnn --exact-above's later
# rounds, costs more than a whole-grid solve (warm, τ = 0.015, D 1.5–4 cells unless said: 72 %
# of ORCA1's ocean 1.02 s and 1° lat-lon's 1.10 s, against 1.3–1.6 s and 0.73 s whole, and
# the 2nd and 3rd rounds then cost 0.4–1.1 s more;
# ORCA1 with D to 6 cells, 91 %: 0.84 s against 0.70 s; but 55 % of the 1/4° North Atlantic
# 0.38 s against 1.01 s, and 34 % of 1/4° lat-lon 4.9 s against 42 s)
WHOLE_GRID_SHARE = 0.6
# cnn --exact-above auto on a model file calibrated before models carried their own τ
# (diffnorm.ml.calibration.served_threshold): what put windows-smooth-gpu2-m10 within a third
# of randomization 10⁴ on the unseen grids (docs/results.md, "A third GPU call")
SUGGESTED_EXACT_ABOVE = 0.0125
# cnn --exact-above: at most this many rounds of solves (1/4° lat-lon: 3 at τ = 0.015; at τ = 0.01
# they left 163 cells above τ, and 5 more rounds moved no metric; the unseen grids of
# bench_generalization: 1–2)
EXACT_ROUNDS = 3


def halo_width(kx: float, ky: float, steps: int, tolerance: float) -> tuple[int, int]:
    """``(H_y, H_x)`` cells such that the lattice kernel of ``S^M`` at ``2H`` along each axis
    is below ``tolerance`` times its peak (κ in grid units, the largest of the crop)."""
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    return _halo_width(float(kx), float(ky), int(steps), float(tolerance))


# remembered: cell_halos asks for the same binned diffusivities in every round of cnn
# --exact-above (206 kernels, 0.27 s of a 0.65 s call on the 1/4° North Atlantic)
@functools.lru_cache(maxsize=4096)
def _halo_width(kx: float, ky: float, steps: int, tolerance: float) -> tuple[int, int]:
    from diffnorm.methods.probing import lattice_kernel_axes

    out = []
    for profile in lattice_kernel_axes(kx, ky, steps):
        profile = profile / profile[0]
        half = profile[: profile.size // 2 + 1]
        below = np.flatnonzero(half < tolerance)
        reach = int(below[0]) if below.size else half.size
        out.append(max(1, math.ceil(reach / 2)))
    return out[0], out[1]


def crop(fields: Fields, rows: slice, cols: np.ndarray) -> Fields:
    """The closed sub-grid of ``rows`` × ``cols`` (column indices may wrap, as on periodic
    grids); its edges are walls, every face across them closed."""
    take = np.ix_(np.arange(fields.shape[0])[rows], np.asarray(cols))
    alpha_x = fields.alpha_x[take].copy()
    alpha_x[:, -1] = 0.0
    alpha_y = fields.alpha_y[take].copy()
    alpha_y[-1] = 0.0
    return Fields(
        fields.mask[take].astype(np.int8),
        fields.area[take],
        alpha_x,
        alpha_y,
        fields.steps,
        False,
        attrs=dict(fields.attrs),
    )


def interior_gamma(
    fields: Fields, j0: int, j1: int, i0: int, i1: int, tolerance: float = 1e-6
) -> tuple[np.ndarray, tuple[int, int]]:
    """Exact γ on rows ``j0:j1`` and columns ``i0:i1`` of ``fields`` (columns wrap on a periodic
    grid) from a crop padded by :func:`halo_width` (clipped at closed grid edges), and the halo
    used. Grids with a north fold are not cropped across it (the rows stop at the fold)."""
    from diffnorm.methods import estimate

    ny, nx = fields.shape
    gx, gy = fields.grid_diffusivity()
    hy, hx = halo_width(float(gx.max()), float(gy.max()), fields.steps, tolerance)
    r0, r1 = max(0, j0 - hy), min(ny, j1 + hy)
    if fields.periodic_x and (i1 - i0) + 2 * hx < nx:
        cols = np.arange(i0 - hx, i1 + hx) % nx
        start = hx
    else:
        lo, hi = max(0, i0 - hx), min(nx, i1 + hx)
        cols = np.arange(lo, hi)
        start = i0 - lo
    sub = crop(fields, slice(r0, r1), cols)
    gamma = estimate(sub, "selinv", tolerance=tolerance / 10).gamma
    return gamma[j0 - r0 : j1 - r0, start : start + (i1 - i0)], (hy, hx)


def band_depth(fields: Fields, rows: int, tolerance: float) -> int:
    """The rows of halo ``H`` under the top ``rows`` rows of a grid: :func:`halo_width` at the
    largest grid diffusivity of the top ``rows + H`` rows, grown until it holds (rows under
    the band that diffuse faster reach further: from the band's own diffusivity alone, a band
    over faster rows was 1.4e-2 off at tolerance 1e-4)."""
    gx, gy = fields.grid_diffusivity()
    ny = fields.shape[0]
    depth = 0
    while True:
        top = slice(max(0, ny - rows - depth), ny)
        h, _ = halo_width(float(gx[top].max()), float(gy[top].max()), fields.steps, tolerance)
        if h <= depth:
            return depth
        depth = h


def fold_band(fields: Fields, rows: int, tolerance: float = FOLD_TOLERANCE) -> tuple[Fields, int]:
    """The top ``rows`` rows of a folded grid padded by :func:`band_depth` rows below: the
    whole width with the grid's wrap and fold, closed only along its south edge; and the
    first kept row of the band."""
    ny, _ = fields.shape
    if not fields.topology.folded:
        raise ValueError("fold_band needs a grid with a north fold (north_fold T or F)")
    if not 0 < rows <= ny:
        raise ValueError(f"rows must be in [1, {ny}], got {rows}")
    r0 = max(0, ny - rows - band_depth(fields, rows, tolerance))
    return rows_grid(fields, fields.mask, r0, ny), ny - rows - r0


def rows_grid(fields: Fields, mask: np.ndarray, r0: int, r1: int) -> Fields:
    """Rows ``r0:r1`` of the grid with ``mask`` (ocean cells of ``fields``; the rest land):
    the wrap kept, the fold kept when the rows reach the top, every other edge a wall. Only
    those rows are built and validated (a whole 1/4° grid for one 810-cell sea: 0.26 s)."""
    ny = fields.shape[0]
    alpha_y = fields.alpha_y[r0:r1]
    if r1 < ny:  # the crop's north edge is a wall
        alpha_y = alpha_y.copy()
        alpha_y[-1] = 0.0
    return Fields(
        np.asarray(mask)[r0:r1].astype(np.int8),
        fields.area[r0:r1],
        fields.alpha_x[r0:r1],
        alpha_y,
        fields.steps,
        fields.periodic_x,
        attrs=dict(fields.attrs),
        north_fold=fields.north_fold if r1 == ny else "none",
    )


def region_variance(
    fields: Fields, region: np.ndarray, cells: np.ndarray, solve_tolerance: float
) -> np.ndarray:
    """``v`` at ``cells`` (flat grid indices in ``region``) from one ``selinv`` (to
    ``solve_tolerance``) of the grid with every ocean cell outside ``region`` turned to
    land, on the rows ``region`` spans (:func:`rows_grid`; to the top, with the fold, where
    it comes within 3 rows of a fold: the fold's pairs and a T fold's copies)."""
    from diffnorm.methods import estimate

    span = np.flatnonzero(np.asarray(region).any(axis=1))
    ny = fields.shape[0]
    r0, r1 = int(span[0]), int(span[-1]) + 1
    if fields.topology.folded and r1 > ny - 3:
        r1 = ny
    sub = rows_grid(fields, np.asarray(region) & fields.mask.astype(bool), r0, r1)
    gamma = estimate(sub, "selinv", tolerance=solve_tolerance).gamma
    j, i = np.divmod(cells, fields.shape[1])
    return gamma[j - r0, i] ** -2.0


def fold_band_variance(
    fields: Fields, rows: int, tolerance: float = FOLD_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``v = 1/γ²`` on the ocean cells of the top ``rows`` rows of a folded grid, from
    :func:`fold_band` solved by ``selinv``; returns (indices into ``fields.ocean``,
    variances). A no-op (empty arrays) on grids without a fold or with ``rows = 0``."""
    from diffnorm.methods import estimate

    empty = np.zeros(0, dtype=np.int64), np.zeros(0)
    if rows < 1 or not fields.topology.folded or not fields.n_ocean:
        return empty
    rows = min(rows, fields.shape[0])
    if not fields.mask[-rows:].any():  # land under the fold: nothing to solve
        return empty
    band, first = fold_band(fields, rows, tolerance)
    gamma = estimate(band, "selinv", tolerance=tolerance / 10).gamma
    ny, nx = fields.shape
    idx = fold_band_cells(fields, rows)
    j, i = np.divmod(fields.ocean[idx], nx)
    return idx, gamma[j - (ny - rows) + first, i] ** -2.0


def fold_band_cells(fields: Fields, rows: int) -> np.ndarray:
    """Indices into ``fields.ocean`` of the top ``rows`` rows of a folded grid (none on a
    grid without a fold): the cells :func:`fold_band_variance` solves."""
    if rows < 1 or not fields.topology.folded:
        return np.zeros(0, dtype=np.int64)
    ny, nx = fields.shape
    # the unknowns are row-major: those of the top rows are the last ones
    first = np.searchsorted(fields.ocean, (ny - min(rows, ny)) * nx)
    return np.arange(first, fields.n_ocean)


def cell_halos(
    fields: Fields, cells: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's :func:`halo_width` rectangle: ``(halos, klass)``, the distinct ``(H_y, H_x)``
    and, for the cells of ``cells`` (a boolean grid) in ``np.nonzero`` order, the row of
    ``halos`` that is theirs; from the largest grid diffusivity within the widest halo around
    the cell (the kernel reaching a wall crosses it), rounded up to a power of
    ``DIFFUSIVITY_BIN``, across the wrap."""
    from scipy import ndimage

    gx, gy = fields.grid_diffusivity()
    hy, hx = halo_width(float(gx[cells].max()), float(gy[cells].max()), fields.steps, tolerance)
    modes = ("nearest", "wrap" if fields.periodic_x else "nearest")
    near = [ndimage.maximum_filter(g, size=(2 * hy + 1, 2 * hx + 1), mode=modes) for g in (gx, gy)]
    bx, by = (
        np.ceil(np.log(np.maximum(g[cells], 1e-12)) / math.log(DIFFUSIVITY_BIN)).astype(np.int64)
        for g in near
    )
    # one integer per (x, y) bin pair: a 1-D unique (the row-wise one sorted 0.5 s at 1/4°)
    span = int(by.max() - by.min()) + 1
    keys, which = np.unique((bx - bx.min()) * span + (by - by.min()), return_inverse=True)
    pairs = np.stack([keys // span + bx.min(), keys % span + by.min()], axis=1)
    widths = [
        halo_width(*(DIFFUSIVITY_BIN ** p.astype(float)), fields.steps, tolerance) for p in pairs
    ]
    halos, klass = np.unique(np.array(widths), axis=0, return_inverse=True)
    return halos, klass.ravel()[which.ravel()]


def reaches_fold_row(rows: np.ndarray, h_y: np.ndarray | int, ny: int) -> np.ndarray:
    """Whether a halo rectangle ``h_y`` rows high around a cell of row ``rows`` reaches the
    top row of a grid ``ny`` rows high (on a folded grid, the row the fold pairs up)."""
    return np.asarray(rows) + h_y >= ny - 1


def _by_halo(fields: Fields, cells: np.ndarray, tolerance: float):
    """``(H_y, H_x)`` and the cells of ``cells`` with that halo, one class at a time (memory
    of one grid)."""
    halos, klass = cell_halos(fields, cells, tolerance)
    j, i = np.nonzero(cells)
    for k, (h_y, h_x) in enumerate(halos.tolist()):
        seeds = np.zeros(fields.shape, dtype=bool)
        seeds[j[klass == k], i[klass == k]] = True
        yield h_y, h_x, seeds


def cells_region(
    fields: Fields, cells: np.ndarray, tolerance: float = CELLS_TOLERANCE
) -> np.ndarray:
    """The ocean cells within reach of ``cells`` (a boolean grid): each cell's
    :func:`cell_halos` rectangle, across the wrap; and where a rectangle reaches the row of a
    north fold, the top rows whole as :func:`fold_band` keeps them (the fold's other side, and
    a T fold's copies, are then inside too)."""
    from scipy import ndimage

    cells = np.asarray(cells, dtype=bool) & fields.mask.astype(bool)
    if not cells.any():
        return cells
    ny = fields.shape[0]
    keep = np.zeros(fields.shape, dtype=bool)
    fill = ("constant", "wrap" if fields.periodic_x else "constant")
    reach = []  # H_y of the rectangles that reach the row of a north fold
    for h_y, h_x, seeds in _by_halo(fields, cells, tolerance):
        keep |= ndimage.maximum_filter(seeds, size=(2 * h_y + 1, 2 * h_x + 1), mode=fill)
        if reaches_fold_row(np.flatnonzero(seeds.any(axis=1)), h_y, ny).any():
            reach.append(h_y)
    if fields.topology.folded and reach:
        # a rectangle that reaches the fold row sees across it: the rows its cells are in, on
        # both sides of the fold (a T fold's copies with their cells), kept whole as a fold
        # band, with that band's halo
        rows = max(reach) + 1
        keep[max(0, ny - rows - band_depth(fields, rows, tolerance)) :] = True
    return keep & fields.mask.astype(bool)


def region_interior(
    fields: Fields, region: np.ndarray, tolerance: float = CELLS_TOLERANCE
) -> np.ndarray:
    """The cells of ``region`` whose own :func:`cell_halos` rectangle holds no ocean outside
    it: a solve on the region gives them the whole grid's γ to ``tolerance``, as it does the
    cells the region was built for. Rectangles that reach the row of a north fold are left
    out (across the fold they would need the band :func:`cells_region` keeps). Each cell's
    rectangle is counted in one summed-area table of the ocean outside (four lookups a cell,
    whatever the number of halo classes)."""
    ocean = fields.mask.astype(bool)
    region = np.asarray(region, dtype=bool) & ocean
    inside = np.zeros(fields.shape, dtype=bool)
    if not region.any():
        return inside
    halos, klass = cell_halos(fields, region, tolerance)
    h_y, h_x = halos[klass, 0], halos[klass, 1]
    top_y, top_x = int(h_y.max()), int(h_x.max())
    outside = (ocean & ~region).astype(np.int32)
    # beyond closed edges there is no ocean; across the wrap there is the other side
    outside = np.pad(outside, ((top_y, top_y), (0, 0)))
    outside = np.pad(
        outside, ((0, 0), (top_x, top_x)), mode="wrap" if fields.periodic_x else "constant"
    )
    table = np.zeros((outside.shape[0] + 1, outside.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = outside.cumsum(0).cumsum(1)
    j, i = np.nonzero(region)
    r0, r1 = j - h_y + top_y, j + h_y + top_y + 1
    c0, c1 = i - h_x + top_x, i + h_x + top_x + 1
    count = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    ok = count == 0
    if fields.topology.folded:
        ok &= ~reaches_fold_row(j, h_y, fields.shape[0])
    inside[j[ok], i[ok]] = True
    return inside


def whole_variance(
    fields: Fields, tolerance: float = CELLS_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cells_variance` of every cell: one ``selinv`` of the grid to ``tolerance``;
    returns (every index into ``fields.ocean``, variances)."""
    from diffnorm.methods import estimate

    gamma = estimate(fields, "selinv", tolerance=tolerance / 10).gamma
    return np.arange(fields.n_ocean), gamma.ravel()[fields.ocean] ** -2.0


def covers(fields: Fields, region: np.ndarray, share: float = WHOLE_GRID_SHARE) -> bool:
    """Whether ``region`` holds at least ``share`` of the ocean cells: a solve on it then
    costs about what the whole grid's does."""
    return bool(region.sum() >= share * fields.mask.astype(bool).sum())


def cells_variance(
    fields: Fields,
    cells: np.ndarray,
    tolerance: float = CELLS_TOLERANCE,
    whole_share: float | None = WHOLE_GRID_SHARE,
    interior: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``v = 1/γ²`` on the ocean cells of ``cells`` (a boolean grid; a T-fold copy
    stands for its cell) to ``tolerance``, from one ``selinv`` on :func:`cells_region`;
    returns (indices into ``fields.ocean``, variances). With ``interior``, also on every other
    cell the same solve determines (:func:`region_interior`). When the region holds at least
    ``whole_share`` of the ocean cells (``None``: never), the whole grid is solved instead,
    for about the same cost, and every ocean cell is returned."""
    cells = np.asarray(cells, dtype=bool) & fields.mask.astype(bool)
    unknowns = np.zeros(fields.shape, dtype=bool)
    unknowns.ravel()[fields.topology.representative[np.flatnonzero(cells)]] = True
    cells = unknowns
    if not cells.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    region = cells_region(fields, cells, tolerance)
    if whole_share is not None and covers(fields, region, whole_share):
        return whole_variance(fields, tolerance)
    if interior:
        cells |= region_interior(fields, region, tolerance)
    flat = np.flatnonzero(cells)
    variance = region_variance(fields, region, flat, tolerance / 10)
    return np.searchsorted(fields.ocean, flat), variance
