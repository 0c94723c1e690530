"""Spot checks of any method against exact γ at a few cells."""

from __future__ import annotations

import numpy as np
import xarray as xr
from typer.testing import CliRunner

from conftest import random_fields
from diffnorm.cli import app
from diffnorm.fields import write_fields
from diffnorm.methods import estimate
from diffnorm.metrics import distance_to_coast
from diffnorm.verify import pick_cells, verify


def test_pick_cells_is_seeded_half_coastal_and_spread():
    fields = random_fields(ny=20, nx=24)
    cells = pick_cells(fields, 12, seed=5)
    assert cells.size == 12 and np.array_equal(cells, pick_cells(fields, 12, seed=5))
    ocean = np.flatnonzero(fields.mask.ravel())
    j, i = np.divmod(ocean[cells], fields.shape[1])
    assert (distance_to_coast(fields)[j, i] <= 2).sum() >= 6
    dj = np.abs(j[:, None] - j[None, :])
    di = np.abs(i[:, None] - i[None, :])
    di = np.minimum(di, fields.shape[1] - di)  # periodic
    apart = np.maximum(dj, di) + np.eye(cells.size, dtype=int) * 99
    assert apart.min() >= 3


def test_verify_measures_the_error_of_a_method():
    fields = random_fields()
    exact = estimate(fields, "brute").gamma
    assert np.abs(verify(fields, exact, 8).eps).max() < 1e-12
    checked = verify(fields, 1.1 * exact, 8)  # γ̂² = 1.21 γ²
    np.testing.assert_allclose(checked.eps, 0.21, rtol=1e-10)
    assert checked.summary()["verify_cells"] == 8


def test_estimate_verify_writes_and_prints_the_measured_error(tmp_path):
    src = write_fields(tmp_path / "in.nc", random_fields(seed=3))
    out = tmp_path / "out.nc"
    args = ["estimate", str(src), "-o", str(out), "-q", "--method", "randomization"]
    res = CliRunner().invoke(app, [*args, "--samples", "30", "--verify", "10"])
    assert res.exit_code == 0, res.output
    assert "verified against exact γ at 10 cells" in res.output
    with xr.open_dataset(out) as ds:  # result attributes are the file's, not the fields'
        attrs = dict(ds.attrs)
    assert attrs["verify_cells"] == 10
    # 30 samples: |ε| of order sqrt(2/30) = 0.26
    assert 0.02 < attrs["verify_mean_abs"] < 1.0
    # more cells than fit 3 apart on this grid: it says how many it found of those asked
    res = CliRunner().invoke(app, [*args, "--samples", "30", "--verify", "100000"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "cells of the 100000 asked (no more ocean cells are 3 apart;" in said, said


def test_verify_checks_the_methods_own_error_estimate():
    """|ε| = 0.21 at every cell: an estimate of 0.3 covers them all and could shrink to 0.7×;
    one of 0.1 covers none and needs 2.1×; NaN cells (no estimate) are left out."""
    fields = random_fields()
    exact = estimate(fields, "brute").gamma
    for value, coverage, scale in ((0.3, 1.0, 0.7), (0.1, 0.0, 2.1)):
        guess = np.full(fields.shape, value)
        guess[:, :6] = np.nan
        checked = verify(fields, 1.1 * exact, 16, estimate=guess)
        known = int(np.isfinite(checked.estimate).sum())
        s = checked.summary()
        assert 0 < s["verify_estimate_cells"] == known < checked.eps.size
        assert s["verify_estimate_coverage"] == coverage
        np.testing.assert_allclose(s["verify_estimate_scale"], scale, rtol=1e-9)
    assert "verify_estimate_coverage" not in verify(fields, exact, 8).summary()


def test_verify_scale_is_the_split_conformal_rank():
    """Ratios |ε|/estimate of 0.5, 2, 3, …, 19 at 19 cells: the 0.9 factor is the ⌈20·0.9⌉ =
    18th smallest, and only the first cell is covered;
    with 5 cells, or for a bound (q = 1), no finite factor exists and none is reported."""
    fields = random_fields(ny=20, nx=24)
    exact = estimate(fields, "brute").gamma
    cells = verify(fields, 1.1 * exact, 19)
    guess = np.full(fields.shape, np.nan)
    guess[cells.j, cells.i] = 0.21 / np.r_[0.5, np.arange(2, 20)]
    s = verify(fields, 1.1 * exact, 19, estimate=guess).summary()
    np.testing.assert_allclose(s["verify_estimate_scale"], 18.0, rtol=1e-9)
    np.testing.assert_allclose(s["verify_estimate_coverage"], 1 / 19, rtol=1e-12)
    assert "verify_estimate_scale" not in verify(fields, 1.1 * exact, 5, estimate=guess).summary()
    bound = verify(fields, 1.1 * exact, 19, estimate=guess, quantile=1.0).summary()
    assert "verify_estimate_scale" not in bound and "verify_estimate_coverage" in bound


def test_estimate_cnn_verify_reports_the_error_estimate_coverage(tmp_path):
    src = write_fields(tmp_path / "in.nc", random_fields(ny=40, nx=48, seed=3))
    out = tmp_path / "out.nc"
    args = ["estimate", str(src), "-o", str(out), "-q", "--method", "cnn", "--verify", "12"]
    args += ["--exact-basins", "64"]  # 1 920 cells: else solved whole, without the network
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "its error estimate covers" in res.output
    with xr.open_dataset(out) as ds:
        attrs = dict(ds.attrs)
    assert 0.0 <= attrs["verify_estimate_coverage"] <= 1.0
    assert attrs["verify_estimate_scale"] > 0.0
