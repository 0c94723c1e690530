"""Pretrained model files shipped with the package (``diffnorm models`` lists them).

Each ``NAME.pt`` here is a self-contained model file (see :mod:`diffnorm.ml.modelfile`).
``estimate(fields, "cnn")`` without a model uses the model trained on the fields' own grid when
one is shipped (``latlon4-m10`` on the 4° grid; ``orca1-m10`` was trained on the ORCA1-like
grid before it had its north fold, so it is used there only when asked for); else ``DEFAULT``,
the general model trained on geometry windows (``windows-smooth-gpu2-m10``: a U-Net correcting
the ``images`` estimate blended with its 3×3 ocean mean, trained on closed, stretched, polar
(T and F folds), metre-κ and uniform windows, with a per-cell error estimate). It is
``windows-smooth-m10`` (trained 22 CPU epochs on that baseline from ``windows-general-m10``,
the same network against the plain ``images`` estimate) fine-tuned on one GPU for 1.1 million
window passes (``scripts/gpu_recipe.sh``: ``windows-smooth-gpu-m10``), then for 1.0 million more
on windows drawn afresh (the recipe's second run). Those models and their ancestors
``windows-images-m10`` (no fold, no metre κ) and ``windows-polar-m10`` (the first with folds)
stay shipped, unchanged, for comparison and as the recipes' starting points: a shipped name
always means the same weights. For any other M from 4 to 20 the choice is
``windows-general-m4-20``: ``windows-general-m10`` with M as an input channel, fine-tuned on
windows whose M is drawn from 4, 6, …, 20 (less accurate than the default at M = 10, which
keeps it).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
DEFAULT = "windows-smooth-gpu2-m10"


def shipped_models() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.pt"))


def shipped_model_path(name: str | None = None) -> Path:
    """The file of a shipped model by name (``None``: :data:`DEFAULT`)."""
    name = name or DEFAULT
    path = HERE / f"{name}.pt"
    if not path.exists():
        names = ", ".join(shipped_models()) or "none"
        raise FileNotFoundError(
            f"model {name!r} is neither a file nor a shipped model (shipped: {names})"
        )
    return path
