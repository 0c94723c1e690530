"""Training with Lightning: the loss ``E[ε²]`` over ocean cells and the metrics of DESIGN §5.

With the default target ``t = log(γ²/γ²_analytic)`` the relative error is simply
``ε = exp(t̂ − t) − 1``; with the study's target (standardized γ) ``ε = γ̂²/γ² − 1``. The loss
is the mean of ``ε²`` over ocean cells, exactly (no constant for land cells), or the MSE on
the standardized target. ``tail_scale = τ`` adds ``ε⁴/τ²`` to ``ε²``: cells with ``|ε| > τ``
weigh more, which pulls in the coastal tail (Q99.99, max) that ``E[ε²]`` averages away. That
term is steep while the network is still far off, so the model then clips the gradient norm
at ``TAIL_CLIP`` unless the trainer sets its own clipping.
"""

from __future__ import annotations

import math
from functools import partial

import lightning
import torch

from diffnorm.ml.deadline import Deadline
from diffnorm.ml.features import AREAS, DISTANCES, LOG_TARGETS, TARGETS, Standardizer
from diffnorm.ml.networks import build_network, first_conv

LOSSES = ("eps2", "mse")
SCHEDULES = ("cosine", "constant")
TAIL_CLIP = 1.0  # gradient norm with the tail loss (unless the trainer sets gradient_clip_val)


def architecture(
    arch: str,
    in_channels: int,
    width: int,
    blocks: int,
    layers_per_block: int,
    activation: str,
    norm: str,
    skip: str,
    dilation: int,
    levels: int,
    halo: int,
) -> dict:
    """The network's constructor arguments, as stored in checkpoints and model files."""
    if arch == "unet":
        kw = {"width": width, "levels": levels, "halo": halo}
    else:
        kw = {"width": width, "blocks": blocks, "layers_per_block": layers_per_block}
        kw |= {"skip": skip, "dilation": dilation}
    return {"arch": arch, "in_channels": in_channels, "activation": activation, "norm": norm, **kw}


def _cosine(steps: int, clock: Deadline | None, step: int) -> float:
    """The cosine factor ``(1 + cos πp)/2`` at progress ``p``: the share of ``steps`` taken,
    or, with a :class:`~diffnorm.ml.deadline.Deadline`, the share of its time spent if larger."""
    p = max(step / steps, clock.share if clock is not None else 0.0)
    return 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0)))


class GammaModel(lightning.LightningModule):
    def __init__(
        self,
        distance: str = "manhattan",
        target: str = "log_ratio",
        loss: str = "eps2",
        width: int = 64,
        blocks: int = 4,
        layers_per_block: int = 2,
        activation: str = "elu",
        norm: str = "batch",
        skip: str = "add",
        dilation: int = 1,
        arch: str = "residual",
        levels: int = 3,
        unet_halo: int = 8,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: str = "cosine",
        init_from: str | None = None,
        tail_scale: float | None = None,
        area: str = "global",
        hard_weight: float = 0.0,
        steps_input: bool = False,
    ):
        """``arch="residual"`` uses width/blocks/layers_per_block/skip/dilation;
        ``arch="unet"`` uses width/levels/unet_halo. ``schedule="cosine"`` anneals the learning
        rate to zero over the whole run (per optimizer step), or, with a
        :class:`~diffnorm.ml.deadline.Deadline`, by its clock if that ends first.
        ``init_from``: a model file, checkpoint or shipped model's name of the same
        architecture to fine-tune (its weights; the data module takes its standardization
        statistics, see ``TrainingDataModule(stats_from=…)``).
        ``tail_scale``: τ of the loss ``E[ε² + ε⁴/τ²]`` (``loss="eps2"`` only; None: ``E[ε²]``).
        ``area``: the area channel, ``global`` or ``local`` (see :mod:`diffnorm.ml.features`).
        ``hard_weight``: cells near the coast or in passages
        (:func:`diffnorm.ml.encoding.hard_cells`) weigh ``1 + hard_weight`` in the loss.
        ``steps_input``: M is an input channel (``log(M/10)``), for data with several M; a
        single-M ``init_from`` network gets it with zero weights (it starts as it was)."""
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        for name, value, allowed in (
            ("target", target, TARGETS),
            ("distance", distance, DISTANCES),
            ("area", area, AREAS),
        ):
            if value not in allowed:  # the data module would only find out after loading
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if tail_scale is not None and (loss != "eps2" or not tail_scale > 0):
            raise ValueError(
                f"tail_scale must be > 0 and needs loss='eps2', got {tail_scale} with {loss!r}"
            )
        self.save_hyperparameters()
        in_channels = 4 + (distance != "none") + bool(steps_input)
        self.arch = architecture(
            arch,
            in_channels,
            width,
            blocks,
            layers_per_block,
            activation,
            norm,
            skip,
            dilation,
            levels,
            unet_halo,
        )
        self.net = build_network(**self.arch)
        self.stats: Standardizer | None = None
        self.data_info: dict = {}
        if init_from:
            self._init_from(init_from)

    def _init_from(self, path: str) -> None:
        from diffnorm.ml.modelfile import resolve_model

        start = resolve_model(path)  # a file, a checkpoint or a shipped model's name
        extend = self.hparams.steps_input and not start.encoding.steps_input
        want = dict(self.arch, in_channels=self.arch["in_channels"] - 1) if extend else self.arch
        if start.arch != want:
            raise ValueError(
                f"init_from {path}: its network {start.arch} is not this model's {self.arch}; "
                "set the model options to the pretrained ones"
            )
        state = start.net.state_dict()
        if extend:  # the M channel's first-layer weights start at zero
            first = first_conv(self.net)
            key = next(n for n, p in self.net.named_parameters() if p is first.weight)
            w = torch.zeros_like(first.weight)
            w[:, :-1] = state[key]
            state[key] = w
        self.net.load_state_dict(state)

    @property
    def halo(self) -> int:
        return self.net.halo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]

    # -- errors ------------------------------------------------------------------------------
    def relative_error(self, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        """``ε`` on every cell (meaningful on ocean cells only)."""
        s = self.stats
        t_hat = pred.double() * s.target_std + s.target_mean
        if self.hparams.target in LOG_TARGETS:
            t = batch["target"].double() * s.target_std + s.target_mean
            return torch.expm1(t_hat - t)
        return (t_hat / batch["gamma"]) ** 2 - 1.0

    def _loss(self, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        return self._window_losses(pred, batch)[0]

    def _window_losses(self, pred: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's loss and each window's own (the same average over its cells alone)."""
        mask = batch["mask"]
        if not mask.any():  # a batch of land-only crops: nothing to learn, no NaN
            zero = pred.sum() * 0.0
            return zero, torch.zeros(pred.shape[0], dtype=pred.dtype, device=pred.device)
        if self.hparams.loss == "eps2":
            # land cells get their target: ε = 0 there, and no inf/NaN reaches the gradient
            cell = self.relative_error(torch.where(mask, pred, batch["target"]), batch) ** 2
            if self.hparams.tail_scale is not None:
                cell = cell + cell**2 / self.hparams.tail_scale**2
        else:
            cell = (pred - batch["target"]).double() ** 2
        weight = mask.to(cell.dtype)  # land: weight 0 on a finite cell loss
        if self.hparams.loss == "eps2" and self.hparams.hard_weight and "hard" in batch:
            weight = weight * (1.0 + self.hparams.hard_weight * batch["hard"].to(cell.dtype))
        total = (weight * cell).sum() / weight.sum()
        dims = tuple(range(1, cell.ndim))
        per = (weight * cell).sum(dims) / weight.sum(dims).clamp_min(1e-12)
        return total.float(), per.detach()

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "stats", None) is not None:
            enc = dm.enc
            h = self.hparams
            ours = (h.distance, h.target, h.area, bool(h.get("steps_input", False)))
            if (enc.distance, enc.target, enc.area, enc.steps_input) != ours:
                raise ValueError(
                    f"data encodes distance={enc.distance!r}, target={enc.target!r}, "
                    f"area={enc.area!r}, steps_input={enc.steps_input} but the model expects "
                    f"{ours[0]!r}, {ours[1]!r}, {ours[2]!r}, steps_input={ours[3]}"
                )
            if enc.halo != self.halo:
                raise ValueError(f"data halo {enc.halo} != network halo {self.halo}")
            steps = getattr(dm, "info", {}).get("steps") or []
            if len(steps) > 1 and not enc.steps_input:
                raise ValueError(
                    f"the training data hold several M ({steps}) but the network does not take "
                    "M as an input: set model.steps_input true, or train on one M"
                )
            self.stats = dm.stats
            self.data_info = dict(getattr(dm, "info", {}))
            if self.hparams.init_from:
                self.data_info["fine_tuned_from"] = str(self.hparams.init_from)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, per_window = self._window_losses(self(batch["x"]), batch)
        sampler = getattr(getattr(self.trainer, "datamodule", None), "priority_sampler", None)
        if sampler is not None and "index" in batch:
            index, scored = batch["index"], batch["mask"].flatten(1).any(1)
            if self.trainer.world_size > 1:  # every rank's sampler keeps every window's score
                index, per_window, scored = (
                    self.all_gather(t).flatten() for t in (index, per_window, scored)
                )
            sampler.update(index[scored], per_window[scored])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        return loss

    def _eval_step(self, batch: dict, prefix: str) -> None:
        pred = self(batch["x"])
        eps = self.relative_error(pred, batch)[batch["mask"]].abs()
        n = batch["x"].shape[0]
        self.log(f"{prefix}_loss", self._loss(pred, batch), batch_size=n, sync_dist=True)
        self.log(f"{prefix}_mean_abs", eps.mean().float(), batch_size=n, sync_dist=True)
        self.log(f"{prefix}_rmse", eps.pow(2).mean().sqrt().float(), batch_size=n, sync_dist=True)
        q = torch.quantile(eps.float(), 0.9999) if eps.numel() < 2**24 else eps.max()
        self.log(f"{prefix}_q9999", q.float(), batch_size=n, sync_dist=True)
        self.log(f"{prefix}_max_abs", eps.max().float(), batch_size=n, sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        if gradient_clip_val is None and self.hparams.tail_scale is not None:
            gradient_clip_val, gradient_clip_algorithm = TAIL_CLIP, "norm"
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.schedule == "constant":
            return opt
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        clock = next(
            (c for c in self.trainer.callbacks if isinstance(c, Deadline) and c.anneal), None
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(_cosine, steps, clock))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.stats is not None:
            checkpoint["diffnorm_standardizer"] = self.stats.to_dict()
        checkpoint["diffnorm_data"] = self.data_info

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for state in checkpoint.get("lr_schedulers", []):  # a CosineAnnealingLR's state (older
            state.setdefault("lr_lambdas", [None])  # runs): the LambdaLR goes on, same curve
        if "diffnorm_standardizer" in checkpoint:
            self.stats = Standardizer.from_dict(checkpoint["diffnorm_standardizer"])
        self.data_info = checkpoint.get("diffnorm_data", {})
