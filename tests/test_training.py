"""Training with Lightning on a tiny generated dataset."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch

from conftest import small_model, trainer
from diffnorm.fields import Fields
from diffnorm.ml.data import TrainingDataModule
from diffnorm.ml.lit import GammaModel
from diffnorm.ml.modelfile import GammaNetwork
from diffnorm.ml.sampling import UNSEEN


def test_overfitting_one_sample_drives_the_loss_down(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = small_model(norm="none")
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=1)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    model.stats = dm.stats
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss = model._loss(model(batch["x"]), batch)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first / 100


def test_fit_logs_metrics_and_resumes(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = small_model()
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=2)
    ckpt = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    t = trainer(tmp_path, max_epochs=3, callbacks=[ckpt])
    t.fit(model, dm)
    for name in ("val_mean_abs", "val_rmse", "val_q9999", "val_max_abs", "val_loss"):
        assert np.isfinite(float(t.callback_metrics[name]))
    assert t.global_step == 3
    resumed = small_model()
    t2 = trainer(tmp_path, max_epochs=5)
    t2.fit(
        resumed,
        TrainingDataModule(str(tiny_dataset), halo=model.halo),
        ckpt_path=ckpt.last_model_path,
    )
    assert t2.global_step == 5  # continued from step 3, not restarted
    assert resumed.stats is not None
    np.testing.assert_allclose(resumed.stats.mean, dm.stats.mean)


def test_model_refuses_data_of_another_encoding(tiny_dataset, tmp_path):
    model = small_model(distance="euclidean")
    dm = TrainingDataModule(str(tiny_dataset), distance="manhattan", halo=model.halo)
    with pytest.raises(ValueError, match="distance"):
        trainer(tmp_path, max_epochs=1).fit(model, dm)


def test_train_cli_fits_from_a_config(tiny_dataset, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from diffnorm.cli import app

    cfg = {
        "model": {"width": 8, "blocks": 1, "lr": 0.003},
        "data": {"root": str(tiny_dataset), "batch_size": 2},
        "trainer": {
            "max_epochs": 2,
            "default_root_dir": str(tmp_path / "run"),
            "enable_progress_bar": False,
        },
        "seed_everything": 1,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", "fit", "--config", str(path)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert list((tmp_path / "run").rglob("last.ckpt"))
    assert list((tmp_path / "run").rglob("metrics.csv"))


def test_a_train_run_that_fails_at_its_start_leaves_no_empty_log_folders(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from diffnorm.cli import app

    (tmp_path / "empty").mkdir()
    cfg = {
        "model": {"width": 8, "blocks": 1},
        "data": {"root": str(tmp_path / "empty")},
        "trainer": {"max_epochs": 1, "default_root_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", "fit", "--config", str(path)])
    assert res.exit_code == 2, res.output + repr(res.exception)
    assert "--data.root" in res.output
    assert not list((tmp_path / "run").rglob("*")), list((tmp_path / "run").rglob("*"))


def test_only_the_log_folders_a_failed_run_made_are_removed(tmp_path):
    from types import SimpleNamespace

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from diffnorm.ml.train import log_dirs, remove_untrained_log_dirs

    def run(step: int, version: int | None = None):
        loggers = [CSVLogger(tmp_path, "csv", version), TensorBoardLogger(tmp_path, "tb", version)]
        return SimpleNamespace(loggers=loggers, global_step=step, global_rank=0)

    trained = run(5)
    for logger in trained.loggers:
        Path(logger.log_dir).mkdir(parents=True)
    (Path(trained.loggers[0].log_dir) / "metrics.csv").write_text("step\n")
    remove_untrained_log_dirs(trained, keep=set())  # it trained: everything stays
    assert len(log_dirs(trained)) == 2
    # a failed run logging into the trained run's version_0 leaves it alone
    again = run(0, version=0)
    remove_untrained_log_dirs(again, keep=log_dirs(again))
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").exists()
    assert (tmp_path / "tb" / "version_0").is_dir()
    # a failed run's own new folders go, unless one holds a checkpoint
    failed = run(0)
    for logger in failed.loggers:
        Path(logger.log_dir).mkdir(parents=True)
    (Path(failed.loggers[1].log_dir) / "last.ckpt").write_bytes(b"")
    remove_untrained_log_dirs(failed, keep=set())
    assert not (tmp_path / "csv" / "version_1").exists()
    assert (tmp_path / "tb" / "version_1" / "last.ckpt").exists()


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_shipped_train_configs_parse(capsys):
    from pathlib import Path

    from diffnorm.ml.train import main

    paths = list((Path(__file__).parents[1] / "configs" / "train").glob("*.yaml"))
    assert paths
    for path in paths:
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", str(path), "--print_config"])
        assert done.value.code == 0
        printed = capsys.readouterr().out
        assert "arch:" in printed and "halo:" in printed, path.name


def test_evaluate_runs_in_eval_mode_and_writes_a_report(tiny_dataset, tiny_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from diffnorm.cli import app

    loaded = GammaNetwork.load(tiny_checkpoint)
    assert not any(m.training for m in loaded.net.modules())
    out = tmp_path / "eval"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "-m",
            str(tiny_checkpoint),
            "-d",
            str(tiny_dataset),
            "--split",
            "val",
            "--samples",
            "20",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    table = (out / "evaluation.md").read_text()
    assert "| cnn |" in table and "randomization N=20" in table and "analytic" in table
    for name in ("evaluation_per_sample.csv", "error_by_distance.png", "cnn_error_map.png"):
        assert (out / name).stat().st_size > 0
    worst = list(csv.DictReader((out / "worst_cells.csv").open()))
    assert worst and float(worst[0]["eps"]) != 0.0
    assert abs(float(worst[0]["eps"])) >= abs(float(worst[-1]["eps"]))
    # its error model becomes the model's per-cell error estimate
    model = tmp_path / "calibrated.pt"
    args = ["export", "-m", str(tiny_checkpoint), "-o", str(model)]
    res = CliRunner().invoke(app, args + ["--error-model", str(out / "evaluation.json")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    from diffnorm.data.dataset import load_split
    from diffnorm.methods import estimate

    f = load_split(tiny_dataset, "val")[0].fields
    r = estimate(f, "cnn", model=str(model), exact_basins=64)  # the network: a small window
    assert r.error_estimate is not None and r.info["error_quantile"] == 0.9
    assert np.all(r.error_estimate[f.mask] > 0) and np.all(np.isnan(r.error_estimate[~f.mask]))


def test_worst_cells_are_the_largest_errors_with_their_geometry():
    from diffnorm.ml.evaluate import worst_cells

    mask = np.ones((5, 6), dtype=bool)
    mask[0, :] = mask[4, :] = False
    mask[2, 3] = False  # cell (2, 2) has land to its east
    eps = np.where(mask, 0.01, np.nan)
    eps[2, 2], eps[1, 0] = -0.5, 0.3
    ones = np.ones(mask.shape)

    def fields(periodic: bool) -> Fields:
        return Fields(mask.astype(float), ones, ones, ones, 4, periodic)

    rows = worst_cells(eps, np.ones_like(eps), np.ones_like(eps), fields(True), k=2)
    assert [(r["j"], r["i"], r["eps"]) for r in rows] == [(2, 2, -0.5), (1, 0, 0.3)]
    assert rows[0]["open_faces"] == 3  # west, north, south open; east is land
    assert rows[1]["open_faces"] == 3  # periodic: west across the wrap, east, north
    closed = worst_cells(eps, np.ones_like(eps), np.ones_like(eps), fields(False), k=2)
    assert closed[1]["open_faces"] == 2  # the closed west edge


def test_ddp_with_two_cpu_processes(tiny_dataset, tmp_path):
    """The LightningCLI entry point trains under DDP (2 CPU processes, gloo) and saves once,
    with prioritized replay (its scores gathered across ranks and saved)."""
    import os
    import subprocess
    import sys

    import yaml

    cfg = {
        "model": {"width": 8, "blocks": 1, "lr": 0.003},
        "data": {"root": str(tiny_dataset), "batch_size": 1, "priority": 0.5},
        "trainer": {
            "max_epochs": 2,
            "default_root_dir": str(tmp_path / "run"),
            "enable_progress_bar": False,
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
        },
        "seed_everything": 1,
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "diffnorm.cli", "train", "fit", "--config", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "world_size: 2" in done.stderr + done.stdout or "GLOBAL_RANK: 1" in done.stderr
    ckpts = list((tmp_path / "run").rglob("last.ckpt"))
    assert len(ckpts) == 1
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 2  # 2 samples / (2 processes × batch 1) × 2 epochs
    scores = state["TrainingDataModule"]["priority"]["scores"]
    assert torch.isfinite(scores).all() and (scores < UNSEEN).any()


def test_crops_are_windows_of_the_whole_grid_prediction(tiny_dataset):
    """With valid convolutions a crop (with its halo) predicts what the whole grid does."""
    torch.manual_seed(0)
    model = small_model().eval()
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=1, crop=7)
    dm.setup()
    item = dm.sets["train"].items[0]
    crop = dm.sets["train"][0]
    assert crop["x"].shape[-2:] == (7 + 2 * model.halo,) * 2 and crop["mask"].shape == (7, 7)
    with torch.no_grad():
        whole = model(item["x"][None])[0]
        part = model(crop["x"][None])[0]
    # find the window by its target values and compare the predictions there
    ny, nx = item["target"].shape
    hits = [
        (j, i)
        for j in range(ny - 6)
        for i in range(nx - 6)
        if torch.equal(item["target"][j : j + 7, i : i + 7], crop["target"])
    ]
    assert hits
    j, i = hits[0]
    torch.testing.assert_close(part, whole[j : j + 7, i : i + 7], rtol=1e-5, atol=1e-5)


def test_fine_tuning_starts_from_the_pretrained_weights_and_statistics(
    tiny_dataset, tiny_checkpoint, tmp_path
):
    pretrained = GammaNetwork.load(tiny_checkpoint)
    model = small_model(init_from=str(tiny_checkpoint))
    for key, value in pretrained.net.state_dict().items():
        torch.testing.assert_close(model.net.state_dict()[key], value)
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, stats_from=str(tiny_checkpoint))
    trainer(tmp_path, max_epochs=1).fit(model, dm)
    np.testing.assert_array_equal(dm.stats.mean, pretrained.stats.mean)
    assert model.data_info["fine_tuned_from"] == str(tiny_checkpoint)
    with pytest.raises(ValueError, match="not this model's"):
        GammaModel(width=8, blocks=1, init_from=str(tiny_checkpoint))


def twin_models(tiny_dataset, **options):
    """A plain model, the same weights with ``options``, and a training batch for both."""
    torch.manual_seed(0)
    plain, other = small_model(), small_model(**options)
    other.net.load_state_dict(plain.net.state_dict())
    dm = TrainingDataModule(str(tiny_dataset), halo=plain.halo, batch_size=2)
    dm.setup()
    plain.stats = other.stats = dm.stats
    return plain, other, next(iter(dm.train_dataloader()))


def test_tail_loss_adds_the_fourth_power_of_the_relative_error(tiny_dataset):
    plain, tail, batch = twin_models(tiny_dataset, tail_scale=0.1)
    with torch.no_grad():
        pred = plain(batch["x"])
        eps = plain.relative_error(pred, batch)[batch["mask"]]
        expected = (eps**2 + eps**4 / 0.1**2).mean()
        torch.testing.assert_close(tail._loss(pred, batch).double(), expected, rtol=1e-6, atol=0)
        assert tail._loss(pred, batch) > plain._loss(pred, batch)
    for bad in ({"tail_scale": 0.0}, {"tail_scale": 0.1, "loss": "mse"}):
        with pytest.raises(ValueError, match="tail_scale"):
            small_model(**bad)


def test_partial_augmentation_mixes_original_and_transformed_samples(tiny_dataset):
    dm = TrainingDataModule(str(tiny_dataset), halo=4, augment=0.5)
    dm.setup()
    train = dm.sets["train"]
    original = train.items[0]["target"]
    torch.manual_seed(0)
    same = [torch.equal(train[0]["target"], original) for _ in range(200)]
    # half the draws keep the sample; a random symmetry is the identity only now and then
    assert 0.4 < np.mean(same) < 0.75
    with pytest.raises(ValueError, match="augment"):
        TrainingDataModule(str(tiny_dataset), halo=4, augment=1.5)


def test_fine_tuning_starts_from_a_shipped_model_by_name():
    from diffnorm.ml.modelfile import resolve_model

    shipped = resolve_model("latlon4-m10")
    model = GammaModel(
        arch="unet",
        width=24,
        levels=3,
        unet_halo=16,
        target="log_lattice",
        init_from="latlon4-m10",
    )
    for key, value in shipped.net.state_dict().items():
        torch.testing.assert_close(model.net.state_dict()[key], value)


def test_a_fine_tuned_checkpoint_loads_without_its_source(tiny_dataset, tiny_checkpoint, tmp_path):
    import shutil

    source = tmp_path / "source.ckpt"
    shutil.copy(tiny_checkpoint, source)
    model = small_model(init_from=str(source))
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, stats_from=str(source))
    t = trainer(tmp_path, max_epochs=1)
    t.fit(model, dm)
    t.save_checkpoint(tmp_path / "tuned.ckpt")
    source.unlink()
    tuned = GammaNetwork.from_checkpoint(tmp_path / "tuned.ckpt")
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(tuned.net.state_dict()[key], value)
    assert tuned.data["fine_tuned_from"] == str(source)


def test_the_same_seed_trains_the_same_network(tiny_dataset, tmp_path):
    """Seeded runs repeat exactly, augmentation and shuffling included."""

    def fit(k: int) -> dict:
        lightning.seed_everything(7, verbose=False)
        model = small_model(tail_scale=0.1)
        dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=1, augment=0.5)
        trainer(tmp_path / str(k), max_epochs=2).fit(model, dm)
        return model.net.state_dict()

    first, second = fit(0), fit(1)
    for key, value in first.items():
        torch.testing.assert_close(second[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("trainer_clip", [None, 1e9])
def test_the_tail_loss_clips_the_gradient_norm(tiny_dataset, tmp_path, trainer_clip):
    # unless the trainer sets its own clipping (which then wins: here, none in effect)
    from diffnorm.ml.lit import TAIL_CLIP

    norms = []

    class GradNorm(lightning.pytorch.callbacks.Callback):
        def on_train_batch_end(self, trainer, module, *args):  # after clipping and the step
            grads = [p.grad.norm() for p in module.parameters() if p.grad is not None]
            norms.append(float(torch.stack(grads).norm()))

    lightning.seed_everything(0, verbose=False)
    model = small_model(tail_scale=0.1)
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=1)
    t = trainer(tmp_path, max_epochs=1, callbacks=[GradNorm()], gradient_clip_val=trainer_clip)
    t.fit(model, dm)
    assert norms
    if trainer_clip is None:
        assert max(norms) <= TAIL_CLIP * (1 + 1e-5)
    else:
        assert max(norms) > TAIL_CLIP  # what the clipping held back


def test_hard_cells_weigh_more_in_the_loss(tiny_dataset):
    plain, hard, batch = twin_models(tiny_dataset, hard_weight=4.0)
    m = batch["mask"]
    assert batch["hard"][m].any() and not batch["hard"][m].all()
    assert not (batch["hard"] & ~m).any()
    with torch.no_grad():
        pred = plain(batch["x"])
        e2 = plain.relative_error(pred, batch)[m] ** 2
        w = 1 + 4.0 * batch["hard"][m].double()
        expected = (w * e2).sum() / w.sum()
        torch.testing.assert_close(hard._loss(pred, batch).double(), expected, rtol=1e-6, atol=0)


def test_setup_in_worker_processes_gives_what_one_process_gives(tiny_dataset):
    """``num_workers`` reads, standardizes and encodes in that many processes: same samples,
    statistics and encodings, in the same order."""
    from diffnorm.data.dataset import parallel_map

    assert [
        int(t.sum()) for t in parallel_map(lambda k: torch.full((3,), k), list(range(9)), 3)
    ] == [3 * k for k in range(9)]
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    parallel_map(abs, [-1, -2, -3], 2)
    assert torch.equal(torch.rand(1), expected)  # the global generator (shuffling) untouched
    modules = []
    for workers in (0, 2):
        dm = TrainingDataModule(str(tiny_dataset), num_workers=workers)
        dm.setup("fit")
        dm.setup("test")  # a second call: the statistics and sets are kept
        modules.append(dm)
    one, many = modules
    read = [s.fields.topology for s in many.sets["train"].samples]
    assert all(t is read[0] for t in read)  # one shared topology, pickled back as such
    np.testing.assert_array_equal(one.stats.mean, many.stats.mean)
    assert one.sets["train"].names == many.sets["train"].names
    for a, b in zip(one.sets["train"].items, many.sets["train"].items, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype  # sent by value, tensors again
    assert one.info == many.info  # described in workers as in one process


def test_channels_last_training_fits_as_the_default_layout_does(tiny_dataset, tmp_path):
    """Every diffnorm training lays the weights out channels-last (faster with oneDNN and on
    GPUs): the same data and seed reach the same loss; bf16 mixed precision stays close."""
    from diffnorm.ml.train import ChannelsLast, trainer_defaults

    assert any(isinstance(c, ChannelsLast) for c in trainer_defaults()["callbacks"])
    losses = {}
    for precision, layout in (("32-true", []), ("32-true", [ChannelsLast()]), ("bf16-mixed", [])):
        torch.manual_seed(0)
        model = small_model()
        dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=2)
        run = tmp_path / f"{precision}-{len(layout)}"
        fit = trainer(run, max_epochs=3, precision=precision, callbacks=layout)
        fit.fit(model, dm)
        losses[precision, bool(layout)] = float(fit.callback_metrics["val_loss"])
        if layout:
            assert model.net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = losses["32-true", False]
    assert losses["32-true", True] == pytest.approx(plain, rel=1e-3)
    assert losses["bf16-mixed", False] == pytest.approx(plain, rel=0.03)
