"""Where a trained network is on known ground: per-cell flags for inputs outside what it saw.

A model file records the ranges of its training data (:func:`diffnorm.ml.data.data_info`);
each cell of a user's grid is flagged, bit by bit, where it leaves them:

==== ================ =========================================================================
bit  name             the cell …
==== ================ =========================================================================
1    length_scale     has an open face whose length scale D (cells) is outside the trained range
2    anisotropy       has a grid-unit anisotropy κx/κy outside the trained range
4    stretching       sits where cell sizes change faster than anywhere in training (|log ratio|)
8    geometry         has a number of open faces (0–4: dead end 1, channel 2) never seen
16   fold             is within the network's halo of a north fold the model never saw
32   wrap             sits on a periodic grid too narrow for its kernel (:func:`wrap_reach`):
                      the kernel meets itself across the wrap, which a network cannot see (a
                      periodic grid and the same grid tiled twice give it the same input)
==== ================ =========================================================================

Older model files lack some ranges; those bits are then never set (``unknown`` in the report).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffnorm.fields import Fields

FLAGS = {
    "length_scale": 1,
    "anisotropy": 2,
    "stretching": 4,
    "geometry": 8,
    "fold": 16,
    "wrap": 32,
}
# A cell's kernel overlaps its own image across the wrap when the grid is narrower than twice
# the distance at which the lattice kernel of S^M falls below WRAP_TOLERANCE of its peak along
# x (diffnorm.subgrid.halo_width): on a periodic channel with D = 3 cells exact γ² moved by
# −5.8e-3 at nx = 12 against nx = 96 for M = 10, −3.1e-2 for M = 4. Before this flag, the
# shipped default was off by 10 % on average at nx = 8 and 94 % at nx = 4, unflagged.
WRAP_TOLERANCE = 1e-3


def wrap_reach(fields: Fields) -> np.ndarray:
    """Per cell, the narrowest periodic width at which its kernel no longer meets itself:
    ``2·H_x`` of :func:`diffnorm.subgrid.halo_width` at the cell's κ along x (grid units,
    :func:`~diffnorm.methods.lattice.cell_kappa`) and the fields' M; H grows like
    D = √(2Mκ), so it is taken at the grid's largest κ_x and scaled to each cell's D."""
    from diffnorm.methods.lattice import cell_kappa
    from diffnorm.subgrid import halo_width

    kx = cell_kappa(fields)[0]
    top = float(kx.max())
    if top <= 0:
        return np.zeros(fields.shape)
    reach = 2.0 * halo_width(top, top, fields.steps, WRAP_TOLERANCE)[1]
    return reach * np.sqrt(kx / top)


def cell_descriptors(fields: Fields) -> dict[str, np.ndarray]:
    """:func:`diffnorm.cells.cell_geometry` and the local stretching
    (:func:`diffnorm.ml.features.local_area`) of each cell."""
    from diffnorm.cells import cell_geometry
    from diffnorm.ml.features import local_area

    return {**cell_geometry(fields), "stretching": local_area(fields)}


def domain_flags(fields: Fields, seen: dict[str, Any], halo: int) -> tuple[np.ndarray, dict]:
    """``(flags, report)``: per-cell bits of :data:`FLAGS` (0 on land) and, per flag, the
    number of ocean cells flagged (or ``"unknown"`` when the model does not record the range)."""
    cells = cell_descriptors(fields)
    m = fields.counted
    flags = np.zeros(fields.shape, dtype=np.uint8)
    report: dict[str, Any] = {}

    def mark(name: str, where: np.ndarray | None) -> None:
        if where is None:
            report[name] = "unknown"
            return
        where = where & fields.mask
        flags[where] |= FLAGS[name]
        report[name] = int((where & m).sum())

    lo, hi = seen.get("d_cells", (None, None))
    mark(
        "length_scale",
        None if lo is None else (cells["d_min"] < 0.9 * lo) | (cells["d_max"] > 1.1 * hi),
    )
    a = seen.get("anisotropy")
    r = cells["anisotropy"]
    with np.errstate(invalid="ignore"):
        mark("anisotropy", None if a is None else (r < a[0] / 1.1) | (r > a[1] * 1.1))
    s = seen.get("stretching_max")
    mark("stretching", None if s is None else np.abs(cells["stretching"]) > 1.1 * s + 0.05)
    faces = seen.get("open_faces_seen")
    mark("geometry", None if faces is None else ~np.isin(cells["open_faces"], faces))
    mark("wrap", fields.periodic_x and (fields.shape[1] < wrap_reach(fields)))
    folds = seen.get("north_fold")
    if fields.north_fold == "none":
        mark("fold", np.zeros(fields.shape, dtype=bool))
    elif folds is None:
        mark("fold", None)
    else:
        near = np.zeros(fields.shape, dtype=bool)
        if fields.north_fold not in folds:
            near[-halo:] = True
        mark("fold", near)
    return flags, report
