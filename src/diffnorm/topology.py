"""The connectivity of a grid (DESIGN §1): which cells touch across which faces.

One object answers every question about wrap, closure and north folds, so that the operator,
the methods, the features, the halo, the augmentations and the metrics never re-derive them.

A grid of ``ny × nx`` cells is closed, east–west periodic (``periodic_x``), or periodic with a
**north fold** (``north_fold`` = ``T`` or ``F``, NEMO's inner domain, ``nx`` even):

- ``F`` pivot (ORCA1, ORCA05): the north face of ``(ny−1, i)`` joins it to
  ``(ny−1, nx−1−i)``; ``alpha_y[ny−1, i]`` and ``alpha_y[ny−1, nx−1−i]`` list that one face.
- ``T`` pivot (ORCA2, ORCA025, ORCA12): ``(ny−1, i)`` and ``(ny−1, (nx−i) mod nx)`` are one
  cell; the fold row's cells north of the fold are the mirrors of row ``ny−2``, so a fold-row
  cell's northern neighbour is ``(ny−2, (nx−i) mod nx)`` across face
  ``alpha_y[ny−2, (nx−i) mod nx]``; ``alpha_x[ny−1, i]`` and ``alpha_x[ny−1, nx−1−i]`` list one
  face. The pivots ``(ny−1, 0)`` and ``(ny−1, nx/2)`` are their own mirrors: half of each lies
  beyond the fold, so they weigh half their area and half of each of their faces.

Every cell has four *slots* (east, west, north, south), each a neighbour and the face value
that joins them. A folded grid is then the symmetric part of its unfolded double cover: the
stencil ``(W + K)φ = wφ + Σ_slots c (φ − φ_nbr)`` with ``w = f·area``, ``c = f·alpha`` and
``f = ½`` on pivots is symmetric and equals ``W + K`` of the folded graph; its unknowns are the
ocean cells that are not a T-fold copy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

NORTH_FOLDS = ("none", "T", "F")
EAST, WEST, NORTH, SOUTH = range(4)
CELL, FACE_X, FACE_Y = "cell", "face_x", "face_y"


class TopologyError(ValueError):
    """An impossible topology; the message names the attribute and the fix."""


def parse_north_fold(value: object) -> str:
    """``none``/``T``/``F`` from a file attribute or an option (case-insensitive; 0/'' = none)."""
    if value is None:
        return "none"
    text = str(value.decode() if isinstance(value, bytes) else value).strip()
    if text.lower() in ("", "none", "0", "false", "no"):
        return "none"
    if text.upper() in ("T", "F"):
        return text.upper()
    raise TopologyError(
        f"north_fold must be one of none, T (pivot on a T point: ORCA2, ORCA025, ORCA12) or "
        f"F (pivot on an F point: ORCA1, ORCA05), got {value!r}"
    )


def fold_recipe(north_fold: str, kind: str = CELL) -> tuple[int, int]:
    """``(offset, shift)`` of :meth:`Topology.fold_source` with ``base = ny − offset``, for
    code that knows ``ny`` only at run time (the exported network's halo)."""
    if kind not in (CELL, FACE_X, FACE_Y):
        raise ValueError(f"kind must be {CELL}, {FACE_X} or {FACE_Y}, got {kind!r}")
    if north_fold == "F":
        return {CELL: (0, 0), FACE_X: (0, -1), FACE_Y: (1, 0)}[kind]
    if north_fold == "T":
        return {CELL: (1, 1), FACE_X: (1, 0), FACE_Y: (2, 1)}[kind]
    raise TopologyError(f"fold_recipe needs a north fold (T or F), got {north_fold!r}")


@dataclass(frozen=True)
class Topology:
    """Connectivity of an ``(ny, nx)`` grid; see the module docstring."""

    ny: int
    nx: int
    periodic_x: bool = False
    north_fold: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "periodic_x", bool(self.periodic_x))
        object.__setattr__(self, "north_fold", parse_north_fold(self.north_fold))
        if self.folded:
            if not self.periodic_x:
                raise TopologyError(
                    f"north_fold={self.north_fold} needs an east-west periodic grid: set "
                    "periodic_x=1 (every ORCA grid is cyclic) or north_fold=none"
                )
            if self.nx % 2 or self.nx < 2:
                raise TopologyError(
                    f"north_fold={self.north_fold} needs an even number of columns, got "
                    f"nx={self.nx}: give NEMO's inner domain (no cyclic halo columns)"
                )
            if self.north_fold == "T" and self.ny < 2:
                raise TopologyError(
                    "north_fold=T needs at least 2 rows (the fold row mirrors ny-2)"
                )

    @classmethod
    def of(cls, shape: tuple[int, int], periodic_x: bool = False, north_fold: str = "none"):
        return cls(int(shape[0]), int(shape[1]), periodic_x, north_fold)

    def __reduce__(self):
        """Pickled as its four parameters, unpickled as :meth:`shared`: samples read in worker
        processes share one instance again, and its tables (160 kB on 64×64) do not travel."""
        return Topology.shared, (self.ny, self.nx, self.periodic_x, self.north_fold)

    @classmethod
    def shared(cls, ny: int, nx: int, periodic_x: bool = False, north_fold: str = "none"):
        """One instance per distinct topology of at most :data:`SHARED_CELLS` cells (its
        cached index arrays are read-only), so that thousands of same-sized samples in memory
        share them instead of each holding ~100 bytes a cell of neighbour tables; larger grids
        get their own (a kept copy would pin hundreds of MB)."""
        fold = parse_north_fold(north_fold)
        if int(ny) * int(nx) > SHARED_CELLS:
            return cls(int(ny), int(nx), bool(periodic_x), fold)
        return _shared_topology(int(ny), int(nx), bool(periodic_x), fold)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)

    @property
    def folded(self) -> bool:
        return self.north_fold != "none"

    def describe(self) -> str:
        wrap = "periodic in x" if self.periodic_x else "closed in x"
        fold = f", {self.north_fold}-pivot north fold" if self.folded else ""
        return f"{self.ny}x{self.nx}, {wrap}{fold}"

    # -- cells ---------------------------------------------------------------------------------
    @functools.cached_property
    def representative(self) -> np.ndarray:
        """Flat index of the cell each cell is (itself, or its T-fold original)."""
        rep = np.arange(self.ny * self.nx).reshape(self.shape)
        if self.north_fold == "T":
            half = self.nx // 2
            cols = np.arange(half + 1, self.nx)
            rep[-1, cols] = (self.ny - 1) * self.nx + (self.nx - cols)
        return _frozen(rep.ravel())

    @functools.cached_property
    def duplicate(self) -> np.ndarray:
        """Cells that are copies of another cell (T fold: the east half of the fold row)."""
        return _frozen((self.representative != np.arange(self.ny * self.nx)).reshape(self.shape))

    @functools.cached_property
    def cell_factor(self) -> np.ndarray:
        """Share of each listed cell in the folded graph: 1, ½ on T pivots, 0 on copies."""
        f = np.where(self.duplicate, 0.0, 1.0)
        if self.north_fold == "T":
            f[-1, 0] = f[-1, self.nx // 2] = 0.5
        return _frozen(f)

    def counted(self, mask: np.ndarray) -> np.ndarray:
        """Ocean cells that statistics count (each T-fold cell once)."""
        return np.asarray(mask, dtype=bool) & ~self.duplicate

    def ocean(self, mask: np.ndarray) -> np.ndarray:
        """Flat indices of the unknowns: ocean cells that are not copies, row-major."""
        return np.flatnonzero(self.counted(mask).ravel())

    def unknown_index(self, mask: np.ndarray) -> np.ndarray:
        """For each listed cell, the index of its unknown (copies share it), -1 on land."""
        index = np.full(self.ny * self.nx, -1, dtype=np.int64)
        ocean = self.ocean(mask)
        index[ocean] = np.arange(ocean.size)
        return index[self.representative]

    def same_on_copies(self, values: np.ndarray) -> np.ndarray:
        """``(ny, nx)`` values with each T-fold copy given its cell's value: for grid-shaped
        results computed cell by cell, where a copy, seen from its own side of the fold, came
        out apart (the network; the images value's straight runs)."""
        if self.north_fold != "T":
            return values
        return np.asarray(values).ravel()[self.representative].reshape(self.shape)

    def to_grid(self, values: np.ndarray, mask: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Unknown-ordered values on the ``(ny, nx)`` grid (copies get their cell's value)."""
        index = self.unknown_index(mask)
        out = np.full(index.size, fill, dtype=np.float64)
        ok = index >= 0
        out[ok] = np.asarray(values, dtype=np.float64)[index[ok]]
        return out.reshape(self.shape)

    # -- slots ---------------------------------------------------------------------------------
    @functools.cached_property
    def _slots(self) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.shape
        y0 = ny * nx
        # int32 halves the memory of these 8 arrays of the grid's size (1/12°: 9 M cells);
        # built in place, in their final type: at 1/8° the int64 temporaries took 5–10 s
        small = np.int32 if 2 * ny * nx < 2**31 else np.int64
        flat = np.arange(y0, dtype=small).reshape(self.shape)
        nbr = np.empty((4, ny, nx), dtype=small)
        face = np.empty((4, ny, nx), dtype=small)  # into concat(alpha_x, alpha_y)
        nbr[EAST] = np.roll(flat, -1, axis=1)
        face[EAST] = flat
        nbr[WEST] = face[WEST] = np.roll(flat, 1, axis=1)
        if not self.periodic_x:
            nbr[EAST, :, -1] = face[EAST, :, -1] = -1
            nbr[WEST, :, 0] = face[WEST, :, 0] = -1
        nbr[NORTH, :-1] = flat[1:]
        face[NORTH] = flat + y0
        nbr[NORTH, -1] = face[NORTH, -1] = -1
        nbr[SOUTH, 1:] = flat[:-1]
        face[SOUTH, 1:] = flat[:-1] + y0
        nbr[SOUTH, 0] = face[SOUTH, 0] = -1
        cols = np.arange(nx)
        if self.north_fold == "F":
            nbr[NORTH, -1] = flat[-1, nx - 1 - cols]
            face[NORTH, -1] = y0 + flat[-1, cols]
        elif self.north_fold == "T":
            mirror = (nx - cols) % nx
            nbr[NORTH, -1] = flat[-2, mirror]
            face[NORTH, -1] = y0 + flat[-2, mirror]
            rep = self.representative.astype(small)  # copies: their cell is the neighbour
            nbr = np.where(nbr >= 0, rep[np.maximum(nbr, 0)], small(-1))
        return _frozen(nbr.reshape(4, -1)), _frozen(face.reshape(4, -1))

    @property
    def neighbours(self) -> np.ndarray:
        """``(4, ny·nx)``: flat index of the east, west, north, south neighbour (-1: edge)."""
        return self._slots[0]

    def slot_alpha(self, alpha_x: np.ndarray, alpha_y: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(4, ny, nx)``: the alpha of each slot's face where it is open (both cells ocean),
        else 0."""
        nbr, face = self._slots
        values = np.concatenate([np.ravel(alpha_x), np.ravel(alpha_y)]).astype(np.float64)
        m = np.asarray(mask, dtype=bool).ravel()
        ok = (nbr >= 0) & m[None, :] & m[np.maximum(nbr, 0)]
        out = np.where(ok, values[np.maximum(face, 0)], 0.0)
        return out.reshape(4, *self.shape)

    def stencil(
        self,
        mask: np.ndarray,
        area: np.ndarray,
        slots: np.ndarray,
        cells: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(w, nbr, c)`` on the listed cells: ``(W + K)φ = wφ + Σ_s c_s (φ − φ[nbr_s])``,
        zero on land and on copies; symmetric over the unknowns (see the module docstring).
        ``slots``: :meth:`slot_alpha` of the fields; ``cells``: fill only these (flat)
        cells' ``w`` and ``c``, zero elsewhere: the rows a few small blocks need, without a
        pass over the whole grid (at 1/12° that pass took 7.5 s)."""
        at = slice(None) if cells is None else cells
        m = np.ravel(mask)[at]
        f = np.where(m, self.cell_factor.ravel()[at], 0.0)
        w = f * np.where(m, np.ravel(area)[at], 0.0)
        c = slots.reshape(4, -1)[:, at] * f
        if cells is None:
            return w, self.neighbours, c
        n = self.ny * self.nx
        w_all, c_all = np.zeros(n), np.zeros((4, n))  # calloc: untouched pages cost nothing
        w_all[cells], c_all[:, cells] = w, c
        return w_all, self.neighbours, c_all

    # -- faces ---------------------------------------------------------------------------------
    def open_faces(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Listed faces (positions in ``alpha_x``, ``alpha_y``) whose two cells are ocean.

        A face listed twice (on the fold) is open at both listings; ``alpha_y`` of a T-fold
        row lists no face."""
        nbr, face = self._slots
        m = np.asarray(mask, dtype=bool).ravel()
        n = self.ny * self.nx
        own = np.arange(n)
        ok = (nbr >= 0) & m[None, :] & m[np.maximum(nbr, 0)]
        open_x = ok[EAST] & (face[EAST] == own)
        open_y = ok[NORTH] & (face[NORTH] == n + own)
        return open_x.reshape(self.shape), open_y.reshape(self.shape)

    @functools.cached_property
    def repeated_faces(self) -> tuple[np.ndarray, np.ndarray]:
        """Listings of ``alpha_x``/``alpha_y`` that repeat a face listed elsewhere, as the
        position of that first listing (flat; -1 where the listing is the only one): the two
        must agree (``Fields`` checks it)."""
        rx = np.full(self.shape, -1, dtype=np.int64)
        ry = np.full(self.shape, -1, dtype=np.int64)
        half, nx = self.nx // 2, self.nx
        cols = np.arange(half, nx)
        if self.north_fold == "T":
            rx[-1, cols] = (self.ny - 1) * nx + (nx - 1 - cols)
        elif self.north_fold == "F":
            ry[-1, cols] = (self.ny - 1) * nx + (nx - 1 - cols)
        return _frozen(rx), _frozen(ry)

    def cell_sums(self, slot_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per cell, the sum of ``(4, ny, nx)`` slot values along x (east + west) and along y
        (north + south)."""
        return slot_values[EAST] + slot_values[WEST], slot_values[NORTH] + slot_values[SOUTH]

    # -- regions -------------------------------------------------------------------------------
    def basin_labels(self, mask: np.ndarray) -> np.ndarray:
        """Connected ocean basins across every face (wrap and fold included): labels ``1…k``
        numbered in row-major order of their first cell, 0 on land.

        The plane's faces are joined by ``scipy.ndimage.label``; what the plane does not see
        (faces across the wrap and the fold, T-fold copies) joins those labels in a graph of
        one node per plane label: at 1/8° (2.5 M ocean cells) 0.3–0.7 s instead of 1–5 s for
        one graph of every cell."""
        from scipy import ndimage
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        grid = np.asarray(mask, dtype=bool)
        m = grid.ravel()
        rep = self.representative
        is_copy = rep != np.arange(m.size)
        plane, k = ndimage.label(grid & ~is_copy.reshape(self.shape))  # 4-connected
        flat = plane.ravel()
        copies = np.flatnonzero(m & is_copy)  # a T-fold copy is linked through its cell only
        flat[copies] = k + 1 + np.arange(copies.size)
        k += copies.size
        src, dst = [], []
        nbr = self.neighbours
        for s in range(nbr.shape[0]):
            a = nbr[s]
            cells = np.flatnonzero(m & (a >= 0))
            b = a[cells]
            join = m[b] & (flat[b] != flat[cells])  # only seams link different plane labels
            src.append(flat[cells[join]])
            dst.append(flat[b[join]])
        linked = copies[m[rep[copies]]]
        src.append(flat[linked])
        dst.append(flat[rep[linked]])
        src, dst = np.concatenate(src), np.concatenate(dst)
        graph = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(k + 1,) * 2)
        _, comp = connected_components(graph, directed=False)
        merged = comp[flat]  # plane label 0 (land) maps to a component of its own
        ocean_comp = merged[m]
        basins, first = np.unique(ocean_comp, return_index=True)
        order = np.argsort(first)  # label basins by their first cell
        relabel = np.zeros(comp.max() + 1, dtype=np.int64)
        relabel[basins[order]] = np.arange(1, order.size + 1)
        labels = np.where(m, relabel[merged], 0)
        return labels.reshape(self.shape)

    def pad(
        self, a: np.ndarray, halo: int | tuple[int, int], fill: float = 0.0, kind: str = CELL
    ) -> np.ndarray:
        """``a`` (``(…, ny, nx)``) with ``halo`` cells (or ``(rows, columns)``) on every side:
        copies across the wrap and the fold (mirrored, see :meth:`fold_source`), ``fill``
        beyond closed edges."""
        a = np.asarray(a)
        halo, halo_x = (halo, halo) if np.ndim(halo) == 0 else halo
        ny, nx = self.shape
        lead = a.shape[:-2]
        if self.folded:
            base, shift = self.fold_source(kind)
            if halo > base:
                raise TopologyError(
                    f"a halo of {halo} rows is deeper than the {base} rows a "
                    f"{self.north_fold}-fold grid of {ny} rows can mirror"
                )
            rows = a[..., base - halo : base, :][..., ::-1, ::-1]
            north = np.roll(rows, shift, axis=-1)
        else:
            north = np.full(lead + (halo, nx), fill, dtype=a.dtype)
        south = np.full(lead + (halo, nx), fill, dtype=a.dtype)
        tall = np.concatenate([south, a, north], axis=-2)
        if self.periodic_x:
            idx = np.arange(-halo_x, nx + halo_x) % nx
            return tall[..., idx]
        side = np.full(lead + (tall.shape[-2], halo_x), fill, dtype=a.dtype)
        return np.concatenate([side, tall, side], axis=-1)

    def fold_source(self, kind: str = CELL) -> tuple[int, int]:
        """How the rows beyond the fold are filled: halo row ``k ≥ 1`` above row ``ny−1`` is row
        ``base − k`` with its columns reversed and rolled by ``shift`` (value at ``i`` from
        column ``(shift − 1 − i) mod nx``). Cell fields and east (``face_x``) or north
        (``face_y``) face fields differ by one row or column, since a mirror turns an east
        face into a west one and a north face into a south one."""
        offset, shift = fold_recipe(self.north_fold, kind)
        return self.ny - offset, shift

    def distance_to_coast(
        self, mask: np.ndarray, metric: str = "euclidean", limit: float | None = None
    ) -> np.ndarray:
        """Signed distance in cells to the nearest cell of the other kind: ≥ 1 on ocean (to
        land), ≤ −1 on land (to ocean). Closed edges count as coast; the wrap and the fold
        do not. ``limit``: only distances up to it are needed, the rest clipped to ±limit;
        a periodic grid is then padded by ``limit + 1`` columns instead of half its width
        (a cell within ``limit`` of the other kind has it within the pad; one farther away
        sees no nearer cell in the padded copy than on the grid)."""
        from scipy import ndimage

        mask = np.asarray(mask, dtype=bool)
        ny, nx = self.shape
        # wide enough that no shortest path leaves the padded copy: across the wrap the
        # nearest cell of the other kind is at most nx/2 columns away
        hx = nx // 2 + 1 if self.periodic_x else 1
        if limit is not None and self.periodic_x:
            hx = min(hx, int(np.ceil(limit)) + 1)
        hy = self.fold_source(CELL)[0] if self.folded else 1
        padded = self.pad(mask.astype(np.int8), (hy, hx), fill=0).astype(bool)
        if metric == "euclidean":
            inside = ndimage.distance_transform_edt(padded)
            outside = ndimage.distance_transform_edt(~padded)
        elif metric == "manhattan":
            inside = ndimage.distance_transform_cdt(padded, metric="taxicab").astype(np.float64)
            outside = ndimage.distance_transform_cdt(~padded, metric="taxicab").astype(np.float64)
        else:
            raise ValueError(f"metric must be 'euclidean' or 'manhattan', got {metric!r}")
        signed = np.where(padded, inside, -outside)[hy : hy + ny, hx : hx + nx]
        return signed if limit is None else np.clip(signed, -limit, limit)

    def index_distance(self, j: int, i: int, j2: np.ndarray, i2: np.ndarray) -> np.ndarray:
        """Chebyshev distance in cells from ``(j, i)`` to each ``(j2, i2)``, the shorter way
        round the wrap and across the fold."""
        j2, i2 = np.asarray(j2), np.asarray(i2)

        def chebyshev(rows, cols):
            dx = np.abs(i - cols)
            if self.periodic_x:
                dx = np.minimum(dx, self.nx - dx)
            return np.maximum(np.abs(j - rows), dx)

        d = chebyshev(j2, i2)
        if self.folded:
            base, shift = self.fold_source()
            d = np.minimum(d, chebyshev(self.ny - 1 + base - j2, (shift - 1 - i2) % self.nx))
        return d

    # -- symmetries ----------------------------------------------------------------------------
    def symmetries(self) -> list[tuple[bool, bool, bool, int]]:
        """The point symmetries ``(flip_x, flip_y, transpose, shift_x)`` that map this graph
        onto itself: the square's 8 on a closed grid, 4 flips on a periodic one (plus any x
        shift), and on a folded grid only those that keep the fold's pairing of columns."""
        if self.folded:
            # F pairs i + i' = nx − 1, T pairs i + i' ≡ 0: a flip adds −2 (T) or 0 (F) to the
            # sum and a shift s adds 2s, so T's flip needs s = 1 and any shift must be 0 or nx/2
            flip_shift = 1 if self.north_fold == "T" else 0
            half = self.nx // 2
            return [
                (False, False, False, 0),
                (False, False, False, half),
                (True, False, False, flip_shift),
                (True, False, False, (flip_shift + half) % self.nx),
            ]
        flips = [(fx, fy, False, 0) for fy in (False, True) for fx in (False, True)]
        if self.periodic_x:
            return flips
        return flips + [(fx, fy, True, 0) for fx, fy, _, _ in flips]

    @property
    def any_shift(self) -> bool:
        """Whether every east–west shift is a symmetry (periodic grids without a fold)."""
        return self.periodic_x and not self.folded


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


SHARED_CELLS = 1 << 20


@functools.lru_cache(maxsize=16)
def _shared_topology(ny: int, nx: int, periodic_x: bool, north_fold: str) -> Topology:
    return Topology(ny, nx, periodic_x, north_fold)
