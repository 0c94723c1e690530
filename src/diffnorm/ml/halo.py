"""Halo padding for the network, following the grid's topology: periodic east–west, mirrored
across a north fold, closed (land) elsewhere. The fold's rows come from
:func:`diffnorm.topology.fold_recipe`, the same rule the NumPy padding uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffnorm.topology import CELL, fold_recipe


def pad_halo(
    x: torch.Tensor,
    halo: int,
    periodic_x: bool,
    fill: torch.Tensor | float = 0.0,
    north_fold: str = "none",
    kinds: Sequence[str] | None = None,
    wrap: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` by ``halo`` cells on each side.

    East–west: wrap-around when ``periodic_x`` (any halo, even wider than the grid; ``wrap``
    more columns west and east, a network's ``wrap_context``), else ``fill`` (``wrap``
    unused). North: the mirrored rows of a ``T`` or ``F`` fold, where ``kinds`` says per
    channel whether it lives on cells (default), east faces or north faces; else closed like
    the south: ``fill``, a scalar or one value per channel (the features of a land cell).
    """
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    if halo == 0 and not (periodic_x and any(wrap)):
        return x
    if torch.is_tensor(fill):
        # a module's buffer moves with the module: no device constant in an exported graph
        fill = fill.to(x.dtype).reshape(1, -1, 1, 1)
    else:
        fill = torch.full((1, 1, 1, 1), float(fill), dtype=x.dtype, device=x.device)
    b, c, h, w = x.shape
    cap = fill.expand(b, c, halo, w)
    if north_fold == "none":
        north = cap
    else:
        north = _fold_rows(x, halo, north_fold, kinds or [CELL] * c)
    x = torch.cat([cap, x, north], dim=-2)
    if not periodic_x:
        side = fill.expand(b, c, x.shape[-2], halo)
        return torch.cat([side, x, side], dim=-1)
    # gather the wrapped columns: any halo, even wider than the grid, with W symbolic in an
    # exported graph (slices would bake in the example's halo <= W)
    # (indices built from x itself: an arange would pin the exporter's device into the graph)
    west, east = halo + wrap[0], halo + wrap[1]
    row = torch.nn.functional.pad(x[0, 0, 0], (west, east))
    cols = torch.remainder(torch.ones_like(row, dtype=torch.long).cumsum(0) - 1 - west, x.shape[-1])
    return x.index_select(-1, cols)


def _fold_rows(x: torch.Tensor, halo: int, north_fold: str, kinds: Sequence[str]) -> torch.Tensor:
    """The ``halo`` rows beyond the fold, per channel kind."""
    h = x.shape[-2]
    parts = []
    for k, kind in enumerate(kinds):
        offset, shift = fold_recipe(north_fold, kind)
        if halo > h - offset:
            raise ValueError(
                f"the network's halo of {halo} rows is deeper than a {north_fold}-fold grid of "
                f"{h} rows can mirror; the grid needs at least {halo + offset} rows"
            )
        rows = x[:, k : k + 1, h - offset - halo : h - offset].flip(-2).flip(-1)
        parts.append(torch.roll(rows, shift, -1) if shift else rows)
    return torch.cat(parts, dim=1)


def crop_wrap(y: torch.Tensor, wrap: tuple[int, int], width: int) -> torch.Tensor:
    """The grid's ``width`` columns of a network output on input padded with ``wrap``
    (:func:`pad_halo`): the west context off, and the east."""
    return y[..., wrap[0] : wrap[0] + width]


def same_on_copies(x: torch.Tensor, north_fold: str) -> torch.Tensor:
    """``(B, H, W)`` with each T-fold copy (the east half of the fold row) given its cell's
    value: :meth:`Topology.same_on_copies` for a graph, where ``W`` stays symbolic (column
    ``c`` ← column ``W − c``)."""
    if north_fold != "T":
        return x
    last = x[:, -1]
    mirrored = torch.roll(last.flip(-1), fold_recipe("T", CELL)[1], -1)
    cols = torch.ones_like(last, dtype=torch.long).cumsum(-1)  # 1 … W
    last = torch.where(2 * (cols - 1) > cols[:, -1:], mirrored, last)
    return torch.cat([x[:, :-1], last[:, None]], dim=1)
