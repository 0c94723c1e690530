"""The command line end to end on small files."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
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
    with xr.open_dataset(out) as ds:
        assert ds.attrs["method"] == method


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


def test_compare_keeps_the_other_rows_when_a_method_fails(tmp_path, fields_file):
    from unittest import mock

    from diffnorm import compare as compare_module

    real = compare_module.estimate

    def failing(op, name, **options):
        if name == "lattice":
            raise MemoryError("out of memory")
        return real(op, name, **options)

    out = tmp_path / "cmp"
    with mock.patch("diffnorm.compare.estimate", side_effect=failing):
        args = ["compare", str(fields_file), "--out", str(out), "-q", "--no-plots"]
        res = runner.invoke(app, [*args, "--methods", "analytic,lattice,randomization:50"])
    assert res.exit_code == 1, res.output
    assert "lattice failed: MemoryError: out of memory" in res.output
    assert "warning:" not in res.output  # said once, as an error
    table = (out / "comparison.md").read_text()
    assert "| randomization N=50 | " in table and "| lattice | failed: MemoryError" in table
    assert "lattice" not in (out / "comparison.csv").read_text()

    # every method failing, maps on, a message over several lines with a pipe in it
    def all_fail(op, name, **options):
        if name == "selinv":  # the reference
            return real(op, name, **options)
        raise RuntimeError("a | b\nc")

    with mock.patch("diffnorm.compare.estimate", side_effect=all_fail):
        res = runner.invoke(app, ["compare", str(fields_file), "--out", str(out), "-q"])
    assert res.exit_code == 1 and "analytic failed: RuntimeError: a | b" in res.output
    table = (out / "comparison.md").read_text()
    assert "| analytic | failed: RuntimeError: a \\| b c |" in table
    assert (out / "gamma.png").exists()

    # from Python, a failed method warns: the Comparison looks whole otherwise
    from diffnorm.fields import read_fields

    with mock.patch("diffnorm.compare.estimate", side_effect=failing):
        with pytest.warns(compare_module.MethodFailedWarning, match="lattice failed"):
            result = compare_module.compare(read_fields(fields_file)[0], [("lattice", {})])
    assert result.failed and not result.rows


def test_a_warning_is_shown_when_raised_even_if_an_error_follows(capsys):
    import warnings

    import typer

    from diffnorm.cli import user_errors
    from diffnorm.torch_operator import SlowBackendWarning

    with pytest.raises(typer.Exit):
        with user_errors():
            warnings.warn("slow here", SlowBackendWarning, stacklevel=1)
            raise ValueError("then it failed")
    err = capsys.readouterr().err  # the CLI's messages go to stderr
    assert err.index("warning: slow here") < err.index("error: then it failed")


def test_compare_rejects_bad_method_spec(tmp_path, fields_file):
    res = runner.invoke(app, ["compare", str(fields_file), "--methods", "analytic:3"])
    assert res.exit_code == 2 and "only randomization" in res.output
    res = runner.invoke(app, ["compare", str(fields_file), "--methods", "cnn:high"])
    assert res.exit_code == 2 and "cnn:0.0125" in res.output and "auto" in res.output
    for bad in ("randomization:0", "randomization:2.5", "cnn:-1"):  # before the reference
        res = runner.invoke(app, ["compare", str(fields_file), "--methods", bad])
        assert res.exit_code == 2 and "must be" in res.output and "|" not in res.output, bad
    # an --out that cannot be a folder is refused before any work
    res = runner.invoke(app, ["compare", str(fields_file), "--out", str(fields_file / "x")])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    assert "|" not in res.output  # no table: nothing was computed
    res = runner.invoke(app, ["evaluate", "-m", "x", "-d", "y", "--out", str(fields_file)])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    # an unknown method is refused before the reference is solved, not after
    from unittest import mock

    with mock.patch("diffnorm.compare.make_operator", side_effect=AssertionError("solved")):
        res = runner.invoke(app, ["compare", str(fields_file), "--methods", "lattice,nope"])
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output, res.output


def test_compare_scores_the_cnn_with_its_doubted_cells_exact(tmp_path):
    import warnings

    from diffnorm.compare import compare, parse_method

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random per-cell metrics are out of range
        # more cells than the cnn's default exact_basins: the network serves them
        fields = random_fields(ny=46, nx=52, steps=10, seed=7)
        specs = [parse_method("cnn"), parse_method("cnn:0.0")]
        result = compare(fields, specs)
        small = compare(random_fields(ny=20, nx=24, steps=10, seed=7), specs[:1])
    # τ = 0 doubts every cell: the grid is solved whole, and its row says so
    assert [r.label for r in result.rows] == [
        "cnn",
        "cnn, exact above 0 (every cell solved exactly)",
    ]
    assert [r.label for r in small.rows] == ["cnn (every cell solved exactly)"]
    assert parse_method("cnn:auto") == ("cnn", {"exact_above": "auto"})
    assert result.rows[1].metrics["max_abs"] <= 1e-4 < result.rows[0].metrics["max_abs"]


def test_methods_lists_everything():
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0
    for name in ("selinv", "brute", "probing", "randomization", "analytic"):
        assert name in res.output


def test_estimate_on_a_result_file_writes_only_this_runs_attributes(tmp_path):
    # a result file used as input: its certificate, options and info describe the earlier
    # run's γ and must not reach the next output (analytic certifies nothing)
    fields = random_fields(seed=2)
    path = write_fields(tmp_path / "in.nc", fields, attrs={"grid": "box", "seed": 5})
    chain = [["--method", "randomization", "--samples", "5", "--verify", "4"]]
    chain += [["--method", "brute"], ["--method", "analytic"]]
    for k, args in enumerate(chain):
        out = tmp_path / f"out{k}.nc"
        res = runner.invoke(app, ["estimate", str(path), "-o", str(out), "-q", *args])
        assert res.exit_code == 0, res.output
        path = out
    with xr.open_dataset(path) as ds:
        attrs = dict(ds.attrs)
    own = {"Conventions", "diffnorm_version", "steps", "periodic_x", "north_fold", "grid", "seed"}
    assert set(attrs) == own | set(estimate(fields, "analytic").attrs())
    assert attrs["method"] == "analytic" and "certified_tolerance" not in attrs
    assert attrs["grid"] == "box" and attrs["seed"] == 5


def test_estimate_forced_stride_that_fails_its_certificate_is_refused(tmp_path, fields_file):
    # stride 1 probes every cell at once: it used to be written as certified to 1e-6
    out = tmp_path / "out.nc"
    args = ["estimate", str(fields_file), "-o", str(out), "-q", "--method", "probing"]
    res = runner.invoke(app, [*args, "--stride", "1"])
    assert res.exit_code == 2 and "not certified" in res.output
    assert not out.exists()


def test_estimate_probing_probes_and_records_its_certificate(tmp_path):
    # short length scales: probing certifies a 5x5 stride instead of falling back to brute
    fields = random_fields(steps=4, kappa=0.02)
    path, out = write_fields(tmp_path / "in.nc", fields), tmp_path / "out.nc"
    args = ["--method", "probing", "--tolerance", "1e-4"]
    res = runner.invoke(app, ["estimate", str(path), "-o", str(out), "-q", *args])
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        attrs, gamma = dict(ds.attrs), ds["gamma"].values
    assert "info_fallback" not in attrs and attrs["info_stride"] == "[5, 5]"
    assert attrs["info_colours"] < fields.n_ocean / 4 and attrs["certified_tolerance"] == 1e-4
    exact = estimate(fields, "brute").gamma
    assert np.abs(gamma[fields.mask] ** 2 / exact[fields.mask] ** 2 - 1).max() <= 1e-4


def test_every_registered_method_is_a_cli_choice():
    from diffnorm.cli import MethodName
    from diffnorm.methods import METHODS

    assert {m.value for m in MethodName} == set(METHODS)
