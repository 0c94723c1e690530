"""How fields become network inputs and γ a target: stored with every model, and all that
prediction needs (no training framework is imported here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from diffnorm.fields import Fields
from diffnorm.ml.features import (
    IMAGES_TARGETS,
    Standardizer,
    channel_kinds,
    channel_names,
    raw_features,
    raw_target,
)
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
    # (a, b): the correction fades from full at d = a·D to none at d = b·D cells from the coast
    gate: tuple[float, float] | None = None
    steps_input: bool = False  # M as an input channel (a network for several M)

    def gate_weight(self, fields: Fields) -> np.ndarray:
        """Weight of the network's correction per cell (1 without a gate).

        Beyond a few length scales from the coast a wall changes γ² by less than the
        correlation at twice the distance (≈ e^{-2(d/D)²}: 3e-4 at d = 2D), which the lattice
        baseline's own error far exceeds; there the correction is the network's noise. With
        ``d`` the Manhattan distance clipped as in the inputs and ``D`` the cell's largest
        face length scale, the weight is ``clip((b − d/D)/(b − a), 0, 1)``."""
        if self.gate is None:
            return np.ones(fields.shape)
        from diffnorm.cells import cell_geometry
        from diffnorm.metrics import distance_to_coast
        from diffnorm.ml.features import DISTANCE_CLIP

        a, b = self.gate
        d = distance_to_coast(fields, "manhattan", DISTANCE_CLIP)
        big = cell_geometry(fields)["d_max"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(big > 0, d / big, 0.0)
        return np.clip((b - ratio) / (b - a), 0.0, 1.0)

    def correction_weight(self, fields: Fields) -> np.ndarray:
        """Weight of the network's correction per cell: the gate's (:meth:`gate_weight`), and
        0 where the images baseline is exact (``log_images``, ``log_images_smooth``: its
        box-exact cells, see
        :func:`diffnorm.methods.images.box_exact`)."""
        weight = self.gate_weight(fields)
        if self.target in IMAGES_TARGETS:
            from diffnorm.methods.images import box_exact_cells

            weight = np.where(box_exact_cells(fields), 0.0, weight)
        return weight

    def inputs(
        self, fields: Fields, stats: Standardizer, wrap: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """Standardized input channels with their halo: ``(C, ny + 2·halo, nx + 2·halo)``, and
        on a periodic grid ``wrap`` more columns west and east (a network's ``wrap_context``)."""
        raw = raw_features(fields, self.distance, self.area, self.steps_input)
        x = torch.from_numpy(stats.inputs(raw)).float()[None]
        land = torch.from_numpy(self.land(stats)).float()
        periodic, fold = fields.periodic_x, fields.north_fold
        return pad_halo(x, self.halo, periodic, land, fold, self.kinds, wrap)[0]

    @property
    def channels(self) -> list[str]:
        return channel_names(self.distance, self.area, self.steps_input)

    @property
    def kinds(self) -> list[str]:
        """Where each input channel lives (cell or face): how the halo mirrors it."""
        return channel_kinds(self.distance, self.steps_input)

    def land(self, stats: Standardizer) -> np.ndarray:
        """The standardized inputs of a land cell beyond the grid (closed halos)."""
        return stats.land(self.distance, self.steps_input)

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
            "hard": torch.from_numpy(hard_cells(f)),
        }


def hard_cells(fields: Fields) -> np.ndarray:
    """Where networks fail first (tests/test_strata.py, bench_generalization --strata): ocean
    cells at most 2 cells from the coast, or with at most 2 open faces (channels, dead ends,
    corners)."""
    from diffnorm.cells import cell_geometry
    from diffnorm.metrics import distance_to_coast
    from diffnorm.ml.features import DISTANCE_CLIP

    near = distance_to_coast(fields, "manhattan", DISTANCE_CLIP) <= 2  # the features' copy
    return fields.counted & (near | (cell_geometry(fields)["open_faces"] <= 2))
