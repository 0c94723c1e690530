"""Network inputs and targets, built from the fields only.

Inputs (per cell, all dimensionless so that scaling ``alpha`` and ``area`` together changes
nothing): the grid diffusivities ``alpha_x/area`` and ``alpha_y/area`` on the east and north
faces (0 on closed faces), the area relative to the sample's mean ocean area (``global``) or
to its neighbours' (``local``, which means the same on any grid), the signed
distance to the coast in cells (periodic in x; optional, Manhattan or Euclidean), the mask
and, for a network that serves several M, ``log(M / STEPS_REFERENCE)`` on ocean cells (last,
so that a single-M network extends to it with zero weights and starts where it was).
Each channel is standardized with statistics of the training split over *all* cells (the
study found ocean-only statistics worse), stored with the model.

Targets: ``log(γ²/γ²_analytic)`` (default: the network learns boundary and lattice effects
only), ``log(γ²/γ²_lattice)`` (the homogeneous-lattice value, see
:mod:`diffnorm.methods.lattice`: lattice effects and 1-D channels are then in the baseline),
``log(γ²/γ²_images)`` (that value in each cell's straight-line box with wall images, see
:mod:`diffnorm.methods.images`: straight coasts, corners, channels and rectangular basins are
then exact in the baseline and the network learns what irregular coasts and varying κ add),
``log(γ²/γ²_images_smooth)`` (the images value blended with its mean over the cell's 3×3
ocean neighbours, :func:`smoothed_images_gamma_squared`: less wrong on ragged coasts, where
one cell's box differs wildly from its neighbour's), ``log(γ²/γ²_images_walk)`` (each axis's
image sum averaged along the walk across it, the ``walk`` method's value,
:func:`diffnorm.methods.images.walk_gamma_squared`: half the smoothed value's error at the
coast) or the study's standardized ``γ``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from diffnorm.fields import Fields
from diffnorm.methods.analytic import analytic_gamma_squared
from diffnorm.metrics import distance_to_coast
from diffnorm.topology import CELL, EAST, FACE_X, FACE_Y, NORTH, Topology

DISTANCES = ("none", "manhattan", "euclidean")
# area channel: the cell area over the sample's mean ocean area (global: depends on the whole
# grid), or log(area / mean area of the ocean cells around it) (local: 0 on uniform grids)
AREAS = ("global", "local")
LOG_TARGETS = ("log_ratio", "log_lattice", "log_images", "log_images_smooth", "log_images_walk")
TARGETS = (*LOG_TARGETS, "gamma")
# targets whose baseline is exact on the images method's box-exact cells (no correction there)
IMAGES_TARGETS = ("log_images", "log_images_smooth", "log_images_walk")
DISTANCE_CLIP = 20.0  # cells: farther than this the coast no longer matters for γ
STEPS_REFERENCE = 10  # the M channel is log(M / this): 0 for the M most networks know
# log_images_smooth: the k×k ocean mean's weight w in the blend (benchmarks/bench_baselines.py:
# 3×3, w 0.5 left 29 % (ORCA1) to 83 % (Table 8) fewer cells with |log γ²/γ²_base| ≥ 0.4)
SMOOTH_SIZE = 3
SMOOTH_WEIGHT = 0.5


def channel_names(distance: str, area: str = "global", steps_input: bool = False) -> list[str]:
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if area not in AREAS:
        raise ValueError(f"area must be one of {AREAS}, got {area!r}")
    names = ["kappa_x", "kappa_y", "area_rel" if area == "global" else "area_local"]
    if distance != "none":
        names.append(f"distance_{distance}")
    return names + ["mask"] + (["log_steps"] if steps_input else [])


def channel_kinds(distance: str, steps_input: bool = False) -> list[str]:
    """Where each channel lives (cell, east face, north face): a fold mirrors them
    differently (:func:`diffnorm.topology.fold_recipe`)."""
    return [FACE_X, FACE_Y] + [CELL] * (len(channel_names(distance, "global", steps_input)) - 2)


def steps_channel(fields: Fields) -> np.ndarray:
    """``log(M / STEPS_REFERENCE)`` on ocean cells, 0 on land (as the other channels)."""
    return np.where(fields.mask, math.log(fields.steps / STEPS_REFERENCE), 0.0)


def local_area(fields: Fields) -> np.ndarray:
    """``log(area / mean area of the ocean cells in the 3×3 block around it)`` on ocean cells
    (neighbours across the wrap and the fold), 0 on land: the grid's local stretching; once
    per Fields (read-only: the range flags and the error classes both ask)."""
    return fields.derived("local_area", lambda: _local_area(fields))


def _local_area(fields: Fields) -> np.ndarray:
    mask = np.asarray(fields.mask, dtype=bool)
    area = np.where(mask, fields.area, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mask, np.log(area / ocean_mean(fields.topology, mask, area, 3)), 0.0)


def raw_features(
    fields: Fields,
    distance: str = "manhattan",
    area_kind: str = "global",
    steps_input: bool = False,
) -> np.ndarray:
    """Unstandardized input channels ``(C, ny, nx)`` (see :func:`channel_names`)."""
    names = channel_names(distance, area_kind, steps_input)
    mask = fields.mask
    area = np.where(mask, fields.area, 0.0)
    mean_area = area[mask].mean()
    slots = fields.slot_alpha()  # a T-fold row's north slot is its mirrored face
    with np.errstate(divide="ignore", invalid="ignore"):
        kx = np.where(mask, slots[EAST] / area, 0.0)
        ky = np.where(mask, slots[NORTH] / area, 0.0)
    channels = [kx, ky, area / mean_area if area_kind == "global" else local_area(fields)]
    if distance != "none":
        channels.append(distance_to_coast(fields, distance, DISTANCE_CLIP))
    channels.append(mask.astype(np.float64))
    if steps_input:
        channels.append(steps_channel(fields))
    out = np.stack(channels)
    assert out.shape[0] == len(names)
    return out


def land_features(distance: str, steps_input: bool = False) -> np.ndarray:
    """The raw features of a land cell just beyond the grid (for closed halos)."""
    values = [0.0, 0.0, 0.0] + ([-1.0] if distance != "none" else []) + [0.0]
    return np.array(values + ([0.0] if steps_input else []))


@dataclass
class Standardizer:
    """Per-channel mean and standard deviation of the training inputs and of the target."""

    mean: np.ndarray
    std: np.ndarray
    target_mean: float
    target_std: float

    @classmethod
    def fit(cls, inputs: Iterable[np.ndarray], targets: Iterable[np.ndarray]) -> Standardizer:
        """From raw feature arrays ``(C, ny, nx)`` (all cells) and targets (ocean cells)."""
        x = np.concatenate([a.reshape(a.shape[0], -1) for a in inputs], axis=1)
        t = np.concatenate([np.ravel(a) for a in targets])
        std = x.std(axis=1)
        t_std = float(t.std())
        return cls(x.mean(axis=1), np.where(std > 0, std, 1.0), float(t.mean()), t_std or 1.0)

    def inputs(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.mean[:, None, None]) / self.std[:, None, None]

    def land(self, distance: str, steps_input: bool = False) -> np.ndarray:
        return (land_features(distance, steps_input) - self.mean) / self.std

    def with_channels(self, count: int) -> Standardizer:
        """These statistics for ``count`` channels: new last channels as they are (mean 0,
        std 1; the M channel is O(1) already), for a network extended with inputs."""
        extra = count - self.mean.size
        if extra < 0:
            raise ValueError(f"cannot cut {self.mean.size} channels' statistics to {count}")
        return Standardizer(
            np.concatenate([self.mean, np.zeros(extra)]),
            np.concatenate([self.std, np.ones(extra)]),
            self.target_mean,
            self.target_std,
        )

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]), d["target_mean"], d["target_std"])


def baseline_gamma_squared(fields: Fields, kind: str) -> np.ndarray:
    """The local estimate a log target is relative to (NaN on land), once per Fields
    (read-only): γ from the network's target and the error model's correction of the γ
    returned both divide by it."""
    if kind not in LOG_TARGETS:
        raise ValueError(f"target must be one of {LOG_TARGETS}, got {kind!r}")
    return fields.derived(f"baseline_{kind}", lambda: _baseline_gamma_squared(fields, kind))


def _baseline_gamma_squared(fields: Fields, kind: str) -> np.ndarray:
    if kind == "log_ratio":
        return analytic_gamma_squared(fields)
    if kind == "log_lattice":
        from diffnorm.methods.lattice import lattice_gamma_squared

        return lattice_gamma_squared(fields)
    if kind == "log_images":
        from diffnorm.methods.images import images_gamma_squared

        return images_gamma_squared(fields)
    if kind == "log_images_smooth":
        return smoothed_images_gamma_squared(fields)
    if kind == "log_images_walk":
        from diffnorm.methods.images import walk_gamma_squared

        return walk_gamma_squared(fields)
    raise ValueError(f"target must be one of {TARGETS}, got {kind!r}")


def square_reduce(topology: Topology, a: np.ndarray, size: int, op: np.ufunc) -> np.ndarray:
    """``op`` (``np.add``, ``np.maximum``) of ``a`` (``(…, ny, nx)``) over the ``size × size``
    square around every cell, across the wrap and the fold (0 beyond closed edges), one
    shifted view at a time (no ``size²`` copies in memory)."""
    h = size // 2
    padded = topology.pad(a, h)
    ny, nx = a.shape[-2:]
    out = padded[..., :ny, :nx].copy()
    for k in range(1, size * size):
        j, i = divmod(k, size)
        op(out, padded[..., j : j + ny, i : i + nx], out=out)
    return out


def ocean_mean(topology: Topology, mask: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``values`` over the ocean cells of the ``size × size`` square around each cell,
    across the wrap and the fold (0 where the square holds no ocean)."""
    stacked = np.stack([mask.astype(np.float64), np.where(mask, values, 0.0)])
    sums = square_reduce(topology, stacked, size, np.add)
    return sums[1] / np.maximum(sums[0], 1.0)


def smoothed_images_gamma_squared(
    fields: Fields, size: int = SMOOTH_SIZE, weight: float = SMOOTH_WEIGHT
) -> np.ndarray:
    """``log γ²_s = (1 − w)·log γ²_images + w·mean_k(log γ²_images)`` (NaN on land), the mean
    over the ocean cells of the cell's k×k square; on the images method's box-exact cells
    (:func:`~diffnorm.methods.images.box_exact_cells`) the images value, which is exact there.

    Why: at a ragged coast each cell's straight-line box sees a different wall, and the images
    value swings from cell to cell far more than γ does; the mean of its neighbours is less
    wrong, and a network's correction to it smaller."""
    from diffnorm.methods.images import box_exact_cells, images_gamma_squared

    mask = np.asarray(fields.mask, dtype=bool)
    log = np.log(np.where(mask, images_gamma_squared(fields), 1.0))
    mean = ocean_mean(fields.topology, mask, log, size)
    blend = np.where(box_exact_cells(fields), log, (1.0 - weight) * log + weight * mean)
    return fields.topology.same_on_copies(np.where(mask, np.exp(blend), np.nan))


def raw_target(fields: Fields, gamma: np.ndarray, kind: str = "log_ratio") -> np.ndarray:
    """The quantity the network predicts, on the grid (0 on land), before standardization."""
    if kind in LOG_TARGETS:
        t = np.log(gamma**2 / baseline_gamma_squared(fields, kind))
    elif kind == "gamma":
        t = gamma
    else:
        raise ValueError(f"target must be one of {TARGETS}, got {kind!r}")
    return np.where(fields.mask, t, 0.0)


def gamma_from_target(fields: Fields, target: np.ndarray, kind: str = "log_ratio") -> np.ndarray:
    """Invert :func:`raw_target`: γ on the grid, NaN on land."""
    if kind in LOG_TARGETS:
        g = np.sqrt(baseline_gamma_squared(fields, kind) * np.exp(target))
    elif kind == "gamma":
        g = np.asarray(target, dtype=np.float64)
    else:
        raise ValueError(f"target must be one of {TARGETS}, got {kind!r}")
    return np.where(fields.mask, g, np.nan)
