"""γ from a trained network: load a checkpoint, encode fields, invert the target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffnorm.fields import Fields
from diffnorm.ml.data import Encoding
from diffnorm.ml.features import gamma_from_target
from diffnorm.ml.lit import GammaModel


def load_model(path: str | Path, device: str = "cpu") -> GammaModel:
    """A trained model in eval mode (BatchNorm uses its running statistics)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model checkpoint")
    model = GammaModel.load_from_checkpoint(path, map_location=device, weights_only=False)
    if model.stats is None:
        raise ValueError(f"{path}: checkpoint holds no standardization statistics")
    return model.eval()


@torch.no_grad()
def predict_gamma(model: GammaModel, fields: Fields) -> np.ndarray:
    """γ on the grid (NaN on land) by one forward pass."""
    if model.training:
        raise RuntimeError("the model is in training mode; call model.eval() first")
    h = model.hparams
    enc = Encoding(h.distance, h.target, model.halo)
    x = enc.inputs(fields, model.stats)[None].to(model.device)
    pred = model(x)[0].double().cpu().numpy()
    t = pred * model.stats.target_std + model.stats.target_mean
    return gamma_from_target(fields, t, h.target)
