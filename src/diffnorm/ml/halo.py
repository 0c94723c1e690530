"""Halo padding for the network, following the grid's topology: periodic east–west, mirrored
across a north fold, closed (land) elsewhere. The fold's rows come from
:func:`diffnorm.topology.fold_recipe`, the same rule the NumPy padding uses."""

from __future__ import annotations

import functools
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
        # from x itself: a traced torch.full(device=x.device) pins the tracing device
        fill = torch.zeros_like(x[:1, :1, :1, :1]) + float(fill)
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
    recipes = [fold_recipe(north_fold, kind) for kind in kinds]
    need = halo + max(offset for offset, _ in recipes)
    if torch.jit.is_tracing():
        # h is symbolic in an exported graph: check it there (TorchScript keeps the check)
        x = _fold_rows_check()(x, need, fold_rows_message("{}", halo, north_fold, need))
    elif h < need:
        raise ValueError(fold_rows_message(h, halo, north_fold, need))
    parts = []
    for k, (offset, shift) in enumerate(recipes):
        rows = _rows_above(x[:, k : k + 1], halo, offset, need).flip(-2).flip(-1)
        parts.append(torch.roll(rows, shift, -1) if shift else rows)
    return torch.cat(parts, dim=1)


def fold_rows_message(rows: int | str, halo: int, north_fold: str, need: int) -> str:
    """Why a folded grid of ``rows`` rows is too small for a network's ``halo``, and the fix
    (``rows="{}"``: a template for the exported graph's check)."""
    return (
        f"a grid of {rows} rows with a {north_fold}-pivot north fold is too small for this "
        f"network: its halo of {halo} rows is mirrored across the fold, which needs at least "
        f"{need} rows; for a smaller folded grid use an exact method (e.g. diffnorm estimate "
        "--method selinv)"
    )


def _rows_above(x: torch.Tensor, halo: int, offset: int, need: int) -> torch.Tensor:
    """Rows ``h − offset − halo … h − offset − 1`` of ``(B, 1, h, W)``, by a gather.

    A slice clamps: on a grid of fewer than ``need`` rows an exported ONNX graph (which keeps
    no assert) returned wrong or empty rows. On such a grid these indices start at ``need``,
    out of range, so ONNX Runtime fails ("indices element out of data bounds, idx=<need>").
    """
    h = x.shape[-2]
    # 0 … halo−1 built from x: an arange would pin the exporter's device into the graph
    k = torch.ones_like(x[0, 0, 0, :1], dtype=torch.long).expand(halo).cumsum(0) - 1
    first = k + (h - offset - halo)
    return x.index_select(-2, torch.where(first[:1] < 0, k + need, first))


@functools.cache
def _fold_rows_check():
    """The rows check of an exported graph, scripted once on first use (a traced graph keeps a
    scripted function's ``raise``; a Python ``if`` on ``h`` would be frozen at trace time)."""

    def check(x: torch.Tensor, need: int, message: str) -> torch.Tensor:
        if x.shape[-2] < need:
            raise ValueError(message.format(x.shape[-2]))
        return x

    return torch.jit.script(check)


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
