"""``diffnorm inspect``: what a dataset holds (sizes, ranges) and a picture of a few samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffnorm.data.config import SPLITS
from diffnorm.data.dataset import Sample, load_split
from diffnorm.methods.analytic import analytic_gamma_squared


def cell_length_scales(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Length scales in cells along x and y from the faces: ``d² = (2M − 4)·alpha/area``."""
    f = sample.fields
    gx, gy = f.grid_diffusivity()
    factor = 2 * f.steps - 4
    return np.sqrt(factor * gx[f.open_x]), np.sqrt(factor * gy[f.open_y])


def analytic_ratio(sample: Sample) -> np.ndarray:
    """``γ²/γ²_analytic`` on ocean cells: the correction a network has to learn."""
    m = sample.fields.mask
    return sample.gamma[m] ** 2 / analytic_gamma_squared(sample.fields)[m]


def summarize(root: str | Path) -> dict[str, Any]:
    """Per split: sample count, ranges of D (cells), γ (km) and γ²/γ²_analytic."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        samples = load_split(root, split)
        if not samples:
            continue
        d = np.concatenate([np.concatenate(cell_length_scales(s)) for s in samples])
        g = np.concatenate([s.gamma[s.fields.mask] for s in samples]) / 1e3
        r = np.concatenate([analytic_ratio(s) for s in samples])
        out[split] = {
            "samples": len(samples),
            "shape": list(samples[0].fields.shape),
            "ocean_cells": samples[0].fields.n_ocean,
            "D_cells": [float(d.min()), float(np.median(d)), float(d.max())],
            "gamma_km": [float(g.min()), float(np.median(g)), float(g.max())],
            "gamma2_over_analytic": [float(r.min()), float(np.median(r)), float(r.max())],
        }
    return out


def plot_samples(root: str | Path, path: str | Path, count: int = 3, split: str = "train") -> Path:
    """A row per sample: length scale (cells), γ (km), γ²/γ²_analytic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = load_split(root, split)[:count]
    if not samples:
        raise ValueError(f"{root} has no {split!r} samples to plot")
    fig, axes = plt.subplots(
        len(samples), 3, figsize=(15, 3.2 * len(samples)), squeeze=False, constrained_layout=True
    )
    for row, s in zip(axes, samples, strict=True):
        f = s.fields
        d = np.sqrt((2 * f.steps - 4) * np.sqrt(np.prod(f.grid_diffusivity(), axis=0)))
        ratio = np.full(f.shape, np.nan)
        ratio[f.mask] = analytic_ratio(s)
        panels = [
            (
                "D (cells, geometric mean of faces)",
                np.where(f.mask & (d > 0), d, np.nan),
                "viridis",
            ),
            ("γ (km)", np.where(f.mask, s.gamma / 1e3, np.nan), "magma"),
            ("γ² / γ²_analytic", ratio, "coolwarm"),
        ]
        for ax, (title, data, cmap) in zip(row, panels, strict=True):
            ax.set_facecolor("0.8")
            im = ax.imshow(np.ma.masked_invalid(data), origin="lower", cmap=cmap, aspect="auto")
            fig.colorbar(im, ax=ax)
            ax.set_title(f"{s.name}: {title}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
