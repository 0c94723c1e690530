"""The command line end to end on small files."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import random_fields
from diffnorm.cli import app
from diffnorm.fields import read_fields, write_fields
from diffnorm.methods import estimate

runner = CliRunner()


@pytest.fixture
def fields_file(tmp_path):
    return write_fields(tmp_path / "in.nc", random_fields(seed=2))


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--method", "brute"],
        ["--method", "probing"],
        ["--method", "analytic"],
        ["--method", "randomization", "--samples", "20", "--seed", "1"],
    ],
)
def test_estimate_writes_gamma(tmp_path, fields_file, args):
    out = tmp_path / "out.nc"
    res = runner.invoke(app, ["estimate", str(fields_file), "-o", str(out), "-q", *args])
    assert res.exit_code == 0, res.output
    fields, gamma = read_fields(out)
    assert np.all(np.isnan(gamma[~fields.mask])) and np.all(gamma[fields.mask] > 0)
    method = args[1] if args else "selinv"  # the default: the fastest certified exact method
    if method in ("brute", "probing", "selinv"):
        exact = estimate(fields, "brute").gamma
        np.testing.assert_allclose(gamma[fields.mask], exact[fields.mask], rtol=1e-6)
    assert fields.attrs["method"] == method


def test_estimate_bad_input_exits_nonzero(tmp_path, fields_file):
    res = runner.invoke(app, ["estimate", str(tmp_path / "nope.nc"), "-o", str(tmp_path / "o.nc")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(
        app, ["estimate", str(fields_file), "-o", str(tmp_path / "o.nc"), "--tolerance", "2"]
    )
    assert res.exit_code == 2 and "tolerance" in res.output
    res = runner.invoke(
        app, ["estimate", str(fields_file), "-o", str(tmp_path / "o.nc"), "--stride", "3"]
    )
    assert res.exit_code == 2 and "--stride goes with --method probing" in res.output


def test_compare_writes_table_and_maps(tmp_path, fields_file):
    out = tmp_path / "cmp"
    res = runner.invoke(
        app,
        [
            "compare",
            str(fields_file),
            "--out",
            str(out),
            "-q",
            "--reference",
            "brute",
            "--methods",
            "analytic,randomization:50,probing,selinv",
        ],
    )
    assert res.exit_code == 0, res.output
    table = (out / "comparison.md").read_text()
    assert "randomization N=50" in table and "analytic" in table
    for name in ("comparison.csv", "error_by_distance.csv", "gamma.png", "errors.png"):
        assert (out / name).stat().st_size > 0
    # probing against brute on a grid this small is exact to round-off
    line = next(row for row in table.splitlines() if row.startswith("| probing"))
    assert float(line.split("|")[5]) < 1e-8
    line = next(row for row in table.splitlines() if row.startswith("| selinv"))
    assert float(line.split("|")[5]) <= 1e-6  # its certificate


def test_compare_rejects_bad_method_spec(tmp_path, fields_file):
    res = runner.invoke(app, ["compare", str(fields_file), "--methods", "analytic:3"])
    assert res.exit_code == 2 and "only randomization" in res.output


def test_methods_lists_everything():
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0
    for name in ("selinv", "brute", "probing", "randomization", "analytic"):
        assert name in res.output
