"""Per-cell descriptors of a grid's operator: what the error strata and a network's domain
checks sort cells by (length scale, grid-unit anisotropy, open faces, passages)."""

from __future__ import annotations

import numpy as np

from diffnorm.fields import Fields
from diffnorm.topology import EAST, NORTH, SOUTH, WEST


def cell_geometry(fields: Fields) -> dict[str, np.ndarray]:
    """:func:`compute_cell_geometry`, once per Fields (read-only arrays)."""
    return fields.derived("cell_geometry", lambda: compute_cell_geometry(fields))


def compute_cell_geometry(fields: Fields) -> dict[str, np.ndarray]:
    """Per cell, on the ``(ny, nx)`` grid: ``d_max``/``d_min``/``d_mean``, the Daley length
    scale ``D = √(κ(2M − 4))`` in cells of its open faces (κ = alpha/area); ``anisotropy``, κx/κy
    from the mean of its open faces along each axis (NaN unless both axes are open);
    ``open_faces`` (0–4: a dead end has 1) and ``passage`` (land on both sides along an axis: a
    one-cell-wide channel or a dead end)."""
    slots = fields.slot_alpha()
    area = np.where(fields.mask, fields.area, np.inf)
    open_ = slots > 0
    n_open = open_.sum(axis=0)
    # one (4, ny, nx) array, worked in place: at 1/12° each such temporary is 300 MB
    d = slots * float(2 * fields.steps - 4)
    d /= area
    np.sqrt(d, out=d)  # 0 on closed faces (alpha 0)
    counts = open_.view(np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        sx, sy = fields.topology.cell_sums(slots)
        nx_, ny_ = fields.topology.cell_sums(counts)
        ratio = np.where((nx_ > 0) & (ny_ > 0), (sx / nx_) / (sy / ny_), np.nan)
        d_mean = np.where(n_open > 0, d.sum(axis=0) / n_open, np.nan)
    d_max = d.max(axis=0)  # d ≥ 0, and 0 on closed faces
    d[~open_] = np.inf
    d_min = d.min(axis=0)
    closed_x = ~open_[EAST] & ~open_[WEST]
    closed_y = ~open_[NORTH] & ~open_[SOUTH]
    return {
        "d_max": d_max,
        "d_min": d_min,
        "d_mean": np.where(fields.mask, d_mean, np.nan),
        "anisotropy": np.where(fields.mask, ratio, np.nan),
        "open_faces": n_open,
        "passage": fields.mask & (closed_x | closed_y),
    }
