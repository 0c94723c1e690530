"""Symmetries of the operator: flips, 90° rotations and east–west shifts of a sample.

The fields live on a staggered grid: ``alpha_x[j, i]`` sits on the face between cells
``(j, i)`` and ``(j, i+1)``. Reversing the x axis maps cell ``i`` to ``nx−1−i``, so the face
between new cells ``i`` and ``i+1`` is the old face between ``nx−2−i`` and ``nx−1−i``: the face
field is reversed *and shifted by one*, ``alpha_x'[:, i] = alpha_x[:, (nx−2−i) mod nx]`` (on a
periodic grid the wrap face lands on the last column, on a closed grid a closed face does).
Transposing swaps the axes and the roles of ``alpha_x`` and ``alpha_y``. Every element of the
dihedral group is a composition of these two; a periodic grid keeps only the transforms that
keep x the periodic axis (no transposes), plus shifts along x.

Since ``K``, ``W`` and hence ``diag(L W⁻¹)`` are defined by the graph of cells and faces, a
relabelling of cells that maps faces to faces commutes with γ:
``γ(T fields) = T γ(fields)`` exactly (tested against brute force).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffnorm.fields import Fields


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
        if fields.periodic_x and self.transpose:
            raise ValueError(
                f"transform {self.name} would make the periodic x axis the y axis; "
                "periodic grids allow flips and x shifts only"
            )
        if self.shift_x and not fields.periodic_x:
            raise ValueError("shift_x needs an east–west periodic grid (periodic_x=1)")

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


def symmetries(periodic_x: bool) -> list[Transform]:
    """The grid's point symmetries: 4 flips on a periodic grid, the 8 of the square otherwise."""
    flips = [Transform(fx, fy) for fy in (False, True) for fx in (False, True)]
    if periodic_x:
        return flips
    return flips + [Transform(t.flip_x, t.flip_y, transpose=True) for t in flips]


def random_transform(
    rng: np.random.Generator, periodic_x: bool, shape: tuple[int, int], square_only: bool = True
) -> Transform:
    """A uniformly drawn symmetry (and, on a periodic grid, x shift).

    Transposes are drawn only for square grids when ``square_only`` (a batch keeps one shape).
    """
    options = symmetries(periodic_x)
    if square_only and shape[0] != shape[1]:
        options = [t for t in options if not t.transpose]
    t = options[rng.integers(len(options))]
    if periodic_x:
        t = Transform(t.flip_x, t.flip_y, t.transpose, int(rng.integers(shape[1])))
    return t
