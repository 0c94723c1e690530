"""Halo padding from the grid topology: periodic east–west, closed (land) elsewhere."""

from __future__ import annotations

import torch


def pad_halo(
    x: torch.Tensor,
    halo: int,
    periodic_x: bool,
    fill: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` by ``halo`` cells on each side.

    East–west: wrap-around when ``periodic_x`` (any halo, even wider than the grid), else
    ``fill``. North and south rows are closed: ``fill``, which is a scalar or one value per
    channel (the features of a land cell).
    """
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    if halo == 0:
        return x
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    b, c, h, w = x.shape
    if not periodic_x:
        side = fill.expand(b, c, h, halo)
        x = torch.cat([side, x, side], dim=-1)
    elif halo <= w:
        # slices, not a tiled copy: H and W stay symbolic when the graph is exported
        x = torch.cat([x[..., -halo:], x, x[..., :halo]], dim=-1)
    else:
        reps = -(-halo // w)  # ceil: enough copies for halos wider than the grid
        tiled = torch.cat([x] * (2 * reps + 1), dim=-1)
        start = reps * w - halo
        x = tiled[..., start : start + w + 2 * halo]
    cap = fill.expand(b, c, halo, x.shape[-1])
    return torch.cat([cap, x, cap], dim=-2)
