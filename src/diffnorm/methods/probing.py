"""Exact-to-tolerance γ by probing with a distance colouring of the grid.

Cells are coloured on a lattice of strides ``(s_y, s_x)``, one probe ``p_c = Σ_{j∈c} e_j`` per
colour. Two estimators share the colouring and the certificate:

- ``split`` (default, ``M/2`` solves per colour): ``u = Ŝ^{M/2} p_c = Σ_{j∈c} g_j`` with
  ``g_j = Ŝ^{M/2} e_j``, and ``v_i w_i = ‖g_i‖² ≈ Σ_{k∈R_i} u_k²`` over the cells ``R_i``
  nearest to ``i`` among the lattice points of its colour (a rectangle), restricted to the
  basin of ``i`` (see *Basins*);
- ``full`` (``M`` solves per colour): ``(Ŝ^M p_c)_i = (Ŝ^M)_ii + Σ_{j∈c, j≠i} (Ŝ^M)_ij``. All
  entries of ``Ŝ^M`` are ≥ 0 (``W + K`` is an M-matrix), so this is an upper bound of
  ``v_i w_i``.

On a homogeneous lattice both errors equal the *aliasing sum* ``Σ_{m≠0} ρ(s·m)`` of the
correlation over the lattice, which decays exponentially with the stride.

Stride choice. With grid diffusivities ``κx, κy`` (``alpha/area``) the kernel of ``Ŝ^p`` is
the inverse FFT of ``(1 + κx(2 − 2cos kx) + κy(2 − 2cos ky))^{-p}``. The strides are the
cheapest pair whose aliasing sum, for the largest ``κx``, ``κy`` on the grid, is below
``tolerance / SAFETY``.

Certificate. The same probes give, at every cell, the response at the half-stride midpoints
between the cell and its aliases (the probe of the colour shifted by half a stride). By
log-concavity of the kernel along rays, the aliasing error grows at most like the square of
the ratio ``r_i`` between that measured midpoint response and the model's (the largest within
one stride of ``i``). ``e_i = E_model · max(1, r_i)²`` bounds ``|v̂_i/v_i − 1|`` (never below
the model: a light cell can have heavy aliases; the model is floored where it underflows, see
:class:`LatticeModel`, and strides below ``MIN_STRIDE`` are never certified); converted to
γ² (:func:`gamma2_error`), it must be ≤ ``tolerance`` everywhere; otherwise the stride grows
and the probes are redone, and brute force is used when probing cannot be cheaper. A stride
fixed by the caller that fails the certificate raises :class:`ProbingCertificateError`.

Basins. Cells of different connected basins never interact: the response of a probe in a
basin is exactly zero outside it. The split estimator therefore never sums a cell's ``u_k²``
into a lattice point of another basin (it would be another basin's ``g_j``): a cell whose
nearest lattice point of the colour is an ocean cell of another basin, or land, goes to the
cell of that colour in its own basin when there is exactly one, and is otherwise left out,
like every cell at least half a stride from ``i`` along an axis (an aliasing tail, the error
the lattice model accounts for). So γ in a basin does not depend on the other basins, and a
basin with at most one cell of each colour (e.g. one that fits in a box of ``s_y × s_x``
cells, ``s_x`` the shortest distance between same-colour columns) is exact. The ``full``
estimator reads ``(Ŝ^M p_c)_i``, which only sums over the probes of ``i``'s basin.

North fold. The lattice colouring lives in index space, where two cells near the fold can be
close across it yet far apart in the array. Cells deeper than ``s_y`` rows below the fold are
at least ``s_y`` from every cell through it, so the lattice result stands there. The *band*
above them is probed again with its own colouring (:func:`fold_band_colouring`: greedy, no
two cells of a colour closer than the strides directly or across the fold) and the ``full``
estimator. Its certificate is :func:`band_model_error` (the model's aliasing when every
``s_y × s_x`` box around the cell may hold one alias) times the largest squared heaviness
measured on the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from diffnorm.methods.base import MethodOutput, Progress, register
from diffnorm.methods.brute import brute_variance
from diffnorm.operator import DiffusionOperator
from diffnorm.topology import CELL, fold_recipe

SAFETY = 2.0
MAX_ATTEMPTS = 3
# The FFT lattice kernel is exact to ~1e-16 of its peak only: below this, the model's midpoint
# response and aliasing error are noise or 0, and a ratio to them would certify anything.
MODEL_FLOOR = 1e-12
# Below this stride the half-stride midpoint is the cell itself or its neighbour: too close to
# see how the kernel bends, and random grids (tests/test_certificates.py) then beat E·r².
MIN_STRIDE = 3


class ProbingCertificateError(RuntimeError):
    """Probing could not certify its result at the requested tolerance."""


# ---------------------------------------------------------------------------------------------
# homogeneous lattice model


def _decay_rate(kappa: float) -> float:
    """Exponential decay rate (per cell) of the 1-D lattice kernel of ``(1 − κΔ)⁻¹``."""
    return math.acosh(1.0 + 1.0 / (2.0 * kappa)) if kappa > 0 else math.inf


def _lattice_symbol(kx: float, ky: float, power: int) -> tuple[np.ndarray, int, int]:
    """The symbol of ``Ŝ^power`` on the rfft frequencies of :func:`lattice_kernel`'s box,
    and the box ``(Ny, Nx)``."""
    sizes = []
    for kappa in (ky, kx):
        rate = _decay_rate(kappa)
        if math.isinf(rate):
            sizes.append(1)
            continue
        # tail ~ r^(power-1) e^(-rate r): ask for e^(-rate r) r^power < 1e-30 at half the box
        half = 80.0 / rate + 4.0 * power / rate
        sizes.append(int(2 ** math.ceil(math.log2(max(32.0, 2.0 * half)))))
    ny, nx = (min(s, 4096) for s in sizes)
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    symbol = 1.0 + ky * (2 - 2 * np.cos(2 * np.pi * fy)) + kx * (2 - 2 * np.cos(2 * np.pi * fx))
    return symbol ** (-float(power)), ny, nx


def lattice_kernel(kx: float, ky: float, power: int) -> np.ndarray:
    """Kernel of ``Ŝ^power`` (unit cell area) on the infinite homogeneous lattice.

    Indexed ``[δy mod Ny, δx mod Nx]`` on a periodic box large enough for the kernel to
    vanish (below 1e-30 of its peak) before it wraps.
    """
    symbol, ny, nx = _lattice_symbol(kx, ky, power)
    return np.fft.irfft2(symbol, s=(ny, nx))


def lattice_kernel_axes(kx: float, ky: float, power: int) -> tuple[np.ndarray, np.ndarray]:
    """``lattice_kernel(kx, ky, power)[:, 0]`` and ``[0, :]``: the kernel along each axis
    through its peak, by 1-D transforms of the symbol's sums over the other axis (an inverse
    transform is linear), without the 2-D one."""
    symbol, ny, nx = _lattice_symbol(kx, ky, power)
    # the sum over all x-frequencies from the rfft half: the interior ones appear twice
    twice = np.full(symbol.shape[1], 2.0)
    twice[0] = 1.0
    if nx % 2 == 0:
        twice[-1] = 1.0
    column = np.fft.ifft(symbol @ twice).real / nx
    row = np.fft.irfft(symbol.sum(axis=0), n=nx) / ny
    return column, row


def _axis_points(s: int | None, n: int, off: int) -> np.ndarray:
    """Offsets ``off + s m`` within half the box (one point when there is no aliasing)."""
    if s is None or s >= n:
        return np.array([off])
    m = np.arange(-(n // (2 * s)) - 1, n // (2 * s) + 2)
    d = off + m * s
    return d[np.abs(d) <= n // 2]


def _lattice_sum(
    kernel: np.ndarray, sy: int | None, sx: int | None, offset: tuple[int, int] = (0, 0)
) -> float:
    """``Σ_m K(offset + s m)`` over the lattice (``m = 0`` excluded when offset is 0);
    ``None`` stride means no aliasing along that axis."""
    ny, nx = kernel.shape
    py = _axis_points(sy, ny, offset[0])
    px = _axis_points(sx, nx, offset[1])
    total = kernel[np.ix_(py % ny, px % nx)].sum()
    if offset == (0, 0):
        total -= kernel[0, 0]
    return float(max(total, 0.0))


@dataclass(frozen=True)
class LatticeModel:
    """Aliasing error and midpoint ratios of probing on the homogeneous lattice.

    Where the colouring aliases, ``error`` is at least ``MODEL_FLOOR²`` and ``mid`` at least
    ``MODEL_FLOOR`` (0 for a shift that is no midpoint, i.e. a stride of 1), so that
    ``error · (measured / mid)²`` never drops below the measured midpoint response squared.
    """

    error: float
    mid: np.ndarray  # model response at the three half-stride shifts, relative to the peak

    @classmethod
    def floored(cls, error: float, mid: list[float], col: Colouring) -> LatticeModel:
        if col.alias_sy is None and col.alias_sx is None:
            return cls(0.0, np.zeros(len(mid)))  # one cell per colour: exact
        shifts = col.mid_shifts()
        floor = [max(m, MODEL_FLOOR) if any(sh) else 0.0 for m, sh in zip(mid, shifts, strict=True)]
        return cls(max(error, MODEL_FLOOR**2), np.array(floor))


def lattice_model(kx: float, ky: float, steps: int, col: Colouring, estimator: str) -> LatticeModel:
    shifts = col.mid_shifts()
    for alias, kappa in ((col.alias_sy, ky), (col.alias_sx, kx)):
        if alias is not None and alias < MIN_STRIDE and kappa > 0:
            return LatticeModel(math.inf, np.zeros(len(shifts)))  # never certified
    if estimator == "full":
        k = lattice_kernel(kx, ky, steps)
        k = k / k[0, 0]
        error = _lattice_sum(k, col.alias_sy, col.alias_sx)
        mid = [_lattice_sum(k, col.alias_sy, col.alias_sx, sh) if any(sh) else 0.0 for sh in shifts]
        return LatticeModel.floored(error, mid, col)
    # split: u = Σ_m g(δ + s m) folded onto one lattice cell, v̂ = Σ_cell u², v = Σ g²
    g = lattice_kernel(kx, ky, steps // 2)
    ny, nx = g.shape
    sy = col.alias_sy if col.alias_sy is not None else ny
    sx = col.alias_sx if col.alias_sx is not None else nx
    dy = np.arange(-(min(sy, ny) // 2), min(sy, ny) - min(sy, ny) // 2)
    dx = np.arange(-(min(sx, nx) // 2), min(sx, nx) - min(sx, nx) // 2)
    my = _axis_points(col.alias_sy, ny, 0)
    mx = _axis_points(col.alias_sx, nx, 0)
    yy = dy[:, None] + my[None, :]
    xx = dx[:, None] + mx[None, :]
    vy = np.abs(yy) <= ny // 2
    vx = np.abs(xx) <= nx // 2
    gathered = g[(yy % ny)[:, :, None, None], (xx % nx)[None, None, :, :]]
    gathered = gathered * (vy[:, :, None, None] & vx[None, None, :, :])
    u = gathered.sum(axis=(1, 3))
    error = float((u**2).sum() / (g**2).sum() - 1.0)
    y0, x0 = int(np.argmin(np.abs(dy))), int(np.argmin(np.abs(dx)))
    mid = []
    for sh in shifts:
        if not any(sh):
            mid.append(0.0)
            continue
        mid.append(_lattice_sum(g, col.alias_sy, col.alias_sx, sh) / u[y0, x0])
    return LatticeModel.floored(abs(error), mid, col)


@dataclass(frozen=True)
class Colouring:
    """Lattice colouring: ``colour = cy · ncx + cx`` for each ocean cell.

    ``owner_y[cy, j]`` and ``owner_x[cx, i]`` give the row and column of the lattice point of
    colour ``(cy, cx)`` nearest to grid row ``j`` / column ``i`` (the split estimator's cells);
    the lattice point of a colour in grid row ``j`` / column ``i`` is the ``j // ncy``-th /
    ``block_x[i]``-th of its colour along that axis.
    """

    colour: np.ndarray  # (n,) colour per ocean cell
    ncy: int
    ncx: int
    alias_sy: int | None  # distance between same-colour cells along y (None: no alias)
    alias_sx: int | None
    owner_y: np.ndarray
    owner_x: np.ndarray
    block_x: np.ndarray  # (nx,) index of the lattice block of each grid column

    @property
    def count(self) -> int:
        return self.ncy * self.ncx

    def shifted(self, dy: int, dx: int) -> np.ndarray:
        """Colour of each cell after shifting its lattice position by ``(dy, dx)`` colours."""
        cy, cx = np.divmod(self.colour, self.ncx)
        return ((cy + dy) % self.ncy) * self.ncx + (cx + dx) % self.ncx

    def mid_shifts(self) -> list[tuple[int, int]]:
        """Colour shifts to the half-stride midpoints between a cell and its aliases."""
        hy, hx = self.ncy // 2, self.ncx // 2
        return [(hy, 0), (0, hx), (hy, hx)]


def _nearest(positions: np.ndarray, n: int, periodic: bool) -> np.ndarray:
    """For each index 0..n-1, the nearest of ``positions`` (circular distance if periodic)."""
    d = np.abs(np.arange(n)[None, :] - positions[:, None])
    if periodic:
        d = np.minimum(d, n - d)
    return positions[np.argmin(d, axis=0)]


def make_colouring(op: DiffusionOperator, sy: int, sx: int) -> Colouring:
    """Distance colouring with strides ``(sy, sx)``, compatible with the east–west wrap.

    With ``periodic_x`` a row is cut into ``⌊nx/sx⌋`` blocks of widths ``⌊nx/b⌋`` or
    ``⌈nx/b⌉`` (all ≥ sx), and ``cx`` is the position within the block: same-colour cells
    are at least ``sx`` apart across the wrap too.
    """
    ny, nx = op.fields.shape
    j, i = np.divmod(op.ocean, nx)
    sy = max(1, min(sy, ny))
    alias_sy = sy if sy < ny else None
    cy = j % sy
    owner_y = np.stack([_nearest(np.arange(c, ny, sy), ny, False) for c in range(sy)])
    if op.fields.periodic_x:
        blocks = max(1, nx // max(1, sx))
        starts = (np.arange(blocks + 1) * nx) // blocks
        block_of = np.searchsorted(starts, i, side="right") - 1
        cx = i - starts[block_of]
        ncx = int(np.diff(starts).max())
        alias_sx = int(np.diff(starts).min()) if blocks > 1 else None
        owner_x = []
        for c in range(ncx):
            pos = starts[:-1] + c
            pos = pos[pos < starts[1:]]
            owner_x.append(_nearest(pos, nx, True) if pos.size else np.full(nx, -1))
        owner_x = np.stack(owner_x)
        block_x = np.searchsorted(starts, np.arange(nx), side="right") - 1
    else:
        sx = max(1, min(sx, nx))
        cx = i % sx
        ncx = sx
        alias_sx = sx if sx < nx else None
        owner_x = np.stack([_nearest(np.arange(c, nx, sx), nx, False) for c in range(sx)])
        block_x = np.arange(nx) // sx
    return Colouring(cy * ncx + cx, sy, ncx, alias_sy, alias_sx, owner_y, owner_x, block_x)


@dataclass(frozen=True)
class Reattribution:
    """Cells that the split estimator must not sum into their rectangle (their nearest lattice
    point of a colour): the ``(colour, cell)`` pairs whose rectangle owner is an ocean cell of
    another basin, and those whose rectangle owner is land while the cell's basin has exactly
    one cell of that colour. ``owner`` is that one cell, or -1 (the squared response is left
    out). Sorted by colour; ``cell`` and ``owner`` are ocean indices."""

    colour: np.ndarray
    cell: np.ndarray
    owner: np.ndarray


def reattribution(op: DiffusionOperator, col: Colouring) -> Reattribution:
    """The pairs of :class:`Reattribution`, from the cells near land or another basin."""
    ny, nx = op.fields.shape
    labels = op.fields.basin_labels
    basin = labels.ravel()[op.ocean]
    index = np.full(ny * nx, -1, dtype=np.int64)
    index[op.ocean] = np.arange(op.n)
    # (basin, colour) keys with their cell when the basin has exactly one of that colour
    keys, first, counts = np.unique(
        basin * col.count + col.colour, return_index=True, return_counts=True
    )
    single = np.where(counts == 1, first, -1)
    has_single = np.zeros(int(labels.max()) + 1, dtype=bool)
    has_single[keys[counts == 1] // col.count] = True
    # candidates: cells of such basins, and cells with another basin within reach of their
    # rectangle owners
    j, i = np.divmod(op.ocean, nx)
    reach_y = int(np.abs(col.owner_y - np.arange(ny)).max())
    dx = np.abs(col.owner_x - np.arange(nx))
    if op.fields.periodic_x:
        dx = np.minimum(dx, nx - dx)
    reach_x = int(dx[col.owner_x >= 0].max(initial=0))
    size = (2 * reach_y + 1, 2 * reach_x + 1)
    modes = ("nearest", "wrap" if op.fields.periodic_x else "nearest")
    ocean_labels = np.where(labels > 0, labels, labels.max() + 1)
    lo = ndimage.minimum_filter(ocean_labels, size=size, mode=modes).ravel()[op.ocean]
    hi = ndimage.maximum_filter(labels, size=size, mode=modes).ravel()[op.ocean]
    near = np.flatnonzero((lo != basin) | (hi != basin) | has_single[basin])
    colours, cells, owners = [], [], []
    for cy in range(col.ncy):
        row = col.owner_y[cy, j[near]] * nx
        column = col.owner_x[:, i[near]]  # (ncx, cells); -1 where the colour does not exist
        rect = np.where(column >= 0, index[row + np.maximum(column, 0)], -1)
        other = (rect >= 0) & (basin[np.maximum(rect, 0)] != basin[near])
        land = (rect < 0) & (column >= 0) & has_single[basin[near]]
        cx, at = np.nonzero(other | land)
        cell = near[at]
        colour = cy * col.ncx + cx
        key = basin[cell] * col.count + colour
        pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
        owner = np.where(keys[pos] == key, single[pos], -1)
        # keep: foreign ocean owners (to take out) and cells moved to their basin's only cell
        keep = other[cx, at] | (owner >= 0)
        colours.append(colour[keep])
        cells.append(cell[keep])
        owners.append(owner[keep])
    return Reattribution(np.concatenate(colours), np.concatenate(cells), np.concatenate(owners))


def choose_strides(kx: float, ky: float, steps: int, target: float, limit: int) -> tuple[int, int]:
    """Cheapest ``(sy, sx)`` (fewest colours) whose model aliasing sum is ≤ ``target``, at
    least ``MIN_STRIDE`` along an axis with diffusion (the certificate needs it)."""
    kernel = lattice_kernel(kx, ky, steps)
    kernel = kernel / kernel[0, 0]
    best: tuple[int, int] | None = None
    for sy in range(MIN_STRIDE if ky > 0 else 1, limit + 1):
        if best is not None and sy > best[0] * best[1]:
            break
        if _lattice_sum(kernel, sy, None) > target:
            continue
        sx_hi = limit if best is None else min(limit, best[0] * best[1] // sy)
        for sx in range(MIN_STRIDE if kx > 0 else 1, sx_hi + 1):
            if _lattice_sum(kernel, sy, sx) <= target:
                if best is None or sy * sx < best[0] * best[1]:
                    best = (sy, sx)
                break
    return best if best is not None else (limit, limit)


# ---------------------------------------------------------------------------------------------


def _heaviness(
    op: DiffusionOperator,
    col: Colouring,
    peak: np.ndarray,
    mid: np.ndarray,
    model: LatticeModel,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """``r_i``: measured midpoint response over the model's, at the heaviest cell within one
    stride of ``i`` (the contamination of ``i`` by an alias ``j`` is judged from either end).
    Cells ``skip`` (a fold band, whose midpoints also see aliases across the fold) measure
    nothing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(model.mid[:, None] > 0, mid / peak / model.mid[:, None], 0.0)
    ratio = ratio.max(axis=0)
    if skip is not None:
        ratio[skip] = 0.0
    r = op.to_grid(ratio, fill=0.0)
    size = (2 * col.ncy + 1, 2 * col.ncx + 1)
    modes = ("constant", "wrap" if op.fields.periodic_x else "constant")
    return ndimage.maximum_filter(r, size=size, mode=modes).ravel()[op.ocean]


def _brute_is_cheaper(op: DiffusionOperator, col: Colouring, power: int) -> bool:
    """Probing pays per-colour bookkeeping on top of its solves: ask it to save 4×."""
    return 4 * col.count * power >= op.n * (op.fields.steps // 2)


def _probe(
    op: DiffusionOperator,
    col: Colouring,
    estimator: str,
    block_size: int | None,
    progress: Progress | None,
    done0: int,
    total: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Variance estimates ``v̂·w``, the probe response at each cell's own lattice point and at
    its three half-stride midpoints (for the certificate)."""
    steps = op.fields.steps
    power = steps if estimator == "full" else steps // 2
    ny, nx = op.fields.shape
    j, i = np.divmod(op.ocean, nx)
    shifted = [col.shifted(*s) for s in col.mid_shifts()]
    members = np.argsort(col.colour, kind="stable")
    bounds = np.searchsorted(col.colour[members], np.arange(col.count + 1))
    estimate = np.zeros(op.n)
    peak = np.zeros(op.n)
    mid = np.zeros((len(shifted), op.n))
    if estimator == "split":
        # Voronoi cells of the lattice points are rectangles: sum rows by runs of owner_y,
        # then columns with a 0/1 matrix per colour column (lattice block of the owner)
        row_starts = [np.flatnonzero(np.diff(o, prepend=-1)) for o in col.owner_y]
        nbx = int(col.block_x.max()) + 1
        to_block = np.zeros((col.ncx, nx, nbx))
        for c, o in enumerate(col.owner_x):
            ok = o >= 0
            to_block[c, np.flatnonzero(ok), col.block_x[o[ok]]] = 1.0
        cell_y, cell_x = j // col.ncy, col.block_x[i]
        moved = reattribution(op, col)
    k = op.block_size(block_size)
    for start in range(0, col.count, k):
        colours = np.arange(start, min(start + k, col.count))
        probes = np.zeros((op.n, colours.size))
        in_block = (col.colour >= start) & (col.colour < start + colours.size)
        probes[in_block, col.colour[in_block] - start] = 1.0
        response = op.sym_power(probes, power)
        del probes
        peak[in_block] = response[in_block, col.colour[in_block] - start]
        for s, sc in enumerate(shifted):
            sel = (sc >= start) & (sc < start + colours.size)
            mid[s, sel] = response[sel, sc[sel] - start]
        if estimator == "split":
            # v_i w_i = ‖Ŝ^{M/2} e_i‖²: sum the squared response over the cells nearest to i
            squared = np.zeros((colours.size, ny * nx))
            squared[:, op.ocean] = response.T
            del response
            np.square(squared, out=squared)
            # cells whose rectangle owner is in another basin, or is land while their basin
            # has one cell of the colour: out of the rectangle sums, to that cell if any
            lo, hi = np.searchsorted(moved.colour, [start, start + colours.size])
            at = (moved.colour[lo:hi] - start, op.ocean[moved.cell[lo:hi]])
            owned = moved.owner[lo:hi] >= 0
            moved_sq = squared[at][owned]
            squared[at] = 0.0
            squared = squared.reshape(colours.size, ny, nx)
            cys, cxs = np.divmod(colours, col.ncx)
            for cy in np.unique(cys):
                sel = np.flatnonzero(cys == cy)  # consecutive colours
                rows = np.add.reduceat(squared[sel[0] : sel[-1] + 1], row_starts[cy], axis=1)
                sums = np.matmul(rows, to_block[cxs[sel]])  # (colours, lattice rows, blocks)
                for local, c in zip(sel, colours[sel], strict=True):
                    cells = members[bounds[c] : bounds[c + 1]]
                    estimate[cells] = sums[local - sel[0], cell_y[cells], cell_x[cells]]
            np.add.at(estimate, moved.owner[lo:hi][owned], moved_sq)
        if progress is not None:
            progress(done0 + int(colours[-1]) + 1, total)
    if estimator == "full":
        estimate = peak
    return estimate, peak, mid


@dataclass(frozen=True)
class ProbeRun:
    """One probing pass at a fixed stride, before any decision: the variance estimate, the
    certificate's per-cell error estimate and the homogeneous model's aliasing error."""

    variance: np.ndarray
    error_estimate: np.ndarray
    model_error: float
    colours: int


def fold_band_colouring(op: DiffusionOperator, sy: int, sx: int) -> tuple[np.ndarray, np.ndarray]:
    """The unknowns less than ``sy`` rows below a north fold and a colour for each, such that
    two cells of a colour are never less than ``sy`` rows *and* ``sx`` columns apart, neither
    in the array nor across the fold (greedy, row by row from the fold)."""
    topo = op.fields.topology
    ny, nx = topo.shape
    offset, shift = fold_recipe(topo.north_fold, CELL)
    gap = 1 - offset  # rows between depth-0 cells across the fold (F: 1, T: 0)
    rows = min(sy, ny)
    j, i = np.divmod(op.ocean, nx)
    depth = ny - 1 - j
    band = np.flatnonzero(depth < rows)
    band = band[np.lexsort((i[band], depth[band]))]
    colour_of = np.full((rows, nx), -1, dtype=np.int64)
    colours = np.empty(band.size, dtype=np.int64)
    reach = np.arange(-sx + 1, sx)
    for n, cell in enumerate(band):
        d, c = int(depth[cell]), int(i[cell])
        near = [colour_of[max(0, d - sy + 1) : d + sy][:, (c + reach) % nx].ravel()]
        across = sy - 1 - gap - d  # deepest row still closer than sy through the fold
        if across >= 0:
            near.append(colour_of[: across + 1][:, (shift - 1 - (c + reach)) % nx].ravel())
        used = np.unique(np.concatenate(near))
        free = np.setdiff1d(np.arange(used.size + 1), used)
        colours[n] = colour_of[d, c] = free[0]
    return band, colours


def band_model_error(kx: float, ky: float, steps: int, sy: int, sx: int) -> float:
    """Model aliasing of the ``full`` estimator for a colour whose cells are pairwise at least
    ``sy`` rows or ``sx`` columns apart: each ``sy × sx`` box centred on a lattice point holds
    at most one of them, at its point heaviest in the model but not closer than the strides."""
    k = lattice_kernel(kx, ky, steps)
    k = np.fft.fftshift(k / k[0, 0])
    ny, nx = k.shape
    dy = np.arange(ny)[:, None] - ny // 2
    dx = np.arange(nx)[None, :] - nx // 2
    far = np.maximum(np.abs(dy) / sy, np.abs(dx) / sx) >= 1
    box_y = np.floor(dy / sy + 0.5).astype(np.int64) + ny
    box_x = np.floor(dx / sx + 0.5).astype(np.int64) + nx
    box = np.broadcast_to(box_y * (3 * nx) + box_x, k.shape)
    best = np.zeros(int(box.max()) + 1)
    np.maximum.at(best, box[far], k[far])
    return float(best.sum())


def _probe_fold_band(
    op: DiffusionOperator,
    band: np.ndarray,
    colours: np.ndarray,
    sy: int,
    sx: int,
    kx: float,
    ky: float,
    heaviness: float,
    block_size: int | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The band's ``full``-estimator variance and error bound, and the colours it used."""
    count = int(colours.max()) + 1 if band.size else 0
    steps = op.fields.steps
    estimate = np.zeros(band.size)
    k = op.block_size(block_size)
    for start in range(0, count, k):
        stop = min(start + k, count)
        sel = np.flatnonzero((colours >= start) & (colours < stop))
        probes = np.zeros((op.n, stop - start))
        probes[band[sel], colours[sel] - start] = 1.0
        response = op.sym_power(probes, steps)
        estimate[sel] = response[band[sel], colours[sel] - start]
    bound = band_model_error(kx, ky, steps, sy, sx) * heaviness**2
    error = np.full(band.size, gamma2_error(np.array(bound), "full").item())
    return estimate / op.weights[band], error, count


def probe_with_stride(
    op: DiffusionOperator,
    stride: tuple[int, int],
    estimator: str = "split",
    block_size: int | None = None,
    progress: Progress | None = None,
) -> ProbeRun:
    """Probe once with strides ``(s_y, s_x)`` and compute the certificate, without judging
    it (``probing`` does; benchmarks use this to scan strides)."""
    gx, gy = op.fields.grid_diffusivity()
    col = make_colouring(op, *stride)
    return _probe_once(op, col, float(gx.max()), float(gy.max()), estimator, block_size, progress)


def _probe_once(
    op: DiffusionOperator,
    col: Colouring,
    kx: float,
    ky: float,
    estimator: str,
    block_size: int | None,
    progress: Progress | None,
) -> ProbeRun:
    """One pass with colouring ``col``, its certificate calibrated on ``(kx, ky)``."""
    model = lattice_model(kx, ky, op.fields.steps, col, estimator)
    estimate, peak, mid = _probe(op, col, estimator, block_size, progress, 0, col.count)
    # r < 1 (a cell lighter than the model) does not lower the bound: the model's error is a
    # sum over aliases, some of which may sit in the heavy part of the grid
    colours = col.count
    band = None
    if op.fields.topology.folded:
        sy = col.alias_sy if col.alias_sy is not None else op.fields.shape[0]
        sx = col.alias_sx if col.alias_sx is not None else op.fields.shape[1]
        band, colour = fold_band_colouring(op, sy, sx)
    heavy = np.maximum(1.0, _heaviness(op, col, peak, mid, model, band))
    variance = estimate / op.weights
    error = gamma2_error(model.error * heavy**2, estimator)
    if band is not None:
        r_max = float(np.delete(heavy, band).max(initial=1.0))
        v, e, extra = _probe_fold_band(op, band, colour, sy, sx, kx, ky, r_max, block_size)
        variance[band], error[band] = v, e
        colours += extra
    return ProbeRun(variance, error, model.error, colours)


def gamma2_error(relative: np.ndarray, estimator: str) -> np.ndarray:
    """Bound on ``|γ̂²/γ² − 1| = |v/v̂ − 1|`` from a bound ``e`` on ``|v̂/v − 1|``: ``e`` for
    ``full`` (``v̂ ≥ v``, so the error is ``e/(1 + e)`` at most), ``e/(1 − e)`` for ``split``,
    which may underestimate ``v`` (no bound once ``e ≥ 1``)."""
    if estimator == "full":
        return relative
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(relative < 1.0, relative / (1.0 - relative), np.inf)


@register(
    "probing",
    "exact to a certified tolerance: one probe per colour (colours x M/2 solves; "
    "a fold band's colours x M)",
)
def probing(
    op: DiffusionOperator,
    *,
    tolerance: float = 1e-6,
    stride: int | tuple[int, int] | None = None,
    estimator: str = "split",
    block_size: int | None = None,
    progress: Progress | None = None,
) -> MethodOutput:
    """Certified probing; ``stride`` (``s`` or ``(s_y, s_x)``) overrides the automatic choice.

    ``estimator="split"`` applies ``Ŝ^{M/2}`` to each probe and sums the squared response over
    the cells nearest to each probed cell in its basin (M/2 solves per colour); ``"full"``
    applies ``Ŝ^M``
    and reads the response at the cell (M solves per colour, an upper bound of ``v``).
    """
    if not (0 < tolerance < 1):
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    if estimator not in ("split", "full"):
        raise ValueError(f"estimator must be 'split' or 'full', got {estimator!r}")
    fields = op.fields
    steps = fields.steps
    power = steps if estimator == "full" else steps // 2
    gx, gy = fields.grid_diffusivity()
    # the largest diffusivities set the stride and calibrate the certificate
    kx, ky = float(gx.max()), float(gy.max())
    ny, nx = fields.shape
    limit = max(ny, nx)
    fixed = stride is not None
    if fixed:
        sy, sx = (stride, stride) if isinstance(stride, int) else tuple(stride)
        if sy < 1 or sx < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
    else:
        sy, sx = choose_strides(kx, ky, steps, tolerance / SAFETY, limit)

    info: dict = {"kappa_grid_max": (ky, kx), "estimator": estimator, "attempts": 0, "solves": 0}
    for attempt in range(1, MAX_ATTEMPTS + 1):
        col = make_colouring(op, sy, sx)
        info.update(attempts=attempt, stride=(sy, sx), colours=col.count)
        if not fixed and _brute_is_cheaper(op, col, power):
            break
        run = _probe_once(op, col, kx, ky, estimator, block_size, progress)
        info["solves"] += col.count * power + (run.colours - col.count) * steps
        if run.colours > col.count:
            info["fold_band_colours"] = run.colours - col.count
        worst = float(run.error_estimate.max())
        info.update(model_error=run.model_error, certificate_max=worst)
        if worst <= tolerance:
            return MethodOutput(run.variance, tolerance, run.error_estimate, info)
        if fixed:
            raise ProbingCertificateError(
                f"probing with stride {(sy, sx)} is not certified: estimated relative error on "
                f"gamma^2 up to {worst:.2e} > tolerance {tolerance:.1e}; use a larger stride "
                "or leave it unset so that it is chosen from the length scales"
            )
        # assume the measured heaviness stays: ask the model for proportionally less error
        # split without a bound (inf) had e ≥ 1 on v̂/v − 1: at least that excess
        target = 0.0  # a stride the model cannot certify at all: no stride, brute force
        if math.isfinite(run.model_error):
            excess = (worst if math.isfinite(worst) else 1.0) / run.model_error
            target = tolerance / SAFETY / excess
        new = choose_strides(kx, ky, steps, target, limit)
        sy, sx = max(new[0], sy + 1), max(new[1], sx + 1)
    variance = brute_variance(op, None, block_size, progress)
    info.update(fallback="brute", solves=info["solves"] + op.n * (steps // 2))
    return MethodOutput(variance, tolerance=tolerance, info=info)
