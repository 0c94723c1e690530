"""Symmetries of the operator: flips, 90° rotations and east–west shifts of a sample.

The fields live on a staggered grid: ``alpha_x[j, i]`` sits on the face between cells
``(j, i)`` and ``(j, i+1)``. Reversing the x axis maps cell ``i`` to ``nx−1−i``, so the face
between new cells ``i`` and ``i+1`` is the old face between ``nx−2−i`` and ``nx−1−i``: the face
field is reversed *and shifted by one*, ``alpha_x'[:, i] = alpha_x[:, (nx−2−i) mod nx]`` (on a
periodic grid the wrap face lands on the last column, on a closed grid a closed face does).
Transposing swaps the axes and the roles of ``alpha_x`` and ``alpha_y``. Every element of the
dihedral group is a composition of these two; a periodic grid keeps only the transforms that
keep x the periodic axis (no transposes), plus shifts along x; a north fold keeps only the x
flip and the shifts that preserve its pairing of columns (:meth:`Topology.symmetries`).

Since ``K``, ``W`` and hence ``diag(L W⁻¹)`` are defined by the graph of cells and faces, a
relabelling of cells that maps faces to faces commutes with γ:
``γ(T fields) = T γ(fields)`` exactly (tested against brute force).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffnorm.fields import Fields
from diffnorm.topology import Topology


def _flip_cells(a: np.ndarray, axis: int) -> np.ndarray:
    return np.flip(a, axis=axis)


def _flip_faces(a: np.ndarray, axis: int) -> np.ndarray:
    return np.roll(np.flip(a, axis=axis), -1, axis=axis)


@dataclass(frozen=True)
class Transform:
    """``transpose`` first (x ↔ y), then ``flip_y``, ``flip_x``, then a roll of ``shift_x``."""

    flip_x: bool = False
    flip_y: bool = False
    transpose: bool = False
    shift_x: int = 0

    @property
    def name(self) -> str:
        parts = [n for n in ("transpose", "flip_y", "flip_x") if getattr(self, n)]
        if self.shift_x:
            parts.append(f"shift_x={self.shift_x}")
        return "+".join(parts) or "identity"

    def cells(self, a: np.ndarray) -> np.ndarray:
        """A cell-centred field (``mask``, ``area``, γ, …)."""
        if self.transpose:
            a = a.T
        if self.flip_y:
            a = _flip_cells(a, 0)
        if self.flip_x:
            a = _flip_cells(a, 1)
        return np.ascontiguousarray(np.roll(a, self.shift_x, axis=1) if self.shift_x else a)

    def restore_cells(self, a: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`cells`: a cell field of the transformed grid, back on the
        original grid."""
        if self.shift_x:
            a = np.roll(a, -self.shift_x, axis=1)
        if self.flip_x:
            a = _flip_cells(a, 1)
        if self.flip_y:
            a = _flip_cells(a, 0)
        return np.ascontiguousarray(a.T if self.transpose else a)

    def faces(self, alpha_x: np.ndarray, alpha_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The east- and north-face fields."""
        if self.transpose:
            alpha_x, alpha_y = alpha_y.T, alpha_x.T
        if self.flip_y:
            alpha_x, alpha_y = _flip_cells(alpha_x, 0), _flip_faces(alpha_y, 0)
        if self.flip_x:
            alpha_x, alpha_y = _flip_faces(alpha_x, 1), _flip_cells(alpha_y, 1)
        if self.shift_x:
            alpha_x = np.roll(alpha_x, self.shift_x, axis=1)
            alpha_y = np.roll(alpha_y, self.shift_x, axis=1)
        return np.ascontiguousarray(alpha_x), np.ascontiguousarray(alpha_y)

    def check(self, fields: Fields) -> None:
        """Refuse a transform that does not map the grid's graph onto itself."""
        topo = fields.topology
        point = (self.flip_x, self.flip_y, self.transpose)
        allowed = [s for s in topo.symmetries() if s[:3] == point]
        if not allowed:
            raise ValueError(
                f"transform {self.name} does not map a grid that is {topo.describe()} onto "
                "itself: periodic grids allow flips and x shifts only, folded grids the x flip "
                "and the shifts that keep the fold's pairing of columns"
            )
        shift = self.shift_x % topo.nx
        if topo.any_shift or (shift == 0 and not topo.folded):
            return
        if not topo.periodic_x:
            raise ValueError("shift_x needs an east–west periodic grid (periodic_x=1)")
        shifts = sorted({s[3] % topo.nx for s in allowed})
        if shift not in shifts:
            raise ValueError(
                f"transform {self.name} breaks the {topo.north_fold}-pivot north fold: with "
                f"this flip the x shift must be one of {shifts}"
            )

    def fields(self, fields: Fields) -> Fields:
        self.check(fields)
        ax, ay = self.faces(fields.alpha_x, fields.alpha_y)
        coords = {
            name: None if getattr(fields, name) is None else self.cells(getattr(fields, name))
            for name in ("lat", "lon")
        }
        return fields.replace(
            mask=self.cells(fields.mask.astype(np.int8)),
            area=self.cells(fields.area),
            alpha_x=ax,
            alpha_y=ay,
            **coords,
        )

    def sample(self, fields: Fields, gamma: np.ndarray) -> tuple[Fields, np.ndarray]:
        return self.fields(fields), self.cells(gamma)


def symmetries(topology: Topology) -> list[Transform]:
    """The grid's point symmetries (see :meth:`Topology.symmetries`)."""
    return [Transform(fx, fy, t, shift) for fx, fy, t, shift in topology.symmetries()]


def random_transform(
    rng: np.random.Generator, topology: Topology, square_only: bool = True
) -> Transform:
    """A uniformly drawn symmetry (and, on a periodic grid without a fold, x shift).

    Transposes are drawn only for square grids when ``square_only`` (a batch keeps one shape).
    """
    options = symmetries(topology)
    if square_only and topology.ny != topology.nx:
        options = [t for t in options if not t.transpose]
    t = options[rng.integers(len(options))]
    if topology.any_shift:
        t = Transform(t.flip_x, t.flip_y, t.transpose, int(rng.integers(topology.nx)))
    return t
