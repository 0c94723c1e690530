"""Dataset generation: one NetCDF file per sample with exact γ, resumable, on Dask.

Sample ``k`` of split ``s`` draws its length scales from
``SeedSequence([seed, split_id(s), k])``: the same config gives the same data whatever the
order, the number of workers or how often the run was interrupted. Files are written
atomically; a file that exists is kept only when its provenance matches the config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from diffnorm import __version__
from diffnorm.data.config import SPLITS, ConfigError, DataConfig, GridSpec, config_from_dict
from diffnorm.fields import Fields, atomic_output, write_fields

CONFIG_FILE = "dataset.yaml"
MANIFEST_FILE = "manifest.json"


class DatasetError(RuntimeError):
    """An output folder that does not match the config (never silently reused)."""


@lru_cache(maxsize=4)
def grid_metrics(spec: GridSpec):
    """The grid of a spec, built once per process (each Dask worker keeps its own)."""
    from diffnorm.grid import box_grid, built_in_grid
    from diffnorm.nemo import mesh_mask_grid

    if spec.name == "mesh":
        return mesh_mask_grid(spec.mesh, drop_halo=spec.drop_halo, north_fold=spec.north_fold)
    if spec.name == "box":
        return box_grid(spec.ny, spec.nx, periodic_x=spec.periodic_x)
    return built_in_grid(spec.name, resolution=spec.resolution, polar_cap=spec.polar_cap)


def sample_seed(config: DataConfig, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([config.seed, SPLITS.index(split), index])


def sample_fields(config: DataConfig, split: str, index: int) -> Fields:
    """The fields of one sample (deterministic in config, split and index)."""
    from diffnorm.grid import fields_from_cell_length_scales
    from diffnorm.lengthscales import random_cell_length_scales

    p = config.parameters
    rng = np.random.default_rng(sample_seed(config, split, index))
    if config.grid.name == "windows":  # each sample its own geometry, drawn first
        from diffnorm.data.windows import stretched_metrics, window_mask
        from diffnorm.grid import box_grid

        mask = window_mask(rng, config.grid.ny, config.grid.nx)
        if p.polar_fraction and rng.random() < p.polar_fraction:
            from diffnorm.data.windows import polar_metrics

            metrics = polar_metrics(rng, mask)
        elif p.metric_std:
            metrics = stretched_metrics(rng, mask, p.metric_std)
        else:  # east–west periodic on request: cells far from any wall, as in open oceans
            periodic = bool(p.periodic_fraction) and rng.random() < p.periodic_fraction
            metrics = box_grid(config.grid.ny, config.grid.nx, periodic_x=periodic, mask=mask)
    else:
        metrics = grid_metrics(config.grid)
    if p.metre_fraction and rng.random() < p.metre_fraction:
        from diffnorm.lengthscales import metric_cell_length_scales

        d1, d2 = metric_cell_length_scales(
            metrics.e1t,
            metrics.e2t,
            metrics.mask,
            rng,
            d_min=p.d_min,
            d_max=p.d_max,
            correlation_cells=p.correlation_cells,
            topology=metrics.topology,
        )
    else:
        d1, d2 = random_cell_length_scales(
            metrics.shape,
            rng,
            d_min=p.d_min,
            d_max=p.d_max,
            anisotropy=tuple(p.anisotropy),
            correlation_cells=p.correlation_cells,
            topology=metrics.topology,
            lat=metrics.lat,
            lat_amplitude=p.lat_amplitude,
        )
    if p.sharp_fraction and rng.random() < p.sharp_fraction:
        from diffnorm.data.windows import sharp_steps

        d1, d2 = sharp_steps(rng, d1, d2, p.d_min, p.d_max)
    choices = config.step_choices
    # drawn last, and only for a list: the samples of single-M configs stay as they were
    steps = choices[0] if len(choices) == 1 else choices[int(rng.integers(len(choices)))]
    return fields_from_cell_length_scales(metrics, d1, d2, steps)


def sample_path(out: Path, split: str, index: int) -> Path:
    return Path(out) / split / f"{split}_{index:05d}.nc"


def _provenance(config: DataConfig, split: str, index: int) -> dict[str, Any]:
    return {
        "generator": "diffnorm.data.generate",
        "generator_version": __version__,
        "config_digest": config.digest(),
        "split": split,
        "index": index,
        "seed": config.seed,
        "sample_seed": str(sample_seed(config, split, index).entropy),
        "parameters": json.dumps(asdict(config.parameters)),
        "grid_spec": json.dumps(asdict(config.grid)),
    }


def check_existing(path: Path, config: DataConfig, split: str, index: int) -> dict | None:
    """The provenance of a finished sample file, or None if there is none. A file that is
    unreadable or from another config raises :class:`DatasetError`."""
    if not path.exists():
        return None
    import netCDF4

    try:
        with netCDF4.Dataset(path) as ds:
            attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
            has_gamma = "gamma" in ds.variables
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable sample file ({exc}); delete it and rerun") from exc
    expected = _provenance(config, split, index)
    for key in ("config_digest", "split", "index", "sample_seed"):
        if str(attrs.get(key)) != str(expected[key]):
            raise DatasetError(
                f"{path}: exists but does not match this config ({key} is "
                f"{attrs.get(key)!r}, expected {expected[key]!r}); use another output folder "
                "or delete the file"
            )
    if not has_gamma:
        raise DatasetError(f"{path}: has no gamma; delete it and rerun")
    return attrs


def run_sample(config_dict: dict, split: str, index: int, out: str) -> dict[str, Any]:
    """Make (or find) one sample; returns its manifest record. Runs on a Dask worker."""
    from diffnorm.methods import estimate, exact_options

    config = config_from_dict(config_dict)
    path = sample_path(Path(out), split, index)
    existing = check_existing(path, config, split, index)
    if existing is not None:
        return _record(path, split, index, existing, reused=True)
    t0 = time.perf_counter()
    fields = sample_fields(config, split, index)
    result = estimate(fields, config.method, **exact_options(config.method, config.tolerance))
    attrs = {**_provenance(config, split, index), **result.attrs()}
    attrs["sample_wall_time_s"] = round(time.perf_counter() - t0, 4)
    write_fields(path, fields, result.gamma, attrs=attrs)
    return _record(path, split, index, attrs, reused=False)


def _record(path: Path, split: str, index: int, attrs: dict, reused: bool) -> dict[str, Any]:
    return {
        "split": split,
        "index": index,
        "file": f"{split}/{path.name}",
        "sample_seed": str(attrs.get("sample_seed")),
        "method": str(attrs.get("method")),
        "certified_tolerance": float(attrs.get("certified_tolerance", 0.0)),
        "wall_time_s": float(attrs.get("sample_wall_time_s", float("nan"))),
        "reused": reused,
    }


def prepare_output(config: DataConfig, out: Path) -> None:
    """Check that the folder (made and locked by :func:`generate`) belongs to this config;
    clear stale temp files."""
    saved = out / CONFIG_FILE
    if saved.exists():
        previous = config_from_dict(yaml.safe_load(saved.read_text()) or {})
        has_samples = any(any((out / split).glob("*.nc")) for split in SPLITS)
        # a run that failed before its first sample leaves only its config: not a dataset
        if previous.digest() != config.digest() and has_samples:
            raise DatasetError(
                f"{out} holds a dataset of another config ({saved}); use another output folder"
            )
    # the saved config follows the split sizes asked for last (the samples do not depend on them)
    with atomic_output(saved, CONFIG_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    for folder in (out, *(out / split for split in SPLITS)):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # left by a killed writer: never a sample


def tasks(config: DataConfig) -> list[tuple[str, int]]:
    return [(s, i) for s in SPLITS for i in range(config.splits.get(s, 0))]


def generate(
    config: DataConfig,
    out: str | Path,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """Generate (or complete) the dataset in ``out``; returns the manifest.

    ``scheduler`` is the address of a running Dask scheduler; otherwise a local cluster of
    ``workers`` processes (default: one per core) runs the samples, or the current process
    when ``workers == 1``. ``time_limit`` (s) bounds the train split: its samples start only
    after the val and test ones, which are always made (few, and what a stopped run is
    evaluated on); after ``time_limit`` seconds no train sample is started or waited for, the
    manifest lists every sample on disk (``complete`` false) and a rerun makes the rest. With
    ``scheduler``, train samples already running on its workers finish after this returns:
    let them before a rerun, which would clear their temporary files.
    """
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"time_limit (--time-limit) is in seconds, > 0; got {time_limit}")
    until = None if time_limit is None else time.monotonic() + time_limit
    if not isinstance(config, DataConfig):
        raise ConfigError("config must be a DataConfig (see diffnorm.data.config.load_config)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with dataset_lock(out):
        prepare_output(config, out)
        kept, todo = [], []
        for split, index in tasks(config):  # fail fast, before any worker starts
            # checked once here, not again on a worker (15 700 kept: minutes on Dask)
            record = _finished(config, out, split, index, reused=True)
            if record is None:
                todo.append((split, index))
            else:
                kept.append(record)
        workers = workers or os.cpu_count() or 1
        made = []
        if todo:
            # the old manifest lists fewer samples: a killed run must not leave it to hide the
            # new ones from readers (sample_files falls back to the files when there is none)
            (out / MANIFEST_FILE).unlink(missing_ok=True)
            todo.sort(key=lambda task: task[0] == "train")  # held-out samples first
            for record in _run(config, out, todo, workers, scheduler, until):
                made.append(record)
                if progress:
                    progress(len(made), len(todo))
            listed = {(r["split"], r["index"]) for r in made}
            for split, index in todo:  # finished after the time limit, before the cluster went
                if (split, index) not in listed:
                    record = _finished(config, out, split, index, reused=False)
                    made += [record] if record is not None else []
        return write_manifest(config, out, kept + made, complete=len(made) == len(todo))


def _finished(config: DataConfig, out: Path, split: str, index: int, reused: bool) -> dict | None:
    """The manifest record of a finished sample file, or None if there is none."""
    path = sample_path(out, split, index)
    found = check_existing(path, config, split, index)
    return None if found is None else _record(path, split, index, found, reused=reused)


LOCK_FILE = ".generate.lock"


@contextlib.contextmanager
def dataset_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.generate.lock`` for the run: a second ``generate`` on the same folder would
    clear this run's temporary files as a killed run's and race it on every sample, so it is
    refused. The lock is the kernel's (``flock``): a killed run releases it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unguarded, as before
        yield
        return
    with open(out / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(
                f"{out}: another diffnorm generate is writing this dataset; wait for it to "
                "finish (a later run resumes and completes it) or use another output folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(config, out, todo, workers, scheduler, until=None) -> Iterable[dict]:
    """The records of the samples ``todo``, as they finish (see :func:`generate`)."""
    cfg = config.to_dict()

    def over(split: str) -> bool:
        return until is not None and split == "train" and time.monotonic() >= until

    if scheduler is None and workers == 1:
        for split, index in todo:
            if over(split):
                return
            yield run_sample(cfg, split, index, str(out))
        return
    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler is not None:
        client, cluster = Client(scheduler), None
    else:
        # Dask's own logs at shutdown or on a cancel (a worker's heartbeat traceback, its
        # CancelledError) are noise to a user; a failed sample raises through its future
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
        client = Client(cluster)
    try:
        futures = [
            (
                client.submit(
                    run_sample,
                    cfg,
                    s,
                    i,
                    str(out),
                    key=f"diffnorm-{s}-{i}-{config.digest()}",
                    priority=int(s != "train"),  # held-out samples are started first
                ),
                s,
            )
            for s, i in todo
        ]
        held_out = [f for f, s in futures if s != "train"]
        train = [f for f, s in futures if s == "train"]
        for future in as_completed(held_out):  # always all of them
            yield future.result()
        # as_completed's timeout fires only while no result is waiting (a busy cluster always
        # has one: the clock is also read after each result); a sample's own TimeoutError
        # is not the limit's and raises
        timeout = None if until is None else max(until - time.monotonic(), 0.001)
        results = as_completed(train, timeout=timeout)
        while True:
            try:
                future = next(results)
            except StopIteration:
                break
            except TimeoutError:
                client.cancel(train)
                break
            yield future.result()
            if over("train"):
                client.cancel(train)
                break
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_manifest(
    config: DataConfig, out: Path, records: list[dict], complete: bool = True
) -> dict[str, Any]:
    records = sorted(records, key=lambda r: (SPLITS.index(r["split"]), r["index"]))
    manifest = {
        "generator_version": __version__,
        "config_digest": config.digest(),
        "config": config.to_dict(),
        "complete": complete,
        "splits": {s: sum(r["split"] == s for r in records) for s in SPLITS},
        "samples": records,
    }
    with atomic_output(out / MANIFEST_FILE, MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return manifest
