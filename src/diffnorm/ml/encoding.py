"""How fields become network inputs and γ a target: stored with every model, and all that
prediction needs (no training framework is imported here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from diffnorm.fields import Fields
from diffnorm.ml.features import Standardizer, channel_kinds, raw_features, raw_target
from diffnorm.ml.halo import pad_halo

if TYPE_CHECKING:
    from diffnorm.data.dataset import Sample


@dataclass
class Encoding:
    """How fields become inputs and γ becomes a target (stored with every model)."""

    distance: str = "manhattan"
    target: str = "log_ratio"
    halo: int = 10
    area: str = "global"

    def inputs(self, fields: Fields, stats: Standardizer) -> torch.Tensor:
        """Standardized input channels with their halo: ``(C, ny + 2·halo, nx + 2·halo)``."""
        raw = raw_features(fields, self.distance, self.area)
        x = torch.from_numpy(stats.inputs(raw)).float()[None]
        land = torch.from_numpy(stats.land(self.distance)).float()
        kinds = channel_kinds(self.distance)
        return pad_halo(x, self.halo, fields.periodic_x, land, fields.north_fold, kinds)[0]

    def encode(self, sample: Sample, stats: Standardizer) -> dict[str, torch.Tensor]:
        f = sample.fields
        x = self.inputs(f, stats)
        t = raw_target(f, np.where(f.mask, sample.gamma, 1.0), self.target)
        t = (t - stats.target_mean) / stats.target_std
        return {
            "x": x,
            "target": torch.from_numpy(np.where(f.mask, t, 0.0)).float(),
            "mask": torch.from_numpy(f.counted.copy()),  # each T-fold cell once in the loss
            "gamma": torch.from_numpy(np.where(f.mask, sample.gamma, 1.0)),
        }
