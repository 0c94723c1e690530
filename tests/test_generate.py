"""Dataset generation: determinism, provenance, resume after a kill, Dask parity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from diffnorm.data import ConfigError, DatasetError, generate, load_config
from diffnorm.data.config import config_from_dict
from diffnorm.data.generate import sample_fields, sample_path
from diffnorm.fields import read_fields, write_fields
from diffnorm.methods import estimate

BOX = {
    "grid": {"name": "box", "ny": 18, "nx": 24, "periodic_x": True},
    "steps": 6,
    "parameters": {"d_min": 1.2, "d_max": 2.5, "correlation_cells": 4.0},
    "splits": {"train": 3, "val": 1, "test": 1},
    "method": "probing",
    "tolerance": 1e-8,
    "seed": 7,
}


def data_of(path: Path) -> dict[str, np.ndarray]:
    with xr.open_dataset(path) as ds:
        return {k: ds[k].values.copy() for k in ds.data_vars}


def test_same_seed_same_data_and_different_samples(tmp_path):
    cfg = config_from_dict(BOX)
    a = generate(cfg, tmp_path / "a", workers=1)
    generate(cfg, tmp_path / "b", workers=1)
    assert a["splits"] == {"train": 3, "val": 1, "test": 1}
    for rec in a["samples"]:
        da, db = data_of(tmp_path / "a" / rec["file"]), data_of(tmp_path / "b" / rec["file"])
        for name in da:
            np.testing.assert_array_equal(da[name], db[name])
    f0, f1 = (read_fields(sample_path(tmp_path / "a", "train", i))[0] for i in (0, 1))
    assert not np.allclose(f0.alpha_x, f1.alpha_x)
    fields, _ = read_fields(sample_path(tmp_path / "a", "val", 0))
    assert fields.attrs["config_digest"] == cfg.digest() and fields.attrs["split"] == "val"
    with xr.open_dataset(sample_path(tmp_path / "a", "val", 0)) as ds:
        assert ds.attrs["method"] == "probing"


def test_sample_gamma_is_exact(tmp_path):
    cfg = config_from_dict(BOX)
    generate(cfg, tmp_path, workers=1)
    fields, gamma = read_fields(sample_path(tmp_path, "test", 0))
    exact = estimate(sample_fields(cfg, "test", 0), "brute").gamma
    m = fields.mask
    np.testing.assert_allclose(gamma[m] ** 2, exact[m] ** 2, rtol=1e-8)


def test_resume_keeps_finished_samples_and_refuses_foreign_ones(tmp_path, monkeypatch):
    cfg = config_from_dict(BOX)
    generate(cfg, tmp_path, workers=1)
    victim = sample_path(tmp_path, "train", 1)
    victim.unlink()
    mtime = sample_path(tmp_path, "train", 0).stat().st_mtime_ns
    manifest = generate(cfg, tmp_path, workers=1)
    assert victim.exists()
    assert sample_path(tmp_path, "train", 0).stat().st_mtime_ns == mtime
    assert sum(not r["reused"] for r in manifest["samples"]) == 1

    def no_workers(*args):  # a finished dataset is checked once, by this process
        raise AssertionError("kept samples were sent to workers")

    monkeypatch.setattr(sys.modules["diffnorm.data.generate"], "_run", no_workers)
    again = generate(cfg, tmp_path, workers=2)
    assert all(r["reused"] for r in again["samples"])
    assert [r["file"] for r in again["samples"]] == [r["file"] for r in manifest["samples"]]
    other = config_from_dict({**BOX, "seed": 8})
    with pytest.raises(DatasetError, match="another config"):
        generate(other, tmp_path, workers=1)
    # a foreign file in a folder of the right config is refused too
    (tmp_path / "dataset.yaml").unlink()
    with pytest.raises(DatasetError, match="does not match this config"):
        generate(other, tmp_path, workers=1)


def test_kill_and_resume(tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg = {**BOX, "splits": {"train": 12}, "grid": {**BOX["grid"], "ny": 30, "nx": 40}}
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "diffnorm.cli", "generate", "-c", str(cfg_path), "-o", str(out)]
    proc = subprocess.Popen([*cmd, "--workers", "1", "-q"], start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "train").glob("*.nc"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list((out / "train").glob("*.nc"))) < 12, "killed too late to test a resume"
    done = subprocess.run([*cmd, "--workers", "1", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    files = sorted((out / "train").glob("*.nc"))
    assert len(files) == 12 and not list((out / "train").glob(".*"))
    for f in files:
        fields, gamma = read_fields(f)
        assert np.all(np.isfinite(gamma[fields.mask]))


def test_dask_two_workers_match_one(tmp_path):
    cfg = config_from_dict({**BOX, "splits": {"train": 4}})
    generate(cfg, tmp_path / "one", workers=1)
    manifest = generate(cfg, tmp_path / "two", workers=2)
    assert len(manifest["samples"]) == 4
    for i in range(4):
        a = data_of(sample_path(tmp_path / "one", "train", i))
        b = data_of(sample_path(tmp_path / "two", "train", i))
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"steps": 5}, "steps must be an even"),
        ({"steps": [4, 5]}, "steps must be an even"),
        ({"steps": [4, 4]}, "list of distinct"),
        ({"steps": []}, "steps must be an even"),
        ({"grid": {"name": "moon"}}, "grid.name must be one of"),
        ({"parameters": {"d_min": 3, "d_max": 2}}, "d_min <= d_max"),
        ({"method": "randomization"}, "exact one"),
        ({"splits": {"train": -1}}, "splits.train"),
        ({"colour": 1}, "unknown key"),
        ({"grid": {**BOX["grid"], "north_fold": "T"}}, "north_fold goes with grid 'mesh'"),
        ({"grid": {"name": "mesh", "mesh": "m.nc", "north_fold": "X"}}, "north_fold must be"),
        ({"grid": {"name": "orca1", "resolution": 2.0}}, "grid.resolution goes with grid 'latlon'"),
        ({"grid": {**BOX["grid"], "polar_cap": 70.0}}, "grid.polar_cap goes with grid 'latlon'"),
    ],
)
def test_bad_configs_name_the_key(change, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict({**BOX, **change})


def test_shipped_configs_load():
    root = Path(__file__).parents[1] / "configs" / "data"
    names = {p.stem for p in root.glob("*.yaml")}
    assert {"small", "toy", "orca1"} <= names
    for path in root.glob("*.yaml"):
        assert load_config(path).sample_count() > 0


def test_inspect_and_datamodule(tmp_path):
    from typer.testing import CliRunner

    from diffnorm.cli import app
    from diffnorm.data.dataset import GammaDataModule

    cfg = config_from_dict(BOX)
    generate(cfg, tmp_path, workers=1)
    res = CliRunner().invoke(app, ["inspect", str(tmp_path), "--count", "2"])
    assert res.exit_code == 0, res.output
    assert "| train | 3 | 18×24 |" in res.output
    assert (tmp_path / "inspect.png").stat().st_size > 0
    dm = GammaDataModule(str(tmp_path), batch_size=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["fields"].shape == (2, 4, 18, 24) and batch["gamma"].shape == (2, 18, 24)
    assert len(dm.sets["test"]) == 1
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such dataset folder" in res.output


def test_existing_scheduler(tmp_path):
    from dask.distributed import LocalCluster

    cfg = config_from_dict({**BOX, "splits": {"val": 2}})
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as c:
        manifest = generate(cfg, tmp_path, scheduler=c.scheduler_address)
    assert [r["file"] for r in manifest["samples"]] == ["val/val_00000.nc", "val/val_00001.nc"]


def test_files_written_beside_a_dask_client_take_no_cluster_lock(tmp_path, monkeypatch):
    """On a Dask worker xarray would take a scheduler-wide lock for every attribute written
    (72 ms of a window's 90 ms); files are written under an in-process lock instead."""
    import distributed
    from dask.distributed import Client, LocalCluster

    def refuse(*args, **kwargs):
        raise AssertionError("a cluster-wide lock was taken to write one file")

    monkeypatch.setattr(distributed.Lock, "acquire", refuse)
    fields = sample_fields(config_from_dict(BOX), "train", 0)
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        write_fields(tmp_path / "f.nc", fields, np.ones(fields.shape))
    again, gamma = read_fields(tmp_path / "f.nc")
    np.testing.assert_array_equal(again.mask, fields.mask)


def test_a_dataset_grows_and_keeps_its_samples(tmp_path):
    small = config_from_dict({**BOX, "splits": {"train": 1, "val": 1}})
    generate(small, tmp_path, workers=1)
    first = sample_path(tmp_path, "train", 0)
    mtime = first.stat().st_mtime_ns
    manifest = generate(config_from_dict(BOX), tmp_path, workers=1)
    assert first.stat().st_mtime_ns == mtime
    made = [r for r in manifest["samples"] if not r["reused"]]
    assert len(made) == sum(BOX["splits"].values()) - 2
    assert manifest["splits"]["train"] == BOX["splits"]["train"]


def test_a_rerun_clears_the_temporary_files_of_a_killed_writer(tmp_path):
    cfg = config_from_dict({**BOX, "splits": {"train": 1}})
    generate(cfg, tmp_path, workers=1)
    stale = [tmp_path / ".config.yaml.k1ll3d.tmp", tmp_path / "train" / ".x.nc.k1ll3d.tmp"]
    for path in stale:
        path.write_text("partial")
    generate(cfg, tmp_path, workers=1)
    assert not any(path.exists() for path in stale)
    assert not list(tmp_path.rglob("*.tmp")), "the config and manifest writers left a temp file"


def test_a_mesh_config_can_set_the_fold_and_old_digests_stay(tmp_path):
    import xarray as xr

    rng = np.random.default_rng(0)
    ny, nx = 10, 12
    data = {v: (("y", "x"), rng.uniform(5e4, 1e5, (ny, nx))) for v in ("e1t", "e2t")}
    data.update({v: (("y", "x"), np.full((ny, nx), 7e4)) for v in ("e1u", "e2u", "e1v", "e2v")})
    data["tmask"] = (("y", "x"), np.ones((ny, nx)))
    xr.Dataset(data, attrs={"Iperio": 1, "NFold": 0}).to_netcdf(tmp_path / "m.nc")
    grid = {"name": "mesh", "mesh": str(tmp_path / "m.nc")}
    plain = config_from_dict({**BOX, "grid": grid})
    folded = config_from_dict({**BOX, "grid": {**grid, "north_fold": "F"}})
    assert "north_fold" not in plain.to_dict()["grid"] and plain.digest() != folded.digest()
    from diffnorm.data.generate import sample_fields

    assert sample_fields(folded, "train", 0).north_fold == "F"
    assert sample_fields(plain, "train", 0).north_fold == "none"


def test_a_list_of_steps_draws_m_per_sample_and_single_m_configs_stay():
    from diffnorm.data.generate import sample_fields

    several = config_from_dict({**BOX, "steps": [4, 8, 12]})
    assert several.step_choices == (4, 8, 12) and several.to_dict()["steps"] == [4, 8, 12]
    drawn = [sample_fields(several, "train", i).steps for i in range(12)]
    assert set(drawn) == {4, 8, 12}
    assert drawn == [sample_fields(several, "train", i).steps for i in range(12)]  # seeded
    assert config_from_dict({**BOX, "steps": [6]}).steps == 6  # a list of one is that M
    one = config_from_dict({**BOX, "steps": 6})
    assert one.to_dict()["steps"] == 6 and one.step_choices == (6,)
    # the M is drawn last: a sample keeps its geometry and length scales in cells
    a, b = sample_fields(one, "train", 3), sample_fields(several, "train", 3)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.alpha_x * (2 * a.steps - 4), b.alpha_x * (2 * b.steps - 4))


def test_a_second_run_on_a_folder_being_written_is_refused(tmp_path):
    import fcntl

    cfg = config_from_dict({**BOX, "splits": {"train": 1}})
    # another process's run holds the lock (a separate open file description, as flock sees)
    with open(tmp_path / ".generate.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(DatasetError, match="another diffnorm generate is writing"):
            generate(cfg, tmp_path, workers=1)
        assert not (tmp_path / "train").exists() or not list((tmp_path / "train").glob("*.nc"))
    generate(cfg, tmp_path, workers=1)  # released: the run goes ahead
    assert len(list((tmp_path / "train").glob("*.nc"))) == 1


def test_a_time_limit_stops_with_val_and_test_first_and_a_rerun_completes(tmp_path, monkeypatch):
    import importlib
    import types

    gen = importlib.import_module("diffnorm.data.generate")  # the package re-exports generate()
    clock = iter(range(1000))  # every look at the clock is one second later
    fake = types.SimpleNamespace(**vars(gen.time))
    fake.monotonic = lambda: float(next(clock))
    monkeypatch.setattr(gen, "time", fake)
    cfg = config_from_dict(BOX)  # train 3, val 1, test 1
    manifest = generate(cfg, tmp_path, workers=1, time_limit=2.5)
    assert not manifest["complete"]
    assert manifest["splits"] == {"train": 2, "val": 1, "test": 1}
    monkeypatch.undo()
    manifest = generate(cfg, tmp_path, workers=1)
    assert manifest["complete"] and manifest["splits"]["train"] == 3
    assert sum(r["reused"] for r in manifest["samples"]) == 4
    with pytest.raises(ConfigError, match="time-limit"):
        generate(cfg, tmp_path, workers=1, time_limit=0)


def test_a_time_limit_on_dask_keeps_val_and_test_and_lists_every_file(tmp_path, monkeypatch):
    import importlib
    import types

    from diffnorm.data.dataset import sample_files

    many = config_from_dict({**BOX, "splits": {"train": 40, "val": 2, "test": 2}})
    manifest = generate(many, tmp_path / "idle", workers=2, time_limit=0.01)
    assert not manifest["complete"]
    assert manifest["splits"]["val"] == 2 and manifest["splits"]["test"] == 2
    on_disk = sorted((tmp_path / "idle" / "train").glob("*.nc"))
    assert len(sample_files(tmp_path / "idle", "train")) == len(on_disk) < 40
    # a busy cluster always has a result waiting: the limit must hold all the same
    gen = importlib.import_module("diffnorm.data.generate")
    clock = iter([0.0, 0.0] + [5000.0] * 100)  # the limit passes as the first train result comes
    fake = types.SimpleNamespace(**vars(gen.time))
    fake.monotonic = lambda: next(clock)
    monkeypatch.setattr(gen, "time", fake)
    manifest = generate(many, tmp_path / "busy", workers=2, time_limit=1000)
    assert not manifest["complete"] and manifest["splits"]["val"] == 2
    assert manifest["splits"]["train"] == len(list((tmp_path / "busy" / "train").glob("*.nc")))


def test_a_sample_that_times_out_by_itself_is_an_error_not_a_stop(tmp_path, monkeypatch):
    import importlib

    gen = importlib.import_module("diffnorm.data.generate")

    def slow_disk(*args):
        raise TimeoutError("a network file system timed out")

    from dask.distributed import LocalCluster

    monkeypatch.setattr(gen, "run_sample", slow_disk)
    cfg = config_from_dict({**BOX, "splits": {"train": 2}})
    with pytest.raises(TimeoutError, match="network file system"):
        generate(cfg, tmp_path / "one", workers=1)
    with (  # on Dask too (its workers in this process, so that they run the patched function)
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as c,
        pytest.raises(TimeoutError, match="network file system"),
    ):
        generate(cfg, tmp_path / "dask", scheduler=c.scheduler_address)


def test_a_killed_growth_leaves_no_manifest_that_hides_new_samples(tmp_path, monkeypatch):
    import importlib

    from diffnorm.data.dataset import sample_files

    gen = importlib.import_module("diffnorm.data.generate")

    generate(config_from_dict({**BOX, "splits": {"val": 1}}), tmp_path, workers=1)
    real = gen._run

    def killed_after_one(*args):
        yield next(real(*args))
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "_run", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        generate(config_from_dict(BOX), tmp_path, workers=1)
    assert len(sample_files(tmp_path, "val")) == 1
    assert len(sample_files(tmp_path, "test")) == 1  # made after the first manifest


def test_a_stopped_run_on_dask_prints_no_dask_tracebacks(tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**BOX, "splits": {"train": 400}}))
    cmd = [sys.executable, "-m", "diffnorm.cli", "generate", "-c", str(cfg_path)]
    cmd += ["-o", str(tmp_path / "ds"), "--workers", "2", "-q", "--time-limit", "6"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "stopped at --time-limit 6 s" in said
    assert "Traceback" not in said and "CancelledError" not in said, said


def test_progress_counts_every_sample_made_once(tmp_path):
    calls = []
    cfg = config_from_dict({**BOX, "splits": {"train": 2, "val": 1}})
    generate(cfg, tmp_path, workers=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    generate(cfg, tmp_path, workers=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # nothing left to make
