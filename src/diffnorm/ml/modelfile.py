"""One self-contained model file: a trained network and all it needs to predict γ.

A model file (``torch.save`` of plain data, loaded with ``weights_only=True``) holds the
architecture's constructor arguments, the weights, the input encoding (distance map, target,
halo), the standardization statistics of the training split, the number of diffusion steps M
(or, for a network with M as an input channel, the range of M it was trained on), the range of
length scales (in cells) and cell sizes it was trained on, the training data's provenance, its
measured errors when evaluated, and the package version that wrote it.
The inputs are dimensionless (κ in cells², relative areas), so what must match is M and the
length scales in cells — those are checked; the cell sizes in km are recorded for information.
A Lightning checkpoint of :class:`~diffnorm.ml.lit.GammaModel` loads the same way, so every
command takes either.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffnorm import __version__
from diffnorm.device import pick_device
from diffnorm.fields import Fields, atomic_output
from diffnorm.ml.encoding import Encoding
from diffnorm.ml.features import LOG_TARGETS, Standardizer, gamma_from_target
from diffnorm.ml.halo import crop_wrap
from diffnorm.ml.networks import (
    PRECISIONS,
    UNet,
    build_network,
    count_parameters,
    cpu_has_bfloat16,
    for_inference,
    strip_ready,
)


def periodic_strip(net: nn.Module, fields: Fields) -> bool:
    """Whether ``net`` predicts ``fields`` as a periodic strip
    (:meth:`~diffnorm.ml.networks.UNet.forward_periodic`): a U-Net on a periodic grid whose
    width is a multiple of its pooling (else the wrap context keeps the pooling lattice), and
    whose blocks run on a strip (:func:`~diffnorm.ml.networks.strip_ready`: not a group norm)."""
    return (
        isinstance(net, UNet)
        and fields.periodic_x
        and fields.shape[1] % 2**net.levels == 0
        and strip_ready(net)
    )


FORMAT = "diffnorm-model"
# 2: M as an input (encoding.steps_input, step_range); single-M models are still written as 1,
# so that older diffnorm versions keep reading them and refuse, by version, what they cannot
FORMAT_VERSION = 2
MODEL_SUFFIX = ".pt"
MODEL_HINT = (
    "give a model file (`diffnorm export --format model`), a Lightning checkpoint of "
    "`diffnorm train` (.ckpt), or the name of a shipped model (`diffnorm models`)"
)


class ModelFileError(ValueError):
    """A file that is not a usable diffnorm model, or a model that does not fit the fields."""


class OutOfRangeWarning(UserWarning):
    """The fields lie outside what the model was trained on: expect larger errors."""


class SlowPrecisionWarning(UserWarning):
    """bfloat16 asked for on a CPU without bfloat16 arithmetic: slower than float32."""


@dataclass
class GammaNetwork:
    """A trained network ready to predict γ for any grid (see :meth:`predict`)."""

    net: nn.Module
    arch: dict[str, Any]
    encoding: Encoding
    stats: Standardizer
    steps: int
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: dict[str, Any] = field(default_factory=dict)
    name: str = "model"
    # ErrorModel.to_dict(): a per-cell |ε| estimate calibrated on held-out data (or None)
    error_model: dict[str, Any] | None = None
    # M as an input (encoding.steps_input): the smallest and largest M of its training data,
    # every even M between served (``steps`` is then the smallest)
    step_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.net.eval()
        if self.encoding.steps_input != (self.step_range is not None):
            raise ModelFileError(
                f"{self.name}: a network with M as an input needs the range of M it was "
                f"trained on, and only such a network has one (steps_input "
                f"{self.encoding.steps_input}, step_range {self.step_range})"
            )
        if self.step_range is not None:
            lo, hi = self.step_range
            if not (4 <= lo <= hi and self.steps == lo):
                raise ModelFileError(
                    f"{self.name}: step_range {self.step_range} must be (smallest, largest) "
                    f"with 4 <= smallest <= largest, and steps ({self.steps}) the smallest"
                )
        channels = self.encoding.channels
        if self.arch.get("in_channels") != len(channels):
            raise ModelFileError(
                f"{self.name}: the network takes {self.arch.get('in_channels')} input channels "
                f"but its encoding makes {len(channels)} ({', '.join(channels)}); the file is "
                "inconsistent — export it again from its checkpoint"
            )
        if self.encoding.halo != self.net.halo:
            raise ModelFileError(
                f"{self.name}: encoding halo {self.encoding.halo} != network halo {self.net.halo}"
            )

    # -- checks --------------------------------------------------------------------------------
    def serves(self, steps: int) -> bool:
        """Whether the model predicts for fields of ``steps`` diffusion steps M."""
        if self.step_range is None:
            return steps == self.steps
        # M is even (L^(1/2) = S^(M/2)): an odd M is no operator, whatever the range
        return self.step_range[0] <= steps <= self.step_range[1] and steps % 2 == 0

    @property
    def steps_served(self) -> int | list[int]:
        """M for a single-M model, ``[smallest, largest]`` for one with M as an input: what
        model cards and exported graphs' cards record."""
        return self.steps if self.step_range is None else list(self.step_range)

    @property
    def steps_label(self) -> str:
        """``10``, or ``4–20 (even)`` for a model with M as an input."""
        if self.step_range is None:
            return str(self.steps)
        return "{}–{} (even)".format(*self.step_range)

    def check_fields(self, fields: Fields, warn: bool = True) -> tuple[np.ndarray, dict]:
        """Refuse fields of an M the model does not serve; flag the cells outside what the
        model was trained on (:mod:`diffnorm.ml.domain`) and, with ``warn``, warn with the
        counts when more than 1 % are."""
        from diffnorm.ml.domain import domain_flags

        if not self.serves(fields.steps):
            raise ModelFileError(
                f"steps: the fields have M={fields.steps} but model {self.name!r} was trained "
                f"for M={self.steps_label}; use a model trained for M={fields.steps} (diffnorm "
                "models lists them) or an exact method"
            )
        flags, report = domain_flags(fields, self.data, self.encoding.halo)
        n = max(fields.n_ocean, 1)
        counted = {k: v for k, v in report.items() if isinstance(v, int) and v}
        if warn and sum(counted.values()) > 0.01 * n:
            parts = ", ".join(f"{k} {v}" for k, v in counted.items())
            lo, hi = self.data.get("d_cells", (float("nan"),) * 2)
            narrow = (
                "; wrap: the periodic grid is narrower than those cells' kernels reach, which "
                "no network can see"
                if counted.get("wrap")
                else ""
            )
            warnings.warn(
                f"model {self.name!r}: cells outside the trained range of its data (of "
                f"{fields.n_ocean} ocean cells: {parts}; trained D {lo:.2g}–{hi:.2g} cells"
                f"{narrow}); their γ is less reliable: check them with --verify, or use an "
                "exact method",
                OutOfRangeWarning,
                stacklevel=3,
            )
        return flags, report

    # -- prediction ----------------------------------------------------------------------------
    @functools.cached_property
    def inference_net(self) -> nn.Module:
        """:func:`~diffnorm.ml.networks.for_inference` of the network: what predictions run."""
        return for_inference(self.net)

    @functools.cached_property
    def _bfloat16_net(self) -> nn.Module:
        return for_inference(self.net, "bfloat16")

    def wrap_context(self, periodic_x: bool) -> tuple[int, int]:
        """Wrapped columns the network reads beyond its halo, west and east, on a periodic grid
        (``(0, 0)`` on a closed one, or for a network whose halo is all it reads)."""
        return tuple(getattr(self.net, "wrap_context", (0, 0))) if periodic_x else (0, 0)

    @torch.no_grad()
    def predict_target(
        self,
        fields: Fields,
        device: str | torch.device | None = "auto",
        tile: int | None = None,
        symmetries: int = 1,
        precision: str = "float32",
    ) -> np.ndarray:
        """The network's target (``log(γ²/γ²_analytic)`` or γ) on the grid, float64.

        ``tile``: predict ``tile × tile`` blocks one at a time, each with its halo cut from the
        padded grid, to bound memory on large grids; identical to one pass for networks with
        ``exact_tiling``. ``symmetries``: the mean of the target over the first that many of
        the grid's symmetries (:func:`diffnorm.augment.symmetries`: flips, and transposes on
        closed grids), each predicted on the transformed grid and mapped back; γ commutes with
        them exactly, the network only approximately, so the mean cancels part of its error.
        ``precision``: ``float32``, or ``bfloat16`` (autocast, the input block in float32:
        :func:`~diffnorm.ml.networks.for_inference`): a ~2.2× faster forward pass where the
        hardware has bfloat16 arithmetic (ORCA1 0.113 → 0.051 s on a 2-core CPU with AMX;
        AVX-512 BF16 CPUs, GPUs), a slower one where it has not;
        on the unseen grids of ``bench_generalization`` it changed the mean |ε| by +0.4 %
        (ORCA1), +1.6 % (North Atlantic) and −0.1 % (Table 8), the maxima by under 1 %.
        """
        dev = self.check_options(fields, device, symmetries, precision)
        if symmetries != 1:
            return self._symmetry_mean(fields, device, tile, symmetries, precision)
        low = precision == "bfloat16"
        if low and dev.type == "cpu" and not cpu_has_bfloat16():
            warnings.warn(
                "precision bfloat16: this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX), "
                "so it is emulated and slower than float32 (3.7x on ORCA1 on an AVX2 CPU); use "
                "--precision float32",
                SlowPrecisionWarning,
                stacklevel=2,
            )
        net = (self._bfloat16_net if low else self.inference_net).to(dev)
        strip = (tile is None or tile >= max(fields.shape)) and periodic_strip(net, fields)
        wrap = (0, 0) if strip else self.wrap_context(fields.periodic_x)
        x = self.encoding.inputs(fields, self.stats, wrap).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=low):
            if strip:  # the halo rows and the grid's own columns
                h = self.encoding.halo
                pred = net.forward_periodic(x[None, :, :, h:-h])[0, 0].float()
            else:
                pred = self._forward(net, x, fields.shape, tile, dev, wrap[0])
        t = pred.double().cpu().numpy() * self.stats.target_std + self.stats.target_mean
        if self.target in LOG_TARGETS:
            t = t * self.encoding.correction_weight(fields)  # 1 without gate or exact cells
        return fields.topology.same_on_copies(t)  # the network sees a copy from its own side

    def _forward(
        self,
        net: nn.Module,
        x: torch.Tensor,
        shape: tuple[int, int],
        tile: int | None,
        dev,
        west: int = 0,
    ) -> torch.Tensor:
        """The network on the padded inputs ``x``, whole or by tiles: ``(ny, nx)``; ``west``
        columns of wrap context before the halo (none with tiles)."""
        ny, nx = shape
        h = self.encoding.halo
        if tile is None or tile >= max(ny, nx):
            pred = crop_wrap(net(x[None])[0, 0], (west, 0), nx)
        else:
            if tile < 1:
                raise ValueError(f"tile must be >= 1 cell, got {tile}")
            if not getattr(self.net, "exact_tiling", False):
                raise ModelFileError(
                    f"model {self.name!r} ({self.arch['arch']}) sees the whole grid; tiles "
                    "would change its prediction: predict without --tile"
                )
            pred = torch.empty((ny, nx), dtype=torch.float32, device=dev)
            for j in range(0, ny, tile):
                for i in range(0, nx, tile):
                    j1, i1 = min(j + tile, ny), min(i + tile, nx)
                    patch = x[:, j : j1 + 2 * h, i : i1 + 2 * h]
                    pred[j:j1, i:i1] = net(patch[None])[0, 0]
        return pred.float()

    @staticmethod
    def check_options(
        fields: Fields,
        device: str | torch.device | None = "auto",
        symmetries: int = 1,
        precision: str = "float32",
    ) -> torch.device:
        """The device :meth:`predict_target` would run on, after refusing, before any work,
        a precision, a count of symmetries or a device it cannot take."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if symmetries != 1:
            from diffnorm.augment import symmetries as group_of

            group = group_of(fields.topology)
            if not 1 <= symmetries <= len(group):
                raise ValueError(
                    f"symmetries: this grid ({fields.topology.describe()}) has {len(group)} "
                    f"symmetries the network can be averaged over, got {symmetries}; use 1 "
                    f"to {len(group)}"
                )
        return pick_device(device)

    def _symmetry_mean(
        self,
        fields: Fields,
        device: str | torch.device | None,
        tile: int | None,
        count: int,
        precision: str,
    ) -> np.ndarray:
        from diffnorm.augment import symmetries

        group = symmetries(fields.topology)
        total = np.zeros(fields.shape)
        for t in group[:count]:
            total += t.restore_cells(
                self.predict_target(t.fields(fields), device, tile, precision=precision)
            )
        return total / count

    def error_estimate(
        self, fields: Fields, correction: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The calibrated per-cell estimate of |ε| (NaN on land), if the model has one;
        ``correction``: the predicted target of a log-target model (``log(γ̂²/γ²_baseline)``),
        which sharpens it (:class:`~diffnorm.ml.calibration.ErrorModel`)."""
        if self.error_model is None:
            return None
        from diffnorm.ml.calibration import ErrorModel

        return ErrorModel.from_dict(self.error_model).estimate(fields, correction)

    def error_floor(self, fields: Fields) -> np.ndarray | None:
        """The least :meth:`error_estimate` can be on each cell, whatever the network
        predicts (NaN on land), without running it; None without an error model."""
        if self.error_model is None:
            return None
        from diffnorm.ml.calibration import ErrorModel

        least = self.target in LOG_TARGETS  # other targets' estimate does not read |t|
        return ErrorModel.from_dict(self.error_model).estimate(fields, least=least)

    @property
    def exact_above(self) -> float | None:
        """The τ for ``cnn --exact-above auto``: the one its calibration picked
        (:func:`~diffnorm.ml.calibration.served_threshold`), else, for files calibrated before
        it, ``SUGGESTED_EXACT_ABOVE``; None without an error model."""
        if self.error_model is None:
            return None
        from diffnorm.subgrid import SUGGESTED_EXACT_ABOVE

        tau = self.error_model.get("exact_above")
        return SUGGESTED_EXACT_ABOVE if tau is None else float(tau)

    def predict(
        self,
        fields: Fields,
        device: str | torch.device | None = "auto",
        tile: int | None = None,
    ) -> np.ndarray:
        """γ on the grid (NaN on land) by one forward pass (or one per tile)."""
        self.check_fields(fields)
        return gamma_from_target(fields, self.predict_target(fields, device, tile), self.target)

    @property
    def target(self) -> str:
        return self.encoding.target

    @property
    def parameters(self) -> int:
        return count_parameters(self.net)

    # -- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if self.step_range is not None else 1,
            "name": self.name,
            "arch": dict(self.arch),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "encoding": {
                "distance": self.encoding.distance,
                "target": self.encoding.target,
                "halo": self.encoding.halo,
                "area": self.encoding.area,
                "gate": list(self.encoding.gate) if self.encoding.gate else None,
                "steps_input": self.encoding.steps_input,
                "channels": self.encoding.channels,
            },
            "standardizer": self.stats.to_dict(),
            "steps": int(self.steps),
            "step_range": list(self.step_range) if self.step_range else None,
            "data": self.data,
            "metrics": self.metrics,
            "created": self.created,
            "error_model": self.error_model,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model file atomically (:func:`~diffnorm.fields.atomic_output`)."""
        with atomic_output(path, example=f"{self.name}{MODEL_SUFFIX}") as tmp:
            torch.save(self.to_dict(), tmp)
        return Path(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model") -> GammaNetwork:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelFileError(f"{source}: not a diffnorm model file")
        if d.get("format_version") not in range(1, FORMAT_VERSION + 1):
            raise ModelFileError(
                f"{source}: model file format {d.get('format_version')} but this diffnorm "
                f"({__version__}) reads formats 1 to {FORMAT_VERSION}; re-export it with this "
                "version, or update diffnorm"
            )
        enc = d["encoding"]
        net = build_network(**d["arch"])
        net.load_state_dict(d["state_dict"])
        return cls(
            net=net,
            arch=d["arch"],
            encoding=Encoding(
                enc["distance"],
                enc["target"],
                enc["halo"],
                enc.get("area", "global"),
                tuple(enc["gate"]) if enc.get("gate") else None,
                bool(enc.get("steps_input", False)),
            ),
            stats=Standardizer.from_dict(d["standardizer"]),
            steps=int(d["steps"]),
            step_range=tuple(d["step_range"]) if d.get("step_range") else None,
            data=d.get("data", {}),
            metrics=d.get("metrics", {}),
            created=d.get("created", {}),
            name=d.get("name", source),
            error_model=d.get("error_model"),
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str | None = None) -> GammaNetwork:
        from diffnorm.ml.lit import GammaModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning/jsonargparse deprecation chatter
            # the weights are in the checkpoint: do not reload a fine-tuning source, which
            # may have moved or changed since (its name stays in data_info)
            try:
                model = GammaModel.load_from_checkpoint(
                    path, map_location="cpu", weights_only=False, init_from=None
                )
            except Exception as exc:  # a truncated file, a model file renamed .ckpt, …
                # its first sentence: torch goes on with advice on issue trackers
                first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
                raise ModelFileError(
                    f"{path}: not a Lightning checkpoint of `diffnorm train` that this diffnorm "
                    f"reads ({type(exc).__name__}: {first}); {MODEL_HINT}"
                ) from None
        if model.stats is None:
            raise ModelFileError(f"{path}: checkpoint holds no standardization statistics")
        h = model.hparams
        steps = model.data_info.get("steps") or []
        steps_input = bool(h.get("steps_input", False))
        if not steps or (len(steps) != 1 and not steps_input):
            raise ModelFileError(
                f"{path}: the checkpoint does not record one number of diffusion steps M "
                f"(found {steps}): train a network for several M with steps_input, or one "
                "whose data has one M"
            )
        area = h.get("area", "global")
        return cls(
            net=model.net,
            arch=model.arch,
            encoding=Encoding(h.distance, h.target, model.halo, area, steps_input=steps_input),
            stats=model.stats,
            steps=min(steps),
            step_range=(min(steps), max(steps)) if steps_input else None,
            data=dict(model.data_info),
            created={
                "package_version": __version__,
                "from_checkpoint": Path(path).name,
                "date": _dt.date.today().isoformat(),
                "hyperparameters": {k: v for k, v in dict(h).items() if not k.startswith("_")},
            },
            name=name or Path(path).stem,
        )

    @classmethod
    def load(cls, path: str | Path) -> GammaNetwork:
        """A model file, a Lightning checkpoint (``.ckpt``) or a shipped model's name."""
        path = model_path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such model; {MODEL_HINT}")
        if path.suffix == ".ckpt":
            return cls.from_checkpoint(path)
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            # the type alone: torch's own text advises loading untrusted pickles
            raise ModelFileError(
                f"{path}: not a readable diffnorm model file ({type(exc).__name__}); {MODEL_HINT}"
            ) from None
        return cls.from_dict(d, str(path))


def model_path(model: str | Path | None) -> Path:
    """The file of ``model``: itself, or a shipped model's file when it is a bare name that is
    no file here (``None``: the default; an unknown name raises, listing the shipped ones)."""
    from diffnorm.models import shipped_model_path

    path = Path(model) if model is not None else None
    if path is None or (not path.exists() and path.suffix == "" and len(path.parts) == 1):
        return shipped_model_path(None if model is None else str(model))
    return path


def _lineage(net: GammaNetwork) -> str | None:
    """The shipped model this one was fine-tuned from, if another one (a local checkpoint's
    path, or an earlier version of itself, says nothing to a user: the card's note does)."""
    source = net.data.get("fine_tuned_from")
    if not source:
        return None
    from diffnorm.models import shipped_models

    name = Path(str(source)).stem
    return name if name in shipped_models() and name != net.name else None


def describe(net: GammaNetwork) -> dict[str, Any]:
    """A short card: what the model is, what it was trained on, how well it did."""
    d = net.data
    return {
        "name": net.name,
        "arch": net.arch["arch"],
        "parameters": net.parameters,
        "steps": net.steps_served,
        "target": net.target,
        "distance": net.encoding.distance,
        "d_cells": d.get("d_cells"),
        "trained_on": ", ".join(d.get("shapes", [])) or "?",
        "train_samples": d.get("train_samples"),
        "fine_tuned_from": _lineage(net),
        "note": net.created.get("note"),
        "metrics": net.metrics,
    }


# room for every shipped model and a few of the user's: resolve_model(None, fields) reads all
# the shipped ones on each call, and with more of them than this an LRU cache never hits (the
# ninth shipped model made each such call load 9 files, 0.3 s)
@functools.lru_cache(maxsize=32)
def _cached(path: str, mtime: float) -> GammaNetwork:
    return GammaNetwork.load(path)


def resolve_model(
    model: str | Path | GammaNetwork | None,
    fields: Fields | None = None,
    calibrated: bool = False,
) -> GammaNetwork:
    """A model given as an object, a path, or the name of a shipped model; files are loaded
    once and cached. ``None``: the shipped model for the fields (:func:`closest_shipped`; the
    package's default when no fields are given), among those with an error model when
    ``calibrated`` (what ``cnn --exact-above`` chooses its cells by)."""
    if isinstance(model, GammaNetwork):
        return model
    if model is not None and not isinstance(model, str | os.PathLike):
        raise ModelFileError(
            f"model must be a shipped model's name, a model file's path or a loaded "
            f"GammaNetwork, got {type(model).__name__} {model!r} (`diffnorm models` lists names)"
        )
    from diffnorm.models import shipped_model_path, shipped_models

    if model is None and fields is not None:
        from diffnorm.models import DEFAULT

        shipped = [_load(shipped_model_path(n)) for n in shipped_models()]
        if calibrated:
            shipped = [m for m in shipped if m.error_model is not None]
        return closest_shipped(fields, shipped, DEFAULT)
    return _load(model_path(model))


def _load(path: Path) -> GammaNetwork:
    if not path.exists():
        return GammaNetwork.load(path)  # raises with the hint
    return _cached(str(path.resolve()), path.stat().st_mtime)


def closest_shipped(
    fields: Fields, models: list[GammaNetwork], default: str | None = None
) -> GammaNetwork:
    """Among models trained for the fields' M (those serving a range of M only when none
    is): one trained on this very grid (its shape and north fold
    among the training ones) if there is one; else, on a folded grid, one whose training data
    had that fold (the ``default`` first, ``windows-smooth-gpu2-m10``, which has); else the
    ``default`` (the general model, trained on geometry windows), else any; ties go to the
    nearest training cell size."""
    serving = [m for m in models if m.serves(fields.steps)]
    # a model trained for this very M beats one that serves a range (the default at M = 10)
    same_m = [m for m in serving if m.step_range is None] or serving
    if not same_m:
        have = ", ".join(sorted({m.steps_label for m in models})) or "none"
        raise ModelFileError(
            f"steps: no shipped model for M={fields.steps} (shipped: M={have}); train one "
            "(diffnorm train) or use an exact method"
        )
    size = float(np.median(np.sqrt(fields.area[fields.mask]))) / 1e3

    def distance(m: GammaNetwork) -> float:
        lo, hi = m.data.get("cell_size_km", (size, size))
        return abs(np.log(size / np.sqrt(lo * hi)))

    shape = "{}x{}".format(*fields.shape)
    # the same grid: its shape and its fold (models from before folds saw none)
    home = [
        m
        for m in same_m
        if shape in m.data.get("shapes", [])
        and fields.north_fold in m.data.get("north_fold", ["none"])
    ]
    fold = fields.north_fold
    seen_fold = [m for m in same_m if fold != "none" and fold in m.data.get("north_fold", [])]
    general = [m for m in same_m if m.name == default]
    # a grid of the training windows' own shape (64×64) is "home" to every window model: the
    # default first there too, not whichever ancestor is nearest in cell size
    pool = (
        [m for m in home if m in general]
        or home
        or [m for m in seen_fold if m in general]
        or seen_fold
        or general
        or same_m
    )
    return min(pool, key=distance)
