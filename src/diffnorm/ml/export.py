"""Export a model for operational coupling: TorchScript (FTorch from Fortran) and ONNX.

The exported graph holds everything between the raw features and the target, so a host
program needs no Python: input the raw feature channels ``(B, C, ny, nx)`` of
:func:`diffnorm.ml.features.raw_features` (float32; the mask and coast-distance channels are
fixed for a grid, so a host computes them once); the graph
standardizes them, pads the halo (east–west periodic or closed, and mirrored across a T or F
north fold, fixed at export time),
runs the network and returns the target ``(B, ny, nx)`` in physical units:
``t = log(γ²/γ²_base)`` (then ``γ = sqrt(γ²_base · exp(t))``) with the analytic or the
homogeneous-lattice baseline, or γ itself. A JSON card beside the file says which.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffnorm.ml.features import channel_kinds, channel_names
from diffnorm.ml.halo import pad_halo
from diffnorm.ml.modelfile import GammaNetwork

FORMATS = ("torchscript", "onnx")


class ExportedGamma(nn.Module):
    """Raw features → standardized, halo-padded → network → target in physical units."""

    def __init__(self, model: GammaNetwork, periodic_x: bool, north_fold: str = "none"):
        super().__init__()
        s = model.stats
        self.net = model.net.eval()
        self.halo = model.encoding.halo
        self.periodic_x = bool(periodic_x)
        self.north_fold = north_fold
        self.kinds = channel_kinds(model.encoding.distance)
        self.register_buffer("mean", torch.tensor(s.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(s.std, dtype=torch.float32).view(1, -1, 1, 1))
        land = s.land(model.encoding.distance)
        self.register_buffer("land", torch.tensor(land, dtype=torch.float32).view(1, -1, 1, 1))
        self.target_mean = float(s.target_mean)
        self.target_std = float(s.target_std)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        x = (raw.to(self.mean.dtype) - self.mean) / self.std  # float64 hosts welcome
        x = pad_halo(x, self.halo, self.periodic_x, self.land, self.north_fold, self.kinds)
        return self.net(x)[:, 0] * self.target_std + self.target_mean


def card(model: GammaNetwork, periodic_x: bool, fmt: str, north_fold: str = "none") -> dict:
    return {
        "model": model.name,
        "format": fmt,
        "input": {
            "name": "raw_features",
            "shape": [
                "batch",
                len(channel_names(model.encoding.distance, model.encoding.area)),
                "ny",
                "nx",
            ],
            "channels": channel_names(model.encoding.distance, model.encoding.area),
            "dtype": "float32",
            "min_nx": model.encoding.halo,
        },
        "output": {"name": "target", "shape": ["batch", "ny", "nx"], "means": model.target},
        "periodic_x": bool(periodic_x),
        "north_fold": north_fold,
        "steps": model.steps,
        "halo": model.encoding.halo,
        "gamma": (
            "gamma = sqrt(gamma2_analytic * exp(target)) on ocean cells, with gamma2_analytic "
            "exactly as diffnorm.methods.analytic.analytic_gamma_squared: 4 pi (M-1) "
            "sqrt(ax * ay) with ax, ay the mean alpha over the cell's open x and y faces (one "
            "direction's mean for both when the other has none; area for an isolated cell), "
            "capped by the area of the cell's basin"
            if model.target == "log_ratio"
            else "gamma = sqrt(gamma2_lattice * exp(target)) on ocean cells, with gamma2_lattice "
            "exactly as diffnorm.methods.lattice.lattice_gamma_squared (the homogeneous-lattice "
            "value from the cell-mean kappa of its open faces, capped by the basin area)"
            if model.target == "log_lattice"
            else "gamma = target"
        ),
    }


def export(
    model: GammaNetwork,
    path: str | Path,
    fmt: str,
    periodic_x: bool = True,
    example_shape: tuple[int, int] = (48, 64),
    north_fold: str = "none",
) -> tuple[Path, Path]:
    """Write ``path`` in ``fmt`` and ``path.json`` (the card); returns both paths."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedGamma(model, periodic_x, north_fold).eval()
    c = len(channel_names(model.encoding.distance, model.encoding.area))
    example = torch.randn(1, c, *example_shape)
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in PyTorch but it is what FTorch loads from Fortran
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "torchscript":
            torch.jit.trace(module, example).save(str(path))
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["raw_features"],
                output_names=["target"],
                dynamic_axes={"raw_features": {0: "batch", 2: "ny", 3: "nx"}},
                dynamo=False,
            )
    meta = path.with_name(path.name + ".json")
    meta.write_text(json.dumps(card(model, periodic_x, fmt, north_fold), indent=2) + "\n")
    return path, meta


def reference_target(
    model: GammaNetwork, raw: np.ndarray, periodic_x: bool, north_fold: str = "none"
) -> np.ndarray:
    """What the exported graph computes, in PyTorch (for checks)."""
    with torch.no_grad():
        module = ExportedGamma(model, periodic_x, north_fold).eval()
        return module(torch.from_numpy(raw).float()).numpy()
