"""Which torch device a computation runs on: one check, one clear error, for every caller."""

from __future__ import annotations

import torch

DEVICE_KINDS = ("cpu", "cuda", "mps")


def pick_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None: CUDA when available, else the CPU; otherwise ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``, refused with the fix when this machine cannot run it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_KINDS:
        raise ValueError(
            f"device {device!r} is not one of auto, cpu, cuda, cuda:N or mps; pass --device auto "
            "to use a GPU when there is one"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is "
                "False: a CPU build, or no driver); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here; use "
                "cuda:0 … or auto"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use --device cpu")
    return dev
