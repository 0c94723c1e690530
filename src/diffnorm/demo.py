"""``diffnorm demo``: the whole pipeline on a small grid, on a laptop CPU.

fields → exact γ (certified selected inversion) → dataset → training → model file → evaluation
of the network against randomization (N = 10², 10³, 10⁴) and the analytic formula on test samples
never seen in training. Every stage resumes: a killed demo run again picks up its dataset and
its last training checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from diffnorm.data import generate
from diffnorm.data.config import config_from_dict

DATA = {
    "grid": {"name": "latlon", "resolution": 4.0, "polar_cap": 80.0},
    "steps": 10,
    "parameters": {"d_min": 1.5, "d_max": 6.0, "correlation_cells": 6.0},
    "splits": {"train": 64, "val": 8, "test": 16},
    "method": "selinv",
    "tolerance": 1e-6,
    "seed": 0,
}
MODEL = {
    "arch": "unet",
    "width": 24,
    "levels": 3,
    "unet_halo": 16,
    "lr": 2e-3,
    "target": "log_lattice",
    "tail_scale": 0.1,
}
EPOCHS = 100
BATCH = 4
# transform half of the draws: full augmentation transfers best to other coastlines but
# slows the fit of this grid, none fits it best and transfers worst (small_cpu10.yaml)
AUGMENT = 0.5
SAMPLES = (100, 1000, 10000)

# --quick: the same path on an 8° grid with a narrow network, for CI and a first look
QUICK_DATA = {
    **DATA,
    "grid": {"name": "latlon", "resolution": 8.0, "polar_cap": 80.0},
    "splits": {"train": 12, "val": 2, "test": 4},
}
QUICK_MODEL = {"width": 16, "blocks": 2, "layers_per_block": 2, "lr": 3e-3}
QUICK_EPOCHS = 6
QUICK_SAMPLES = (100, 1000)


class EpochProgress(Callback):
    """Reports finished epochs to a ``progress(done, total)``."""

    def __init__(self, progress, total: int):
        self.progress, self.total = progress, total

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.progress(trainer.current_epoch + 1, self.total)


def train(
    data_dir: Path, run_dir: Path, model_kw: dict, epochs: int, progress=None, seed: int = 0
) -> Path:
    """Fit (or resume) the network; returns the best checkpoint on ``val_max_abs``."""
    import lightning
    from lightning.pytorch.loggers import CSVLogger

    from diffnorm.ml.data import TrainingDataModule
    from diffnorm.ml.lit import GammaModel
    from diffnorm.ml.train import trainer_defaults

    lightning.seed_everything(seed, verbose=False)
    model = GammaModel(**model_kw)
    h = model.hparams
    dm = TrainingDataModule(
        str(data_dir), h.distance, h.target, model.halo, batch_size=BATCH, augment=AUGMENT
    )
    config = trainer_defaults(str(run_dir), str(run_dir / "checkpoints"))
    ckpt = config["callbacks"][0]
    if progress:
        config["callbacks"].append(EpochProgress(progress, epochs))
    trainer = lightning.Trainer(
        **config | {"max_epochs": epochs},
        accelerator="auto",
        devices=1,
        logger=CSVLogger(run_dir, name="csv"),  # a resumed run logs into a new version
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    trainer.fit(model, dm, ckpt_path=last if last.exists() else None)
    return Path(ckpt.best_model_path or last)


def plot_training_curve(run_dir: Path, path: Path) -> Path:
    """Training loss and validation errors against the step, over every (resumed) run."""
    from diffnorm.plots import _pyplot

    rows = []
    for metrics_csv in sorted(run_dir.glob("csv/version_*/metrics.csv")):
        with metrics_csv.open() as fh:
            rows += list(csv.DictReader(fh))
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
    val = [
        (int(r["step"]), float(r["val_mean_abs"]), float(r["val_max_abs"]))
        for r in rows
        if r.get("val_mean_abs")
    ]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    if train:
        ax.semilogy(*zip(*train, strict=True), lw=0.8, alpha=0.6, label="train loss")
    if val:
        steps, mean, worst = zip(*val, strict=True)
        ax.semilogy(steps, mean, marker="o", label="val mean abs(ε)")
        ax.semilogy(steps, worst, marker="s", label="val max abs(ε)")
    ax.set(xlabel="optimizer step", title="training")
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(
    out: str | Path,
    quick: bool = False,
    workers: int | None = None,
    progress_for=None,
) -> dict[str, Any]:
    """Run every stage into ``out``; returns the evaluation report plus ``table`` (Markdown)."""
    from diffnorm.ml.evaluate import card_metrics, evaluate, markdown_table
    from diffnorm.ml.modelfile import GammaNetwork

    out = Path(out)
    data_cfg, model_kw, epochs, samples = (
        (QUICK_DATA, QUICK_MODEL, QUICK_EPOCHS, QUICK_SAMPLES)
        if quick
        else (DATA, MODEL, EPOCHS, SAMPLES)
    )
    bar = progress_for or (lambda _label: None)
    config = config_from_dict(data_cfg, "demo config: ")
    # one folder per configuration: a quick run, or a demo of another version, next to this one
    # resumes its own data and training instead of clashing with them
    tag = hashlib.sha256(
        json.dumps([config.digest(), model_kw, epochs], sort_keys=True).encode()
    ).hexdigest()[:8]
    data, runs = out / f"data-{tag}", out / f"train-{tag}"
    if quick and workers is None:  # starting Dask costs more than the quick grid's samples
        workers = 1  # on 2 cores the whole quick demo took 13.5 s, against 37 s with Dask
    generate(config, data, workers=workers, progress=bar("exact γ (selinv)"))
    best = train(data, runs, model_kw, epochs, bar("training epochs"))
    model = GammaNetwork.from_checkpoint(best, name="demo")
    report = evaluate(
        model,
        data,
        "test",
        samples=samples,
        out_dir=out / "evaluation",
        progress=bar("evaluation"),
    )
    label = "demo grid test split" if not quick else "quick demo grid test split"
    model.metrics = {label: card_metrics(out / "evaluation" / "evaluation.json")}
    model.save(out / "model.pt")
    plot_training_curve(runs, out / "training.png")
    report["table"] = markdown_table(report)
    (out / "report.json").write_text(json.dumps(report["summary"], indent=2) + "\n")
    return report
