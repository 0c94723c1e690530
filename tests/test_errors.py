"""Every row of docs/errors.md: bad input gets one `error:` line naming the field or option and
the fix, exit status 2, and no output file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from conftest import TINY, random_fields
from diffnorm.cli import app
from diffnorm.fields import to_dataset, write_fields

runner = CliRunner()
DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def _fields_file(tmp_path: Path, change=None, name: str = "in.nc") -> Path:
    ds = to_dataset(random_fields(seed=1))
    if change is not None:
        ds = change(ds)
    path = tmp_path / name
    ds.to_netcdf(path)
    return path


def _set(var: str, fn):
    def change(ds):
        ds = ds.copy()
        ds[var] = (ds[var].dims, fn(ds[var].values.astype(float)))
        return ds

    return change


def _units(var: str, units: str):
    def change(ds):
        ds = ds.copy()
        ds[var].attrs["units"] = units
        return ds

    return change


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "gamma").mkdir()
    return tmp_path / "gamma"


def _nan_at(a):
    a = a.copy()
    a[3, 3] = np.nan
    return a


def _estimate(tmp_path, src, *extra):
    return ["estimate", str(src), "-o", str(tmp_path / "out.nc"), "-q", *extra]


def _mesh(tmp_path, units: dict[str, str] | None = None, **changes) -> Path:
    rng = np.random.default_rng(0)
    data = {v: rng.uniform(5e4, 1e5, (6, 8)) for v in ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v")}
    data["tmask"] = np.ones((6, 8))
    for k, fn in changes.items():
        data[k] = fn(data[k])
    path = tmp_path / "mesh.nc"
    units = units or {}
    variables = {
        k: (("y", "x"), v, {"units": units[k]} if k in units else {}) for k, v in data.items()
    }
    xr.Dataset(variables).to_netcdf(path)
    return path


def _zero_e1u(a):
    a = a.copy()
    a[2, 3] = 0.0
    return a


def _train(tmp_path, *extra):
    return ["train", "fit", "--data.root", str(tmp_path / "none"), *extra]


def _grid(tmp_path, name, *extra):
    return ["grid", name, "-o", str(tmp_path / "out.nc"), *extra]


def _grid_mesh(tmp_path, mesh, *extra):
    return ["grid", "mesh", "--mesh", str(mesh), "-o", str(tmp_path / "out.nc"), *extra]


# id -> (command builder, expected text in the error line)
CASES = {
    "missing-file": (lambda t: _estimate(t, t / "nope.nc"), "no such file"),
    "missing-variable": (
        lambda t: _estimate(t, _fields_file(t, lambda ds: ds.drop_vars("alpha_y"))),
        "missing variable(s) alpha_y",
    ),
    "nan-mask": (
        lambda t: _estimate(t, _fields_file(t, _set("mask", _nan_at))),
        "mask has 1 missing (NaN) value(s), first at j=3, i=3",
    ),
    "mask-not-0-1": (
        lambda t: _estimate(t, _fields_file(t, _set("mask", lambda a: a * 2))),
        "mask must hold only 0 (land) and 1 (ocean)",
    ),
    "unnamed-dims": (
        lambda t: _estimate(t, _fields_file(t, lambda ds: ds.rename({"x": "i", "y": "j"}))),
        "name them (y, x)",
    ),
    "negative-alpha": (
        lambda t: _estimate(t, _fields_file(t, _set("alpha_x", lambda a: -a))),
        "alpha_x: ",
    ),
    "zero-area": (
        lambda t: _estimate(t, _fields_file(t, _set("area", lambda a: 0 * a))),
        "area: ",
    ),
    "huge-alpha": (
        lambda t: _estimate(t, _fields_file(t, _set("alpha_x", lambda a: 0 * a + 1e300))),
        "alpha/area is 9.91e+291 cells²",
    ),
    "tiny-area": (
        lambda t: _estimate(t, _fields_file(t, _set("area", lambda a: 0 * a + 1e-300))),
        "give alpha_x, alpha_y and area in m² on the same grid",
    ),
    "odd-steps": (
        lambda t: _estimate(t, _fields_file(t, lambda ds: ds.assign_attrs(steps=5))),
        "steps must be an even integer",
    ),
    "fold-odd-nx": (
        lambda t: _estimate(t, _fields_file(t, lambda ds: ds.assign_attrs(north_fold="T"))),
        "needs an even number of columns",
    ),
    "unknown-fold": (
        lambda t: _estimate(t, _fields_file(t, lambda ds: ds.assign_attrs(north_fold="X"))),
        "north_fold must be one of none, T",
    ),
    "fold-copies-disagree": (
        lambda t: _estimate(t, _folded_file(t)),
        "breaks the F-pivot north fold",
    ),
    "fields-not-in-si": (
        lambda t: _estimate(t, _fields_file(t, _units("area", "km2"))),
        "area has units 'km2', but diffnorm reads it in m2 (SI); convert area to m2 (multiply",
    ),
    "output-is-a-folder": (
        lambda t: ["estimate", str(_fields_file(t)), "-o", str(_folder(t)), "-q"],
        "is an existing folder; give a file name for the output",
    ),
    "output-under-a-file": (
        lambda t: ["estimate", str(_fields_file(t)), "-o", str(t / "in.nc" / "out.nc"), "-q"],
        "in.nc is a file, not a folder; choose another folder for the output",
    ),
    "zero-e1u": (
        lambda t: _grid_mesh(t, _mesh(t, e1u=_zero_e1u)),
        "e1u: 1 open face(s) have a zero, negative or missing length (first at j=2, i=3",
    ),
    "mesh-missing-variable": (
        lambda t: _grid_mesh(t, _mesh_without(t, "e2v")),
        "missing variable(s) e2v",
    ),
    "bad-parameter-file": (
        lambda t: _grid_mesh(t, _mesh(t), "--kappa", str(_kappa(t, (3, 8)))),
        "kappa11 has shape (3, 8), but the grid's inner domain is (6, 8)",
    ),
    "mesh-not-in-si": (
        lambda t: _grid_mesh(t, _mesh(t, units={"e1t": "km"})),
        "e1t has units 'km', but diffnorm reads it in m (SI); convert e1t to m (multiply",
    ),
    "parameters-not-in-si": (
        lambda t: _grid_mesh(t, _mesh(t), "--kappa", str(_kappa(t, (6, 8), "cm2 s-1"))),
        "kappa11 has units 'cm2 s-1', but diffnorm reads it in m2 (or m2 s-1) (SI)",
    ),
    "nemo-layout-without-nemo": (
        lambda t: _estimate(t, _fields_file(t), "--nemo-layout"),
        "--nemo-layout needs a grid read from a NEMO file",
    ),
    "no-finite-gamma": (
        lambda t: _estimate(t, _fields_file(t), "--method", "randomization"),
        "randomization gave no finite γ",
    ),
    "device-cuda-without-cuda": (
        lambda t: _estimate(t, _latlon(t), "--method", "cnn", "--device", "cuda:0"),
        "sees no CUDA GPU",
    ),
    "unknown-device": (
        lambda t: _estimate(t, _latlon(t), "--method", "cnn", "--device", "tpu"),
        "is not one of auto, cpu, cuda, cuda:N or mps",
    ),
    "stride-without-probing": (
        lambda t: _estimate(t, _fields_file(t), "--stride", "4"),
        "--stride goes with --method probing",
    ),
    "model-without-cnn": (
        lambda t: _estimate(t, _fields_file(t), "--model", "windows-smooth-m10"),
        "--model goes with --method cnn (got --method selinv)",
    ),
    "corrupt-model": (
        lambda t: _estimate(t, _latlon(t), "--method", "cnn", "--model", str(_corrupt(t))),
        "not a Lightning checkpoint of `diffnorm train` that this diffnorm reads (RuntimeError",
    ),
    "evaluate-bad-samples": (
        lambda t: ["evaluate", "-m", "windows-smooth-m10", "-d", str(t), "--samples", "abc"],
        "--samples wants comma-separated sample counts",
    ),
    "export-missing-error-model": (
        lambda t: (
            ["export", "-m", "windows-smooth-m10", "-o", str(t / "out.nc")]
            + ["--error-model", str(t / "nope.json")]
        ),
        "nope.json: no such file; `diffnorm evaluate",
    ),
    "export-graph-option-for-a-model-file": (
        lambda t: [
            "export",
            "-m",
            "windows-smooth-m10",
            "-o",
            str(t / "out.nc"),
            "--north-fold",
            "F",
        ],
        "--north-fold is for torchscript/onnx graphs, not model files",
    ),
    "export-model-option-for-a-graph": (
        lambda t: (
            ["export", "-m", "windows-smooth-m10", "-o", str(t / "out.nc")]
            + ["--format", "onnx", "--gate", "1,2"]
        ),
        "--gate is for model files (--format model), not graphs",
    ),
    "export-metrics-not-an-evaluation": (
        lambda t: (
            ["export", "-m", "windows-smooth-m10", "-o", str(t / "out.nc")]
            + ["--metrics", f"test={_json(t, {'steps': 10})}"]
        ),
        "not an evaluation.json of `diffnorm evaluate`",
    ),
    "export-error-model-not-json": (
        lambda t: (
            ["export", "-m", "windows-smooth-m10", "-o", str(t / "out.nc")]
            + ["--error-model", str(_json(t, None, text="a,b\n1,2\n"))]
        ),
        "is not JSON",
    ),
    "grid-constant-with-kappa": (
        lambda t: _grid_mesh(t, _mesh(t), "--kappa", str(t / "k.nc"), "--constant", "3"),
        "--constant sets D everywhere, --kappa reads it: give one",
    ),
    "grid-random-option-with-constant": (
        lambda t: _grid(t, "latlon", "--constant", "3", "--d-min", "2"),
        "--d-min shapes random length scales, which --constant replaces",
    ),
    "grid-mesh-for-a-built-in-grid": (
        lambda t: _grid(t, "latlon", "--mesh", str(t / "m.nc")),
        "--mesh goes with grid 'mesh'",
    ),
    "grid-resolution-for-orca1": (
        lambda t: _grid(t, "orca1", "--resolution", "2"),
        "--resolution goes with grid 'latlon' (orca1 has its own)",
    ),
    "grid-polar-cap-out-of-range": (
        lambda t: _grid(t, "latlon", "--polar-cap", "0"),
        "--polar-cap is a latitude in (0, 90) degrees",
    ),
    "train-missing-data-root": (
        lambda t: _train(t, "--trainer.max_epochs", "1"),
        "no such dataset folder",
    ),
    "train-unknown-arch": (
        lambda t: _train(t, "--model.arch", "foo"),
        "got 'foo' (an option in the config or on the command line",
    ),
    "train-unknown-target": (
        lambda t: _train(t, "--model.target", "foo"),
        "target must be one of",
    ),
    "train-zero-batch": (
        lambda t: _train(t, "--data.batch_size", "0"),
        "batch_size must be >= 1",
    ),
    "train-unknown-init": (
        lambda t: _train(t, "--model.init_from", "nosuch"),
        "model 'nosuch' is neither a file nor a shipped model",
    ),
    "train-missing-checkpoint": (
        lambda t: ["train", "fit", "--ckpt_path", str(t / "none.ckpt")],
        "no such checkpoint",
    ),
}


def _json(tmp_path, content, text: str | None = None):
    import json

    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(content) if text is None else text)
    return path


def _folded_file(tmp_path):
    ds = to_dataset(random_fields(ny=6, nx=8, seed=1, islands=False))
    ds = ds.assign_attrs(north_fold="F")
    ay = ds["alpha_y"].values.copy()
    ay[-1] = np.arange(1, 9) * 1e7  # the fold's two listings of a face differ
    ds["alpha_y"] = (("y", "x"), ay)
    path = tmp_path / "folded.nc"
    ds.to_netcdf(path)
    return path


def _mesh_without(tmp_path, var):
    path = _mesh(tmp_path)
    with xr.open_dataset(path) as ds:
        ds.drop_vars(var).to_netcdf(tmp_path / "short.nc")
    return tmp_path / "short.nc"


def _kappa(tmp_path, shape, units: str | None = None):
    k = np.full(shape, 1e8)
    path = tmp_path / "kappa.nc"
    attrs = {"units": units} if units else {}
    xr.Dataset({n: (("y", "x"), k, attrs) for n in ("kappa11", "kappa22")}).to_netcdf(path)
    return path


def _corrupt(tmp_path) -> Path:
    path = tmp_path / "model.ckpt"  # a truncated download, or a model file renamed
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    return path


def _latlon(tmp_path):
    from diffnorm.grid import fields_from_cell_length_scales, latlon_grid

    fields = fields_from_cell_length_scales(latlon_grid(10.0), 3.0, 3.0, 10)
    return write_fields(tmp_path / "latlon.nc", fields)


@pytest.fixture
def broken_randomization(monkeypatch):
    """A method that returns NaN (the guard must catch any method doing so)."""
    from diffnorm.methods import randomization as module
    from diffnorm.methods.base import METHODS, MethodOutput

    spec = METHODS["randomization"]

    def nan_method(op, *, samples=1000, seed=0, block_size=None, progress=None):
        return MethodOutput(np.full(op.n, np.nan), tolerance=None, info={"solves": 0})

    monkeypatch.setitem(METHODS, "randomization", dataclasses.replace(spec, fn=nan_method))
    return module


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_error_line(case, tmp_path, request):
    if case == "no-finite-gamma":
        request.getfixturevalue("broken_randomization")
    if case == "device-cuda-without-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    build, expected = CASES[case]
    res = runner.invoke(app, build(tmp_path))
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and expected in res.output.replace("\n", ""), res.output
    assert not (tmp_path / "out.nc").exists()


def test_the_table_in_the_docs_lists_every_tested_case():
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M)
    assert sorted(rows) == sorted([*CASES, "generate-after-a-failed-start", "x-y-dims"])


def test_generate_after_a_failed_start_accepts_the_corrected_config(tmp_path):
    import yaml

    bad = {**TINY, "grid": {"name": "mesh", "mesh": str(tmp_path / "missing_mesh.nc")}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "data"
    args = ["generate", "-o", str(out), "--workers", "1", "-q"]
    res = runner.invoke(app, [*args, "-c", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and "error:" in res.output, res.output
    res = runner.invoke(app, [*args, "-c", str(tmp_path / "good.yaml")])
    assert res.exit_code == 0, res.output
    assert len(list((out / "train").glob("*.nc"))) == TINY["splits"]["train"]
