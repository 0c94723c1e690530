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
32   wrap             sits on a periodic grid narrower than ``WRAP_REACH·D``: its kernel meets
                      itself across the wrap, which a network cannot see (a periodic grid and
                      the same grid tiled twice give it the same input)
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
# The lattice kernel of S^M at 4·D (D the Daley length scale √(κ(2M−4))) is below ~1e-3 of its
# peak (diffnorm.subgrid.halo_width); on a narrower periodic grid a cell's kernel overlaps its
# own image. Measured (shipped default, a 40-row periodic channel, D = 3 cells): mean |ε| 10 %
# at nx = 8, 94 % at nx = 4, with no flag before this one.
WRAP_REACH = 4.0


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
    mark("wrap", fields.periodic_x & (fields.shape[1] < WRAP_REACH * cells["d_max"]))
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
