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

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffnorm.fields import atomic_output, check_output_path
from diffnorm.ml.features import SMOOTH_SIZE, SMOOTH_WEIGHT
from diffnorm.ml.halo import crop_wrap, pad_halo, same_on_copies
from diffnorm.ml.modelfile import GammaNetwork
from diffnorm.subgrid import EXACT_BASINS, EXACT_FOLD_ROWS

FORMATS = ("torchscript", "onnx")


class ExportedGamma(nn.Module):
    """Raw features → standardized, halo-padded → network → target in physical units."""

    def __init__(self, model: GammaNetwork, periodic_x: bool, north_fold: str = "none"):
        super().__init__()
        s = model.stats
        enc = model.encoding
        self.net = model.inference_net
        self.halo = model.encoding.halo
        self.periodic_x = bool(periodic_x)
        self.wrap = model.wrap_context(self.periodic_x)
        self.north_fold = north_fold
        self.kinds = enc.kinds
        self.register_buffer("mean", torch.tensor(s.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(s.std, dtype=torch.float32).view(1, -1, 1, 1))
        land = enc.land(s)
        self.register_buffer("land", torch.tensor(land, dtype=torch.float32).view(1, -1, 1, 1))
        self.target_mean = float(s.target_mean)
        self.target_std = float(s.target_std)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        x = (raw.to(self.mean.dtype) - self.mean) / self.std  # float64 hosts welcome
        x = pad_halo(
            x, self.halo, self.periodic_x, self.land, self.north_fold, self.kinds, self.wrap
        )
        y = crop_wrap(self.net(x)[:, 0], self.wrap, raw.shape[-1])
        return same_on_copies(y * self.target_std + self.target_mean, self.north_fold)


def card(
    model: GammaNetwork, periodic_x: bool, fmt: str, north_fold: str = "none", steps=None
) -> dict:
    """``steps``: the M of a fields graph (None: the model's M, or its range)."""
    return {
        "model": model.name,
        "format": fmt,
        "input": {
            "name": "raw_features",
            "shape": ["batch", len(model.encoding.channels), "ny", "nx"],
            "channels": model.encoding.channels,
            "dtype": "float32",
            "min_nx": 1,  # any width: the halo (and a U-Net's wrap context) repeats the grid
        },
        "output": {"name": "target", "shape": ["batch", "ny", "nx"], "means": model.target},
        "periodic_x": bool(periodic_x),
        "north_fold": north_fold,
        "steps": steps if steps is not None else model.steps_served,
        "halo": model.encoding.halo,
        # columns of wrap-around read beyond the halo on a periodic grid (the graph pads them)
        "wrap_context": list(model.wrap_context(periodic_x)),
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
            else "gamma = sqrt(gamma2_images * exp(target)) on ocean cells, with gamma2_images "
            "exactly as diffnorm.methods.images.images_gamma_squared (the lattice value in the "
            "cell's straight-line box with wall images, capped by the basin area), and target "
            "set to 0 on the cells diffnorm.methods.images.box_exact_cells finds"
            if model.target == "log_images"
            else "gamma = sqrt(gamma2_smooth * exp(target)) on ocean cells, with log gamma2_smooth "
            "= (1 - w) log gamma2_images + w (mean of log gamma2_images over the ocean cells of "
            f"the cell's k x k square, across the wrap and the fold), k = {SMOOTH_SIZE}, "
            f"w = {SMOOTH_WEIGHT:g}, exactly as "
            "diffnorm.ml.features.smoothed_images_gamma_squared; gamma2_images itself, and "
            "target 0, on the cells diffnorm.methods.images.box_exact_cells finds"
            if model.target == "log_images_smooth"
            else "gamma = sqrt(gamma2_walk * exp(target)) on ocean cells, with gamma2_walk "
            "exactly as diffnorm.methods.images.walk_gamma_squared (each axis's image sum "
            "averaged in log over the cell's run across it, weighted by the walk's spread: "
            "diffnorm.methods.images.ImagesVariance.walk); gamma2_images itself, and target 0, "
            "on the cells diffnorm.methods.images.box_exact_cells finds"
            if model.target == "log_images_walk"
            else "gamma = target"
        ),
    }


GRAPHS = ("fields", "features")
FIELD_INPUTS = ["mask", "area", "alpha_x", "alpha_y"]


def export(
    model: GammaNetwork,
    path: str | Path,
    fmt: str,
    periodic_x: bool = True,
    example_shape: tuple[int, int] = (48, 64),
    north_fold: str = "none",
    graph: str = "fields",
    steps: int | None = None,
) -> tuple[Path, Path]:
    """Write ``path`` in ``fmt`` and ``path.json`` (the card); returns both paths.

    ``graph="fields"``: the whole prediction (:class:`diffnorm.ml.pipeline.FieldsToGamma`):
    ``mask, area, alpha_x, alpha_y`` ``(B, ny, nx)``, any float type, in; γ (m) out.
    ``graph="features"``: the raw feature channels in, the target out (:class:`ExportedGamma`).
    ``steps``: the M of a fields graph (needed for a model with M as an input; the features
    graph takes M in its ``log_steps`` channel).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    # refused before the tracing, not after it
    path = check_output_path(path, example=f"{model.name}.{'ts' if fmt == 'torchscript' else fmt}")
    meta = check_output_path(path.with_name(path.name + ".json"))
    if graph == "fields":
        from diffnorm.ml.pipeline import FieldsToGamma, export_steps

        steps = export_steps(model, steps)
        module = FieldsToGamma(model, periodic_x, north_fold, steps).eval()
        rng = np.random.default_rng(0)
        mask = (rng.random((1, *example_shape)) > 0.2).astype(np.float64)
        example = (torch.from_numpy(mask),) + tuple(
            torch.from_numpy(rng.uniform(0.5, 1.5, (1, *example_shape)) * 1e8) for _ in range(3)
        )
        names, outputs = FIELD_INPUTS, ["gamma"]
    else:
        if steps is not None:
            raise ValueError(
                "steps: the features graph takes M in its log_steps channel (a model with M as "
                "an input) or serves its model's M; give steps for a fields graph only"
            )
        module = ExportedGamma(model, periodic_x, north_fold).eval()
        c = len(model.encoding.channels)
        example = (torch.randn(1, c, *example_shape),)
        names, outputs = ["raw_features"], ["target"]
    # traced on the CPU from a copy: the loaded model's network may sit on a GPU (a cnn
    # estimate there moves it), and the example inputs are CPU tensors
    module = copy.deepcopy(module).cpu()
    # an inference graph: its outputs must not require grad (`.numpy()` on them failed)
    module.requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in PyTorch but it is what FTorch loads from Fortran;
        # the ONNX exporter's own warnings (~150 lines of constant folding and dynamic-axes
        # notes) say nothing to the user about the graph written
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "onnx":
            warnings.simplefilter("ignore", UserWarning)
        with atomic_output(path) as tmp:
            if fmt == "torchscript":
                torch.jit.trace(module, example, check_trace=False).save(str(tmp))
            else:
                axes = (
                    {0: "batch", 1: "ny", 2: "nx"}
                    if graph == "fields"
                    else {0: "batch", 2: "ny", 3: "nx"}
                )
                torch.onnx.export(
                    module,
                    example,
                    str(tmp),
                    input_names=names,
                    output_names=outputs,
                    dynamic_axes={n: axes for n in names},
                    opset_version=17,
                    dynamo=False,
                )
    info = card(model, periodic_x, fmt, north_fold, steps)
    if graph == "fields":
        info["input"] = {
            "names": FIELD_INPUTS,
            "shape": ["batch", "ny", "nx"],
            "dtype": "any float (float64 as NEMO has them)",
            "layout": "DESIGN §1: mask 1 ocean / 0 land, area m², alpha_x east faces, "
            "alpha_y north faces (m²), NEMO's inner domain",
        }
        info["output"] = {"name": "gamma", "shape": ["batch", "ny", "nx"], "units": "m"}
        info["gamma"] = (
            f"gamma in metres on ocean cells, NaN on land; basins of at most {EXACT_BASINS} "
            "cells are not capped or solved exactly here (diffnorm's cnn method does both): "
            "mask or solve them on the host"
        )
        if north_fold != "none":  # the network's weakest rows, which cnn solves exactly
            info["gamma"] += (
                f"; nor are the {EXACT_FOLD_ROWS} rows under the north fold, where the network "
                "alone errs most (the user guide gives the default's measured miss there): "
                "solve them on the host (diffnorm.subgrid.fold_band_variance)"
            )
    with atomic_output(meta) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return path, meta


def reference_target(
    model: GammaNetwork, raw: np.ndarray, periodic_x: bool, north_fold: str = "none"
) -> np.ndarray:
    """What the exported graph computes, in PyTorch (for checks)."""
    with torch.no_grad():
        module = ExportedGamma(model, periodic_x, north_fold).eval()
        return module(torch.from_numpy(raw).float()).numpy()
