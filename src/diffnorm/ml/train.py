"""``diffnorm train``: LightningCLI over :class:`GammaModel` and :class:`TrainingDataModule`.

    diffnorm train fit --config configs/train/small_residual.yaml
    diffnorm train fit --config ... --ckpt_path runs/x/checkpoints/last.ckpt   # resume

The data's encoding (distance map, target) and halo follow the model's, so a config names
them once. CSV and TensorBoard loggers, checkpoints on ``val_max_abs`` plus ``last`` are the
defaults, with channels-last weights on every device and bf16 mixed precision on GPU.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from diffnorm.ml.data import TrainingDataModule
from diffnorm.ml.lit import GammaModel
from diffnorm.ml.networks import residual_halo


def network_halo(arch: str, blocks: int, layers_per_block: int, dilation: int, unet_halo: int):
    return unet_halo if arch == "unet" else residual_halo(blocks, layers_per_block, dilation)


class ChannelsLast(Callback):
    """Channels-last weights: the fast layout for convolutions on tensor-core GPUs and for
    oneDNN on CPUs. Measured here (the shipped U-Net fitting 48 windows for 40 epochs, one
    thread): 172 s contiguous, 128 s channels-last, the same loss to 4 digits."""

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.to(memory_format=torch.channels_last)


class TrainOptionError(ValueError):
    """A model or data option the classes refuse (an unknown architecture, a width of 0, a
    fine-tuning source that does not exist or does not fit)."""


class DiffnormCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.distance", "data.distance")
        parser.link_arguments("model.area", "data.area")
        parser.link_arguments("model.target", "data.target")
        parser.link_arguments("model.steps_input", "data.steps_input")
        parser.link_arguments("model.init_from", "data.stats_from")
        parser.link_arguments(
            (
                "model.arch",
                "model.blocks",
                "model.layers_per_block",
                "model.dilation",
                "model.unet_halo",
            ),
            "data.halo",
            compute_fn=network_halo,
        )

    def instantiate_classes(self) -> None:
        # the classes check their options when built: their errors are the user's, not bugs
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError) as exc:  # a TypeError is a bug: its traceback
            raise TrainOptionError(str(exc)) from exc

    def before_fit(self) -> None:
        # on one device the windows are read and encoded, in forked processes, before the
        # trainer takes it (a GPU's context) and starts its clock; Lightning's own setup call
        # then finds them ready (with several, ddp_spawn would pickle them to every process)
        try:
            self.datamodule.check_devices(self.trainer.world_size)
        except ValueError as exc:  # the user's option: a clean error, not a traceback
            raise TrainOptionError(str(exc)) from exc
        if self.trainer.world_size == 1:
            self.datamodule.setup("fit")

    def _run_subcommand(self, subcommand: str) -> None:
        existing = log_dirs(self.trainer)  # a logger given a version may reuse a trained run's
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            remove_untrained_log_dirs(self.trainer, keep=existing)
            raise

    def _instantiate_trainer(self, config: dict, callbacks: list):
        # loggers go where the run goes: default_root_dir is only known after parsing
        root = config.get("default_root_dir") or "runs"
        if config.get("logger") in (None, True):
            config["logger"] = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tb")]
        return super()._instantiate_trainer(config, callbacks)


def log_dirs(trainer) -> set[Path]:
    """The CSV and TensorBoard loggers' ``version_N`` folders that exist now (reading a
    logger's ``log_dir`` creates nothing)."""
    if trainer is None:
        return set()
    folders = (
        Path(logger.log_dir)
        for logger in trainer.loggers
        if isinstance(logger, CSVLogger | TensorBoardLogger)
    )
    return {folder for folder in folders if folder.is_dir()}


def remove_untrained_log_dirs(trainer, keep: set[Path]) -> None:
    """After a run that failed before its first step (a data folder without training
    samples, a model that refuses the data's encoding): remove the CSV and TensorBoard
    ``version_N`` folders its loggers made, which would otherwise sit, empty, between the
    real runs (and the logger's ``csv``/``tb`` folder, once empty). Folders in ``keep``
    (there before the run), folders holding a checkpoint, and every folder of a run that
    trained at least one step are left alone."""
    if trainer is None or trainer.global_step > 0 or trainer.global_rank != 0:
        return
    for folder in log_dirs(trainer) - keep:
        if not any(folder.rglob("*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)  # never hide the run's own error
            with contextlib.suppress(OSError):  # the logger's csv/ or tb/, if now empty
                folder.parent.rmdir()


def trainer_defaults(root: str = "runs", checkpoint_dir: str | None = None) -> dict:
    """What every diffnorm training uses: checkpoints on ``val_max_abs`` plus ``last`` (in
    ``checkpoint_dir``, else the logger's folder), learning-rate logging, channels-last
    weights, bf16 mixed precision on GPU. Not on a CPU, even one with native bfloat16: it
    fitted 48 windows as float32 did in 0.58× the time, but one paired fine-tuning run on the
    full window sets ended at a 16 % higher validation loss (``--trainer.precision
    bf16-mixed`` opts in)."""
    gpu = torch.cuda.is_available()
    return {
        "default_root_dir": root,
        "callbacks": [
            ModelCheckpoint(
                dirpath=checkpoint_dir,
                monitor="val_max_abs",
                mode="min",
                save_last=True,
                filename="best",
            ),
            LearningRateMonitor(),
            ChannelsLast(),
        ],
        "precision": "bf16-mixed" if gpu else "32-true",
        "max_epochs": 100,
        "log_every_n_steps": 1,
    }


def main(args: list[str] | None = None) -> DiffnormCLI:
    return DiffnormCLI(
        GammaModel,
        TrainingDataModule,
        args=args,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        # its usage lines and tips name the command a user types, not argv[0]'s "diffnorm"
        parser_kwargs={"prog": "diffnorm train"},
    )


if __name__ == "__main__":  # pragma: no cover
    main()
