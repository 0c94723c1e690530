"""PNG maps of γ and of |ε| (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffnorm.fields import Fields


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _extent(fields: Fields):
    if fields.lat is None or fields.lon is None:
        return None, "i (east)", "j (north)"
    return (
        [
            float(np.nanmin(fields.lon)),
            float(np.nanmax(fields.lon)),
            float(np.nanmin(fields.lat)),
            float(np.nanmax(fields.lat)),
        ],
        "longitude (°E)",
        "latitude (°N)",
    )


def plot_gamma(fields: Fields, gamma: np.ndarray, path: str | Path, title: str = "γ") -> Path:
    """Map of γ in km (land grey)."""
    plt = _pyplot()
    extent, xl, yl = _extent(fields)
    fig, ax = plt.subplots(figsize=(9, 4.5), constrained_layout=True)
    ax.set_facecolor("0.8")
    data = np.ma.masked_invalid(np.where(fields.mask, gamma / 1e3, np.nan))
    im = ax.imshow(data, origin="lower", extent=extent, aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label="γ (km)")
    ax.set(title=title, xlabel=xl, ylabel=yl)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_error_maps(
    fields: Fields, errors: dict[str, np.ndarray], path: str | Path, title: str = ""
) -> Path:
    """One panel of |ε| (log colour scale, shared) per method."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    extent, xl, yl = _extent(fields)
    n = len(errors)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(7 * cols, 3.6 * rows), squeeze=False, constrained_layout=True
    )
    finite = [np.abs(e[np.isfinite(e)]) for e in errors.values()]
    top = max((float(f.max()) for f in finite if f.size), default=1.0)
    norm = LogNorm(vmin=max(top * 1e-4, 1e-12), vmax=max(top, 1e-11))
    im = None
    for ax, (name, eps) in zip(axes.flat, errors.items(), strict=False):
        ax.set_facecolor("0.8")
        data = np.ma.masked_invalid(np.where(fields.mask, np.abs(eps), np.nan))
        im = ax.imshow(
            np.ma.maximum(data, norm.vmin),
            origin="lower",
            extent=extent,
            aspect="auto",
            norm=norm,
            cmap="magma",
        )
        ax.set(title=name, xlabel=xl, ylabel=yl)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes, label="|ε| = |γ̂² − γ²| / γ²")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
