"""Model files, the cnn method, tiling, exports and the user-facing commands around them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from conftest import folded_fields, random_fields
from diffnorm.cli import app
from diffnorm.data.dataset import load_split
from diffnorm.fields import write_fields
from diffnorm.methods import estimate
from diffnorm.methods.cnn import NETWORK_EXACT_BASINS as NETWORK  # the network measured
from diffnorm.ml.modelfile import GammaNetwork, ModelFileError, OutOfRangeWarning, resolve_model


@pytest.fixture(scope="module")
def network(tiny_checkpoint):
    return GammaNetwork.from_checkpoint(tiny_checkpoint, name="tiny")


@pytest.fixture(scope="module")
def sample(tiny_dataset):
    return load_split(tiny_dataset, "val")[0]


def test_model_file_round_trip_is_exact(network, sample, tmp_path):
    path = network.save(tmp_path / "m.pt")
    loaded = GammaNetwork.load(path)
    assert not any(m.training for m in loaded.net.modules())  # eval mode: BatchNorm frozen
    assert loaded.steps == 6 and loaded.data["train_samples"] == 2
    assert loaded.created["package_version"]
    np.testing.assert_array_equal(
        loaded.predict(sample.fields, "cpu"), network.predict(sample.fields, "cpu")
    )


def test_saving_a_model_or_a_graph_refuses_a_folder_and_leaves_no_temporary(tmp_path, monkeypatch):
    from diffnorm.ml.export import export

    net = resolve_model("windows-general-m10")
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=f"{folder} is an existing folder; give a file"):
        net.save(folder)
    with pytest.raises(IsADirectoryError, match="windows-general-m10.ts"):  # before the tracing
        export(net, folder, "torchscript")
    saved = net.save(tmp_path / "m.pt")
    before = saved.read_bytes()

    def killed(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(OSError, match="No space left"):
        net.save(saved)
    assert saved.read_bytes() == before  # the old file intact, the partial one gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "models"]
    assert not list(folder.iterdir())


def test_tiles_with_halos_reproduce_one_pass(network, sample):
    whole = network.predict(sample.fields, "cpu")
    tiled = network.predict(sample.fields, "cpu", tile=7)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, equal_nan=True)


def test_the_symmetry_mean_commutes_with_the_grid_s_symmetries(network, sample):
    from diffnorm.augment import symmetries

    f = sample.fields
    assert np.array_equal(
        network.predict_target(f, "cpu", symmetries=1), network.predict_target(f, "cpu")
    )
    group = symmetries(f.topology)
    full = len(group)
    mean = network.predict_target(f, "cpu", symmetries=full)
    assert not np.allclose(mean, network.predict_target(f, "cpu"), atol=1e-4)  # it averages
    for t in group[1:]:
        moved = network.predict_target(t.fields(f), "cpu", symmetries=full)
        np.testing.assert_allclose(moved, t.cells(mean), atol=1e-5)
    with pytest.raises(ValueError, match=f"symmetries: this grid .* has {full}"):
        network.predict_target(f, "cpu", symmetries=full + 1)
    r = estimate(f, "cnn", exact_basins=NETWORK, model=network, device="cpu", symmetries=2)
    assert r.info["symmetries"] == 2 and np.all(np.isfinite(r.gamma[f.mask]))


def test_bfloat16_predictions_stay_close_to_float32(network, sample):
    f = sample.fields
    full = estimate(f, "cnn", exact_basins=NETWORK, model=network, device="cpu")
    low = estimate(
        f, "cnn", exact_basins=NETWORK, model=network, device="cpu", precision="bfloat16"
    )
    assert low.info["precision"] == "bfloat16" and full.info["precision"] == "float32"
    ratio = (low.gamma / full.gamma)[f.mask] ** 2 - 1.0
    assert 0.0 < np.abs(ratio).max() < 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        network.predict_target(f, "cpu", precision="half")


@pytest.mark.parametrize("hardware", [False, True])
def test_bfloat16_on_a_cpu_without_it_warns(network, sample, monkeypatch, hardware):
    """Emulated bfloat16 was 3.7× slower than float32 on an AVX2-only CPU."""
    from diffnorm.ml.modelfile import SlowPrecisionWarning

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: hardware, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        network.predict_target(sample.fields, "cpu", precision="bfloat16")
        network.predict_target(sample.fields, "cpu")  # float32 never warns
    slow = [w for w in caught if issubclass(w.category, SlowPrecisionWarning)]
    assert len(slow) == (0 if hardware else 1)
    assert hardware or "use --precision float32" in str(slow[0].message)


def test_cnn_method_and_exact_small_basins(network, sample):
    r = estimate(sample.fields, "cnn", exact_basins=NETWORK, model=network, device="cpu")
    assert r.method == "cnn" and r.info["model"] == "tiny"
    assert np.all(np.isfinite(r.gamma[sample.fields.mask]))
    assert "option_model" not in r.attrs()  # an object is named in info, not written


@pytest.mark.parametrize("fold", ["T", "F"])
def test_cnn_solves_the_rows_under_a_fold_exactly(network, fold):
    from conftest import folded_fields

    f = folded_fields(fold, ny=30, nx=20, steps=6, seed=1, kappa=0.3)
    exact = estimate(f, "selinv", tolerance=1e-9).gamma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny network has seen no fold
        r = estimate(f, "cnn", exact_basins=NETWORK, model=network, device="cpu", exact_fold_rows=3)
        none = estimate(
            f, "cnn", exact_basins=NETWORK, model=network, device="cpu", exact_fold_rows=0
        )
    top = f.mask.astype(bool) & (np.arange(30) >= 27)[:, None]
    np.testing.assert_allclose(r.gamma[top], exact[top], rtol=1e-4)
    assert r.info["exact_fold_cells"] == np.count_nonzero(f.counted[-3:])
    assert none.info["exact_fold_cells"] == 0
    assert np.array_equal(r.exact, top)  # a T fold's copies with their cells
    assert not none.exact.any()  # the cells a caller may leave out of the network's errors
    assert np.abs(none.gamma[top] / exact[top] - 1).max() > 1e-3  # the network alone is not
    rest = f.mask.astype(bool) & ~top
    np.testing.assert_array_equal(r.gamma[rest], none.gamma[rest])
    assert not r.flags[top].any()


def _measured_beside(f, base, r) -> np.ndarray:
    """The largest |log(γ²_network/γ²)| over the cells each round solved (not the small
    basins) in each cell's 3 × 3 square, across the wrap of a grid without a fold."""
    ny, nx = r.gamma.shape
    solved = r.exact & ~base.exact
    measured = np.where(solved, np.abs(np.log(base.gamma**2 / r.gamma**2)), 0.0)
    measured = np.pad(measured, ((1, 1), (0, 0)))
    measured = np.pad(measured, ((0, 0), (1, 1)), mode="wrap" if f.periodic_x else "constant")
    return np.max([measured[j : j + ny, i : i + nx] for j in range(3) for i in range(3)], axis=0)


def _exact_cnn_and_hybrids(f, *taus: float):
    """selinv's γ, the shipped cnn's result and the cnn's with each ``exact_above`` τ."""
    exact = estimate(f, "selinv", tolerance=1e-9).gamma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random per-cell metrics are out of range
        base = estimate(f, "cnn", exact_basins=NETWORK, model="windows-smooth-m10", device="cpu")
        hybrids = [
            estimate(
                f,
                "cnn",
                exact_basins=NETWORK,
                model="windows-smooth-m10",
                device="cpu",
                exact_above=t,
            )
            for t in taus
        ]
    return exact, base, hybrids


def test_cnn_solves_exactly_the_cells_its_error_estimate_doubts(network):
    from diffnorm.subgrid import CELLS_TOLERANCE, WHOLE_GRID_SHARE, cells_region

    f = random_fields(ny=40, nx=48, steps=10, seed=7)
    exact, base, (r, every) = _exact_cnn_and_hybrids(f, 0.04, 0.0)
    ocean = f.mask.astype(bool)
    doubt = ocean & ~(base.error_estimate <= 0.04) & ~base.exact
    assert doubt.any() and (ocean & ~doubt & ~base.exact).any()
    # a region of most of the ocean is solved whole (about the same cost): every cell exact
    whole = cells_region(f, doubt).sum() >= WHOLE_GRID_SHARE * ocean.sum()
    assert r.exact[ocean & ~base.exact if whole else doubt].all()
    # later rounds solve the served cells whose estimate, re-read beside solved ones, rose
    # above τ: none is left
    solved = ocean & r.exact & ~base.exact
    assert r.info["exact_above_cells"] == solved.sum()
    assert r.info["exact_above_left"] == 0 and r.info["exact_above_rounds"] >= 1
    assert np.all(r.error_estimate[ocean & ~r.exact] <= 0.04)
    np.testing.assert_allclose(r.gamma[solved] ** 2, exact[solved] ** 2, rtol=CELLS_TOLERANCE)
    assert np.all(r.error_estimate[solved] == CELLS_TOLERANCE) and not r.flags[solved].any()
    rest = ocean & ~solved
    np.testing.assert_array_equal(r.gamma[rest], base.gamma[rest])
    assert np.abs(base.gamma[doubt] ** 2 / exact[doubt] ** 2 - 1).max() > 1e-2
    np.testing.assert_allclose(every.gamma[ocean] ** 2, exact[ocean] ** 2, rtol=CELLS_TOLERANCE)
    # on a T fold every copy follows its cell: exact, unflagged, the solve's estimate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folded = folded_fields("T", ny=30, nx=40, steps=10, seed=4)
        t = estimate(
            folded, "cnn", exact_basins=NETWORK, device="cpu", exact_above=0.0, exact_fold_rows=0
        )
    wet = folded.mask.astype(bool)
    assert t.exact[wet].all() and not t.flags[wet].any()
    assert np.all(t.error_estimate[wet] == CELLS_TOLERANCE)
    with pytest.raises(ValueError, match="error model"):
        estimate(f, "cnn", exact_basins=NETWORK, model=network, device="cpu", exact_above=0.04)
    for bad in (-1.0, "half"):
        with pytest.raises(ValueError, match="exact_above"):
            estimate(
                f,
                "cnn",
                exact_basins=NETWORK,
                model="windows-smooth-m10",
                device="cpu",
                exact_above=bad,
            )


def test_exact_above_auto_takes_the_tau_of_the_model_s_calibration():
    import dataclasses

    from diffnorm.ml.modelfile import resolve_model
    from diffnorm.subgrid import SUGGESTED_EXACT_ABOVE

    net = resolve_model("windows-smooth-m10")
    assert "exact_above" not in net.error_model  # calibrated before models carried a τ
    assert net.exact_above == SUGGESTED_EXACT_ABOVE
    own = dataclasses.replace(net, error_model={**net.error_model, "exact_above": 0.05})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random per-cell metrics are out of range
        f = random_fields(ny=30, nx=40, steps=10, seed=3)
        r = estimate(f, "cnn", exact_basins=NETWORK, model=own, device="cpu", exact_above="auto")
    assert r.info["exact_above"] == 0.05 == r.info["suggested_exact_above"]
    from diffnorm.models import DEFAULT

    assert resolve_model(DEFAULT).error_model["exact_above"] > 0  # the default carries its own


def test_exact_above_solves_the_grid_whole_without_the_network_when_it_must(monkeypatch):
    """The least estimate any prediction could give (``error_floor``) already puts most of the
    grid above τ: the first round would solve it whole, so the network is not run at all."""
    from diffnorm.ml.calibration import network_correction
    from diffnorm.ml.modelfile import GammaNetwork, resolve_model
    from diffnorm.subgrid import CELLS_TOLERANCE

    f = random_fields(ny=40, nx=48, steps=10, seed=7)
    net = resolve_model("windows-smooth-m10")
    floor = net.error_floor(f)
    ocean = f.mask.astype(bool)
    for scale in (-1.0, 0.0, 1.0):  # the network's |t| moves the estimate, never under it
        t = network_correction(f, np.exp(scale * f.area / f.area.max()), net.target)
        assert np.all(floor[ocean] <= net.error_estimate(f, t)[ocean])
    exact = estimate(f, "selinv", tolerance=1e-9).gamma

    def unused(*args, **kwargs):
        raise AssertionError("the network ran")

    with monkeypatch.context() as m, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random per-cell metrics are out of range
        m.setattr(GammaNetwork, "predict_target", unused)
        r = estimate(f, "cnn", exact_basins=NETWORK, model=net, device="cpu", exact_above=0.0)
    assert r.info["exact_above_whole_grid"] and r.exact[ocean].all()
    np.testing.assert_allclose(r.gamma[ocean] ** 2, exact[ocean] ** 2, rtol=CELLS_TOLERANCE)
    assert np.all(r.error_estimate[ocean] == CELLS_TOLERANCE) and not r.flags.any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        served = estimate(
            f,
            "cnn",
            exact_basins=NETWORK,
            model=net,
            device="cpu",
            exact_above=float(np.nanmax(floor)),
        )
    assert "exact_above_whole_grid" not in served.info  # nothing is surely above that τ
    for bad in ({"precision": "float64"}, {"symmetries": 99}, {"device": "nowhere"}):
        with pytest.raises(ValueError):  # refused as the network's path refuses them
            estimate(
                f,
                "cnn",
                exact_basins=NETWORK,
                model=net,
                exact_above=0.0,
                **{"device": "cpu", **bad},
            )


def test_the_whole_grid_shortcut_gives_what_the_network_s_first_round_would(monkeypatch):
    """τ in the middle of the least estimates: some cells are surely solved, not all, and
    their region already covers the grid; with the shortcut off, the first round (after the
    network) solves the grid whole as well, and γ agrees to the solves' tolerance."""
    from diffnorm.methods.cnn import small_basins, surely_solved
    from diffnorm.ml.modelfile import resolve_model
    from diffnorm.subgrid import CELLS_TOLERANCE, EXACT_FOLD_ROWS, cells_region, covers

    f = random_fields(ny=40, nx=48, steps=10, seed=7)
    ocean = f.mask.astype(bool)
    net = resolve_model("windows-smooth-m10")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random per-cell metrics are out of range
        flags, _ = net.check_fields(f)
        tau = float(np.nanquantile(net.error_floor(f)[ocean], 0.5))
        surely = surely_solved(f, net, flags, tau, small_basins(f, 64), EXACT_FOLD_ROWS)
        assert 0 < surely.sum() < f.n_ocean and covers(f, cells_region(f, surely))
        short = estimate(f, "cnn", exact_basins=NETWORK, model=net, device="cpu", exact_above=tau)
        monkeypatch.setattr("diffnorm.methods.cnn.covers", lambda *args: False)
        full = estimate(f, "cnn", exact_basins=NETWORK, model=net, device="cpu", exact_above=tau)
    assert short.info["exact_above_whole_grid"] and "exact_above_whole_grid" not in full.info
    assert full.exact[ocean].all() and full.info["exact_above_rounds"] == 1
    np.testing.assert_allclose(
        short.gamma[ocean] ** 2, full.gamma[ocean] ** 2, rtol=2 * CELLS_TOLERANCE
    )


def test_a_small_basin_s_measured_error_stays_in_it():
    """A one-cell lake is solved exactly, and the network's error measured there would reach
    the ocean cells diagonal to it, which no diffusion joins to it."""
    from diffnorm.fields import Fields

    rng = np.random.default_rng(0)
    mask = np.ones((40, 48))
    for dj, di in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        mask[8 + dj, 8 + di] = 0  # a one-cell lake at (8, 8), ocean at its corners
    area, ax, ay = (rng.uniform(0.8, 1.2, (40, 48)) * v for v in (1e8, 2e8, 2e8))
    f = Fields(mask, area, ax, ay, 10, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = estimate(f, "cnn", exact_basins=NETWORK, model="windows-smooth-m10", device="cpu")
        plain = estimate(f, "cnn", model="windows-smooth-m10", device="cpu", exact_basins=0)
    assert r.exact[8, 8] and abs(plain.gamma[8, 8] / r.gamma[8, 8] - 1) > 0.05  # a real miss
    corners = (np.array([7, 7, 9, 9]), np.array([7, 9, 7, 9]))
    np.testing.assert_array_equal(r.error_estimate[corners], plain.error_estimate[corners])


def _solves_whole_from(share: float | None):
    """The cnn method's ``cells_variance`` with the whole grid solved from ``share`` of the
    ocean (None: never, so that the rounds themselves run on a small grid)."""
    import functools

    from diffnorm.subgrid import cells_variance

    return functools.partial(cells_variance, whole_share=share)


def test_cnn_exact_above_solves_again_the_cells_whose_estimate_rose(network, monkeypatch):
    from diffnorm.subgrid import CELLS_TOLERANCE, EXACT_ROUNDS

    # the rounds themselves: this grid's regions are large enough that the whole grid would
    # be solved instead (WHOLE_GRID_SHARE)
    monkeypatch.setattr("diffnorm.methods.cnn.cells_variance", _solves_whole_from(None))
    f = random_fields(ny=64, nx=80, steps=10, seed=2)
    exact, base, (r,) = _exact_cnn_and_hybrids(f, 0.08)
    ocean = f.mask.astype(bool)
    first = ocean & ~(base.error_estimate <= 0.08) & ~base.exact
    solved = ocean & r.exact & ~base.exact
    # the first round's cells, then their neighbours whose estimate rose above τ beside them:
    # here the network is off far and wide (random per-cell metrics), and those beside cells
    # where it was measured off by more than τ follow them until the rounds run out
    assert r.info["exact_above_rounds"] == EXACT_ROUNDS
    assert solved[first].all() and solved.sum() > first.sum()
    assert r.info["exact_above_cells"] == solved.sum()
    np.testing.assert_allclose(r.gamma[solved] ** 2, exact[solved] ** 2, rtol=CELLS_TOLERANCE)
    served = ocean & ~r.exact
    np.testing.assert_array_equal(r.gamma[served], base.gamma[served])
    left = served & ~(r.error_estimate <= 0.08)
    assert r.info["exact_above_left"] == left.sum() > 0
    beside = _measured_beside(f, base, r)
    assert np.all(beside[served & ~left] <= 0.08) and (beside[solved & ~first] > 0.08).any()
    # the estimate returned is the γ returned's: a served cell's |t| square reads the solved
    # cells' exact correction, and its estimate is at least the network's error measured
    # on the solved cells of its 3 × 3 square
    from diffnorm.ml.calibration import network_correction

    net = resolve_model("windows-smooth-m10")
    again = net.error_estimate(f, network_correction(f, r.gamma, net.target))
    assert served.any() and (beside[served] > again[served]).any()
    expected = np.maximum(again, beside)[served]
    np.testing.assert_allclose(r.error_estimate[served], expected, rtol=1e-12)


def test_the_error_estimate_reads_the_correction_it_was_calibrated_on(network, monkeypatch):
    """The error model was fitted on log(γ²/γ²_baseline) of the γ the method returns (solved
    cells included), and the |t| square of a served cell reaches its solved neighbours: the
    method must give it the same correction, or the row under the fold band gets another bin
    at prediction than in calibration. A network that predicts the baseline (t = 0)
    everywhere: only the band's exact values move t there, and they measure its error."""
    import dataclasses

    from diffnorm.ml.calibration import (
        CORRECTION_EDGES,
        DISTANCE_BINS,
        FACE_BINS,
        ErrorModel,
        correction_bins,
        network_correction,
    )
    from diffnorm.ml.modelfile import GammaNetwork
    from diffnorm.subgrid import EXACT_FOLD_ROWS

    nd, nf, nc = len(DISTANCE_BINS), len(FACE_BINS), len(CORRECTION_EDGES) + 1
    by_t = [[[0.01 * (c + 1) for c in range(nc)] for _ in range(nf)] for _ in range(nd)]
    model = ErrorModel(0.9, [[0.01] * nf] * nd, [[100] * nf] * nd, by_t, correction_window=3)
    net = dataclasses.replace(network, error_model=model.to_dict())
    monkeypatch.setattr(
        GammaNetwork, "predict_target", lambda self, fields, *a, **k: np.zeros(fields.shape)
    )
    f = folded_fields("T", ny=30, nx=40, steps=6, seed=2, kappa=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny network has seen no fold
        r = estimate(f, "cnn", exact_basins=NETWORK, model=net, device="cpu")
    t = network_correction(f, r.gamma, network.target)
    served = f.mask.astype(bool) & ~r.exact & np.isfinite(r.error_estimate)  # wrap: NaN
    served[-EXACT_FOLD_ROWS:] = False  # the band's T-fold copies
    under = served & (np.arange(30)[:, None] == 30 - EXACT_FOLD_ROWS - 1)
    assert (correction_bins(f, t, 3)[under] > 0).sum() > 5  # the band's t reaches them
    # and the row under the band reads the network's error measured on it: |t| there (t = 0)
    row = 30 - EXACT_FOLD_ROWS
    band = np.where(r.exact[row], np.abs(t[row]), 0.0)
    expected = model.estimate(f, t)
    measured = np.max([np.roll(band, s) for s in (-1, 0, 1)], axis=0)  # across the wrap
    assert (measured[under[row - 1]] > expected[row - 1][under[row - 1]]).any()
    expected[row - 1] = np.maximum(expected[row - 1], measured)
    np.testing.assert_allclose(r.error_estimate[served], expected[served], rtol=1e-12)


def test_rows_the_network_serves_under_the_fold_band_have_no_error_estimate(network):
    """The error model is calibrated with the default band solved exactly: with a thinner
    band the rows the network then serves have no held-out cells, so no estimate; the solved
    rows have the band's tolerance."""
    import dataclasses

    from diffnorm.ml.calibration import ErrorModel
    from diffnorm.subgrid import FOLD_TOLERANCE

    f = folded_fields("F", ny=30, nx=20, steps=6, seed=1, kappa=0.3)
    calibrated = ErrorModel.fit([(np.where(f.mask, 0.01, np.nan), f)]).to_dict()
    net = dataclasses.replace(network, error_model=calibrated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny network has seen no fold
        band = estimate(f, "cnn", exact_basins=NETWORK, model=net, device="cpu")
        thin = estimate(f, "cnn", exact_basins=NETWORK, model=net, device="cpu", exact_fold_rows=2)
    ocean = f.mask.astype(bool)
    rows = np.arange(30)[:, None]
    solved = FOLD_TOLERANCE  # the band's solve, to its tolerance
    assert np.all(band.error_estimate[ocean & (rows >= 24)] == solved)
    assert np.all(np.isnan(thin.error_estimate[ocean & (rows >= 24) & (rows < 28)]))
    assert np.all(thin.error_estimate[ocean & (rows >= 28)] == solved)
    # (the row just under the band also reads the network's error measured on it)
    below = ocean & (rows < 23)
    np.testing.assert_array_equal(thin.error_estimate[below], band.error_estimate[below])
    assert np.all(band.error_estimate[below] > 0.0)


def test_wrong_steps_is_refused_and_out_of_range_warns(network):
    with pytest.raises(ModelFileError, match="steps: the fields have M=8"):
        network.predict(random_fields(steps=8), "cpu")
    wide = random_fields(steps=6, kappa=40.0)  # length scales far beyond the training data
    with pytest.warns(OutOfRangeWarning, match="outside the trained"):
        network.predict(wide, "cpu")


def test_foreign_and_inconsistent_files_are_refused(network, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a readable diffnorm model"):
        GammaNetwork.load(bad)
    # a model file renamed .ckpt, a pickle: one line naming what to give, no torch advice
    bad_ckpt = tmp_path / "bad.ckpt"
    bad_ckpt.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a Lightning checkpoint.*shipped model"):
        GammaNetwork.load(bad_ckpt)
    torch.save({"x": np.float64(1.0)}, bad)  # loads only with weights_only=False
    with pytest.raises(ModelFileError, match="not a readable") as info:
        GammaNetwork.load(bad)
    assert "weights_only" not in str(info.value)
    assert GammaNetwork.load("windows-smooth-m10").name == "windows-smooth-m10"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(ModelFileError, match="not a diffnorm model file"):
        GammaNetwork.load(bad)
    d = network.to_dict()
    d["encoding"]["distance"] = "none"  # 4 channels for a 5-channel network
    torch.save(d, bad)
    with pytest.raises(ModelFileError, match="input channels"):
        GammaNetwork.load(bad)
    with pytest.raises(FileNotFoundError, match="shipped"):
        estimate(random_fields(), "cnn", model="no-such-model")


def test_exports_match_pytorch(network, sample, tmp_path):
    import onnxruntime

    from diffnorm.ml.export import export, reference_target
    from diffnorm.ml.features import raw_features

    raw = raw_features(sample.fields, network.encoding.distance)[None].astype(np.float32)
    ref = reference_target(network, raw, periodic_x=True)
    # the exported graph is what the model predicts (before γ is rebuilt from the target)
    np.testing.assert_allclose(ref[0], network.predict_target(sample.fields, "cpu"), atol=1e-5)
    ts, card = export(network, tmp_path / "m.ts", "torchscript", graph="features")
    out = torch.jit.load(str(ts))(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert '"kappa_x"' in card.read_text()
    onnx, _ = export(network, tmp_path / "m.onnx", "onnx", graph="features")
    session = onnxruntime.InferenceSession(str(onnx))
    # another grid size than the export example: the axes are dynamic
    for shape in ((16, 20), (23, 41)):
        x = np.random.default_rng(0).normal(size=(2, raw.shape[1], *shape)).astype(np.float32)
        got = session.run(None, {"raw_features": x})[0]
        np.testing.assert_allclose(got, reference_target(network, x, True), atol=1e-4)


def test_cli_predict_export_and_estimate_cnn(tiny_checkpoint, sample, tmp_path):
    from diffnorm.fields import read_fields

    runner = CliRunner()
    model = tmp_path / "tiny.pt"
    res = runner.invoke(app, ["export", "-m", str(tiny_checkpoint), "-o", str(model)])
    assert res.exit_code == 0, res.output
    inp = tmp_path / "in.nc"
    write_fields(inp, sample.fields)
    for args in (
        ["predict", str(inp), "-o", str(tmp_path / "p.nc"), "--model", str(model), "-q"]
        + ["--verify", "4", "--exact-basins", "64"],
        [
            "estimate",
            str(inp),
            "-o",
            str(tmp_path / "e.nc"),
            "--method",
            "cnn",
            "--model",
            str(model),
            "--tile",
            "8",
            "--exact-basins",
            "64",
            "-q",
        ],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output + repr(res.exception)
    (_, g1), (_, g2) = read_fields(tmp_path / "p.nc"), read_fields(tmp_path / "e.nc")
    with xr.open_dataset(tmp_path / "p.nc") as ds:  # predict takes estimate's --verify
        assert any(k.startswith("verify_") for k in ds["gamma"].attrs) or any(
            k.startswith("verify_") for k in ds.attrs
        )
    np.testing.assert_allclose(g1, g2, rtol=1e-5, equal_nan=True)
    res = runner.invoke(
        app,
        [
            "predict",
            str(inp),
            "-o",
            str(tmp_path / "x.nc"),
            "--model",
            str(tmp_path / "missing.pt"),
        ],
    )
    assert res.exit_code == 2 and "missing.pt" in res.output
    res = runner.invoke(
        app,
        [
            "predict",
            str(inp),
            "-o",
            str(tmp_path / "s.nc"),
            "--model",
            str(model),
            "--symmetries",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    _, g3 = read_fields(tmp_path / "s.nc")
    assert np.all(np.isfinite(g3[sample.fields.mask])) and not np.allclose(g3, g1, equal_nan=True)
    res = runner.invoke(
        app,
        [
            "estimate",
            str(inp),
            "-o",
            str(tmp_path / "t.nc"),
            "--method",
            "lattice",
            "--symmetries",
            "2",
        ],
    )
    assert res.exit_code == 2 and "--symmetries goes with --method cnn" in res.output
    for args, message in (
        (["--method", "lattice", "--exact-fold-rows", "2"], "--exact-fold-rows goes with"),
        (["--method", "cnn", "--exact-fold-rows", "-1"], "--exact-fold-rows must be >= 0"),
        (["--method", "cnn", "--exact-basins", "-1"], "--exact-basins must be >= 0"),
        (["--method", "selinv", "--exact-basins", "9"], "--exact-basins goes with --method cnn"),
        (["--method", "lattice", "--precision", "bfloat16"], "--precision goes with"),
        (["--method", "cnn", "--precision", "half"], "--precision must be one of float32"),
        (["--method", "lattice", "--exact-above", "0.02"], "--exact-above goes with"),
        # options of another method are refused, not ignored (selinv is the default)
        (["--model", "windows-smooth-m10"], "--model goes with --method cnn (got --method selinv"),
        (["--device", "cpu"], "--device goes with --method cnn"),
        # typed at their defaults they are still another method's options
        (["--device", "auto"], "--device goes with --method cnn"),
        (["--method", "lattice", "--symmetries", "1"], "--symmetries goes with"),
        (["--method", "lattice", "--precision", "float32"], "--precision goes with"),
        (["--method", "lattice", "--exact-fold-rows", "6"], "--exact-fold-rows goes with"),
        (["--tile", "8"], "--tile goes with --method cnn"),
        (["--samples", "5"], "--samples goes with --method randomization"),
        (["--method", "cnn", "--tolerance", "1e-3"], "--tolerance goes with --method selinv"),
        (["--backend", "torch"], "--backend goes with the methods that solve"),
        (["--method", "cnn", "--exact-above", "-0.1"], "--exact-above must be auto"),
        (["--method", "cnn", "--exact-above", "half"], "--exact-above must be auto"),
        (["--method", "cnn", "--model", str(model), "--exact-above", "0.02"], "no error model"),
    ):
        res = runner.invoke(app, ["estimate", str(inp), "-o", str(tmp_path / "t.nc"), *args])
        assert res.exit_code == 2 and message in res.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrong = random_fields(steps=8)
    write_fields(tmp_path / "m8.nc", wrong)
    res = runner.invoke(
        app,
        ["predict", str(tmp_path / "m8.nc"), "-o", str(tmp_path / "y.nc"), "--model", str(model)],
    )
    assert res.exit_code == 2 and "M=8" in res.output


def test_cli_cnn_counts_the_cells_it_doubts_and_names_what_solves_them(tmp_path):
    from diffnorm.subgrid import SUGGESTED_EXACT_ABOVE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random per-cell metrics are out of range
        f = random_fields(ny=64, nx=80, steps=10, seed=2)
        r = estimate(f, "cnn", exact_basins=NETWORK, model="windows-smooth-m10", device="cpu")
    # a file calibrated before models carried their τ: the package's
    tau = r.info["suggested_exact_above"]
    assert tau == SUGGESTED_EXACT_ABOVE
    served = r.error_estimate[f.counted & ~r.exact]
    doubted = int((~(served <= tau)).sum())
    assert doubted > 0
    write_fields(tmp_path / "in.nc", f)
    args = ["estimate", str(tmp_path / "in.nc"), "-o", str(tmp_path / "o.nc"), "--method", "cnn"]
    args += ["--model", "windows-smooth-m10", "-q"]
    res = CliRunner().invoke(app, args)
    said = " ".join(res.output.split())  # the console wraps long lines
    assert res.exit_code == 0, res.output
    assert f"on {doubted} of the {served.size} cells the network serves" in said
    assert f"above {tau:.2%} (the package's τ" in said  # this file has none of its own
    assert "--exact-above auto solves those exactly" in said
    # auto, in any case, reaches the method as the model's τ, written as a number
    res = CliRunner().invoke(app, [*args, "--exact-above", " AUTO"])
    assert res.exit_code == 0, res.output
    assert f"--exact-above {tau:g}:" in " ".join(res.output.split())
    with xr.open_dataset(tmp_path / "o.nc") as ds:
        assert ds.attrs["option_exact_above"] == "auto"  # as typed: what reruns the command
    res = CliRunner().invoke(app, [*args, "--exact-above", "0.5"])
    with xr.open_dataset(tmp_path / "o.nc") as ds:
        assert float(ds.attrs["option_exact_above"]) == 0.5
    from unittest import mock

    from diffnorm.subgrid import WHOLE_GRID_SHARE

    for tau, message, whole_share in (
        # the network is off far and wide there: the rounds run out before the cells beside
        # those where it was measured wrong do (the rounds: with no whole-grid solve instead)
        ("0.08", "cells the network serves still have an estimate above it", None),
        ("0.12", "round(s); every cell the network serves has its estimate at or below it", None),
        ("0", "every cell solved exactly (the doubted cells' halos held most", WHOLE_GRID_SHARE),
    ):
        with mock.patch("diffnorm.methods.cnn.cells_variance", _solves_whole_from(whole_share)):
            res = CliRunner().invoke(app, [*args, "--exact-above", tau])
        assert res.exit_code == 0, res.output
        assert message in " ".join(res.output.split())


def test_small_basins_are_exact_in_the_cnn_method(small_fields):
    from diffnorm.methods.cnn import DENSE_ROUNDOFF, small_basin_variance

    idx, var, bound = small_basin_variance(small_fields, 4)
    assert idx.size == 1 and bound.tolist() == [DENSE_ROUNDOFF]  # the one-cell lake
    brute = estimate(small_fields, "brute").variance[small_fields.mask]
    np.testing.assert_allclose(var, brute[idx], rtol=1e-12)
    assert small_basin_variance(small_fields, 0)[0].size == 0


def _basins():
    from diffnorm.grid import box_grid, fields_from_cell_length_scales

    mask = np.zeros((12, 14), dtype=bool)
    mask[1:3, 1:4] = True  # 6 cells
    mask[5, 1] = True  # 1 cell
    mask[8:11, 2] = True  # 3 cells, a channel
    mask[1:11, 6:13] = True  # 70 cells
    return fields_from_cell_length_scales(box_grid(*mask.shape, mask=mask), 2.0, 3.0, 6)


def test_several_small_basins_are_each_exact():
    from diffnorm.methods.cnn import BASIN_TOLERANCE, DENSE_ROUNDOFF, small_basin_variance

    f = _basins()
    brute = estimate(f, "brute").variance[f.mask]
    idx, var, bound = small_basin_variance(f, 10)
    assert idx.size == 10 and np.all(bound == DENSE_ROUNDOFF)  # the 70 cells left out
    np.testing.assert_allclose(var, brute[idx], rtol=1e-12)
    # above 64 cells a basin is solved by selinv, the larger ones together, to its tolerance
    idx, var, bound = small_basin_variance(f, 100)
    assert np.array_equal(np.sort(idx), np.arange(f.n_ocean))
    large = bound == BASIN_TOLERANCE
    assert large.sum() == 70 and np.all(bound[~large] == DENSE_ROUNDOFF)
    np.testing.assert_allclose(var, brute[idx], rtol=BASIN_TOLERANCE)


@pytest.mark.parametrize("topology", ["T", "F", "seam", "rows"])
def test_larger_basins_are_exact_across_a_fold_and_the_seam(topology):
    """small_basin_variance's selinv branch on basins along a north fold (T-fold copies with
    their cells), across the periodic seam, and on a crop of the rows they span."""
    from diffnorm.fields import Fields
    from diffnorm.methods.cnn import BASIN_TOLERANCE, small_basin_variance

    if topology in ("T", "F"):
        f = folded_fields(topology, ny=20, nx=40, steps=10, seed=1)
        mask = f.mask.astype(float)
        mask[14, :] = 0  # the top rows: a basin along the fold, another south of it
        fold = topology
    else:
        f = random_fields(ny=20, nx=30, steps=10, seed=4, islands=False)
        mask = np.ones(f.shape)
        mask[10, :] = 0
        if topology == "seam":
            mask[11:, 8:22] = 0  # a 9 × 16 block across the seam
        else:
            mask[:5], mask[17:] = 0, 0  # rows 5–9 and 11–16 only: solved on a crop of them
        fold = "none"
    g = Fields(mask, f.area, f.alpha_x, f.alpha_y, f.steps, True, north_fold=fold)
    exact = estimate(g, "brute").gamma.ravel()[g.ocean] ** -2.0
    idx, var, bound = small_basin_variance(g, 400)
    assert np.unique(idx).size == idx.size > 64 and np.all(bound == BASIN_TOLERANCE)
    if fold == "none":
        assert idx.size == g.n_ocean  # both basins of each grid (on a fold: the top one)
    np.testing.assert_allclose(var, exact[idx], rtol=BASIN_TOLERANCE)


def test_a_grid_of_small_basins_is_solved_without_the_network(network, small_fields):
    """Every basin at most exact_basins cells (the default's 2 048): exact γ, no network pass,
    no out-of-range warning (the tiny periodic grid's kernels wrap: the network's path warns),
    every cell's estimate its solve's bound."""
    from unittest import mock

    from diffnorm.subgrid import EXACT_BASINS

    exact = estimate(small_fields, "selinv").gamma
    with mock.patch.object(GammaNetwork, "predict_target", side_effect=AssertionError("ran")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = estimate(small_fields, "cnn", model=network, device="cpu")
    assert r.options["exact_basins"] == EXACT_BASINS and r.info["exact_basins_only"]
    assert r.info["exact_cells"] == small_fields.n_ocean
    assert r.exact[small_fields.mask].all() and not r.flags.any()
    np.testing.assert_allclose(r.gamma, exact, rtol=1e-6, equal_nan=True)
    assert np.all(r.error_estimate[small_fields.mask] <= 1e-6)
    with pytest.warns(OutOfRangeWarning):  # the network's own path, for comparison
        served = estimate(small_fields, "cnn", model=network, device="cpu", exact_basins=4)
    assert "exact_basins_only" not in served.info
    assert np.nanmax(np.abs(served.gamma / exact - 1)) > 1e-3


def test_the_command_line_says_when_no_network_ran(network, small_fields, tmp_path):
    src = write_fields(tmp_path / "in.nc", small_fields)
    model = network.save(tmp_path / "m.pt")
    args = ["estimate", str(src), "-o", str(tmp_path / "o.nc"), "--method", "cnn", "--model"]
    res = CliRunner().invoke(app, [*args, str(model), "--verify", "3"])
    said = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "within --exact-basins 2048 cells: all solved exactly, the network not run" in said
    assert "outside the trained range" not in said
    with xr.open_dataset(tmp_path / "o.nc") as ds:
        assert ds.attrs["info_exact_basins_only"] in (1, True)


def test_a_larger_basin_beside_the_network_s_is_exact():
    """A 70-cell basin beside a 1 512-cell one: exact when exact_basins holds it, the network's
    otherwise; the large basin is the network's either way."""
    from diffnorm.grid import box_grid, fields_from_cell_length_scales

    mask = np.zeros((40, 50), dtype=bool)
    mask[1:37, 1:43] = True  # 1 512 cells
    mask[30:37, 44:49] = True  # 35 cells, beside
    mask[1:15, 44:49] = True  # 70 cells
    f = fields_from_cell_length_scales(box_grid(*mask.shape, mask=mask), 2.0, 3.0, 10)
    exact = estimate(f, "selinv").gamma
    options = {"model": "windows-smooth-m10", "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant D: no range to keep to
        both = estimate(f, "cnn", exact_basins=100, **options)
        net = estimate(f, "cnn", exact_basins=NETWORK, **options)
    labels = f.basin_labels
    big = labels == labels[5, 5]
    eps = np.abs(both.gamma / exact - 1)
    assert np.nanmax(eps[~big]) < 1e-6 and both.exact[f.mask & ~big].all()
    assert not both.exact[big].any() and not net.exact[mask & (labels == labels[5, 45])].any()
    assert np.nanmax(np.abs(net.gamma / exact - 1)[labels == labels[5, 45]]) > 1e-4
    np.testing.assert_array_equal(both.gamma[big], net.gamma[big])


def test_demo_quick_runs_the_whole_pipeline(tmp_path):
    """`diffnorm demo --quick`: exact data, training, evaluation, model file, plots."""
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path), "--workers", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "| cnn |" in res.output and "randomization N=1000" in res.output
    model = GammaNetwork.load(tmp_path / "model.pt")
    assert model.metrics["quick demo grid test split"]["samples"] == 4
    for name in ("training.png", "evaluation/error_by_distance.png", "evaluation/evaluation.md"):
        assert (tmp_path / name).stat().st_size > 0
    # a second run resumes: the data are kept and training continues from its last checkpoint
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path), "--workers", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    # in folders of their own configuration: a full demo into the same --out does not clash
    assert len(list(tmp_path.glob("data-*"))) == 1 and len(list(tmp_path.glob("train-*"))) == 1


def test_the_shipped_choice_prefers_the_grid_s_own_model_then_the_general_one(network):
    import copy

    from diffnorm.ml.modelfile import closest_shipped

    fine, coarse, general = (copy.copy(network) for _ in range(3))
    fine.data = {**network.data, "cell_size_km": [80.0, 120.0], "shapes": ["14x17"]}
    coarse.data = {**network.data, "cell_size_km": [300.0, 450.0], "shapes": ["14x17"]}
    general.data = {**network.data, "cell_size_km": [5.0, 20.0], "shapes": ["64x64"]}
    general.name = "general"
    f = random_fields(steps=6)  # 14x17, cells of about 10 km
    # two models trained on this grid: the one nearer in cell size
    assert closest_shipped(f, [coarse, fine, general], "general") is fine
    big = f.replace(area=f.area * 2000.0)  # about 450 km
    assert closest_shipped(big, [coarse, fine, general], "general") is coarse
    other = random_fields(ny=20, nx=30, steps=6)  # a grid none was trained on: the general one
    assert closest_shipped(other, [coarse, fine, general], "general") is general
    assert closest_shipped(other, [coarse, fine]) is fine  # no default: nearest cell size
    polar = copy.copy(general)
    polar.data = {**general.data, "north_fold": ["F", "T", "none"]}
    polar.name = "polar"
    folded = folded_fields("F", steps=6, seed=1)  # folded: the general model that saw folds
    models = [coarse, fine, general, polar]
    assert closest_shipped(folded, models, "general") is polar
    assert closest_shipped(other, models, "general") is general  # no fold: the default
    both = copy.copy(polar)
    both.name = "both"  # a default that has seen folds wins over the fold specialist
    assert closest_shipped(folded, [*models, both], "both") is both
    with pytest.raises(ModelFileError, match="no shipped model for M=8"):
        closest_shipped(random_fields(steps=8), [coarse, fine])


def test_shipped_models_load_list_and_predict_well():
    from diffnorm.grid import built_in_grid, fields_from_cell_length_scales
    from diffnorm.lengthscales import random_cell_length_scales
    from diffnorm.metrics import sample_metrics
    from diffnorm.models import DEFAULT, shipped_models

    assert DEFAULT in shipped_models()
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0 and f"{DEFAULT} (default)" in res.output and "mean abs" in res.output
    grid = built_in_grid("latlon", resolution=4.0, polar_cap=80.0)
    rng = np.random.default_rng(123)  # a sample the model never saw
    d1, d2 = random_cell_length_scales(
        grid.mask.shape, rng, d_min=1.5, d_max=6.0, topology=grid.topology
    )
    fields = fields_from_cell_length_scales(grid, d1, d2, 10)
    exact = estimate(fields, "brute").gamma
    cnn = estimate(fields, "cnn", device="cpu")  # the default: the 4° model for this grid
    assert cnn.info["model"] == "latlon4-m10"
    # a grid of the training windows' shape is home to every window model: the default wins
    box = random_fields(ny=64, nx=64, steps=10, seed=1)
    assert resolve_model(None, box).name == DEFAULT
    # it has no error model: --exact-above picks the closest shipped model that has one
    hybrid = estimate(fields, "cnn", exact_basins=NETWORK, device="cpu", exact_above=0.05)
    assert hybrid.info["model"] == DEFAULT and hybrid.info["exact_above_rounds"]
    m = sample_metrics(cnn.gamma, exact, fields.mask)
    # measured 1.4e-2 / 2.2e-1 on the test split: far below analytic (0.68 mean)
    assert m["mean_abs"] < 0.03 and m["max_abs"] < 0.6, m
    for fold in ("T", "F"):  # a folded grid: the general model, which has seen folds
        folded = folded_fields(fold, ny=20, nx=24, steps=10, seed=2)
        r = estimate(folded, "cnn", exact_basins=NETWORK, device="cpu")
        assert r.info["model"] == DEFAULT and r.info["outside_fold"] == 0
    # another M: the network with M as an input
    fields6 = fields_from_cell_length_scales(grid, d1, d2, 6)
    cnn6 = estimate(fields6, "cnn", exact_basins=NETWORK, device="cpu")
    assert cnn6.info["model"] == "windows-general-m4-20"
    m6 = sample_metrics(cnn6.gamma, estimate(fields6, "brute").gamma, fields6.mask)
    # measured 2.8e-2 / 0.43: the 4° grid is all coast, and its own model knows M = 10 only
    assert m6["mean_abs"] < 0.05 and m6["max_abs"] < 0.8, m6


def test_predicting_imports_no_training_framework():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from diffnorm.grid import box_grid, fields_from_cell_length_scales\n"
        "from diffnorm.methods import estimate\n"
        "f = fields_from_cell_length_scales(box_grid(24, 30), 2.0, 2.0, steps=10)\n"
        "assert (estimate(f, 'cnn').gamma[f.mask] > 0).all()\n"
        "print(sorted(m for m in ('lightning', 'dask', 'distributed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("fold", ["T", "F"])
def test_exports_mirror_the_fold_like_the_model(network, fold, tmp_path):
    import onnxruntime

    from conftest import folded_fields
    from diffnorm.ml.export import export, reference_target
    from diffnorm.ml.features import raw_features

    fields = folded_fields(fold, ny=24, nx=30, steps=network.steps, seed=2)
    raw = raw_features(fields, network.encoding.distance)[None].astype(np.float32)
    ref = reference_target(network, raw, True, fold)
    np.testing.assert_allclose(ref[0], network.predict_target(fields, "cpu"), atol=1e-5)
    closed = reference_target(network, raw, True, "none")
    assert np.abs(closed[0, -2:] - ref[0, -2:]).max() > 1e-4  # the fold reaches the output
    ts, card = export(network, tmp_path / "m.ts", "torchscript", north_fold=fold, graph="features")
    out = torch.jit.load(str(ts))(torch.from_numpy(raw)).detach().numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert f'"north_fold": "{fold}"' in card.read_text()
    onnx, _ = export(network, tmp_path / "m.onnx", "onnx", north_fold=fold, graph="features")
    got = onnxruntime.InferenceSession(str(onnx)).run(None, {"raw_features": raw})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_exported_graphs_refuse_a_folded_grid_with_fewer_rows_than_the_halo(tmp_path):
    import onnxruntime

    from diffnorm.ml.export import export

    net = resolve_model("windows-general-m10")  # halo 16: an F fold needs 17 rows
    c = len(net.encoding.channels)
    raw = np.random.default_rng(0).standard_normal((1, c, 17, 8)).astype(np.float32)
    ts, _ = export(net, tmp_path / "m.ts", "torchscript", north_fold="F", graph="features")
    onnx, _ = export(net, tmp_path / "m.onnx", "onnx", north_fold="F", graph="features")
    scripted = torch.jit.load(str(ts))
    session = onnxruntime.InferenceSession(str(onnx))
    assert scripted(torch.from_numpy(raw)).shape == (1, 17, 8)  # the smallest that works
    assert session.run(None, {"raw_features": raw})[0].shape == (1, 17, 8)
    for rows in (16, 10):  # 16: the old graphs read a clamped slice; 10: returned 0 rows
        small = raw[:, :, :rows]
        with pytest.raises(
            torch.jit.Error, match=f"grid of {rows} rows .* at least 17 rows.*selinv"
        ):
            scripted(torch.from_numpy(small))
        # ONNX keeps no assert: an out-of-range gather, not wrong rows
        with pytest.raises(Exception, match="out of data bounds, idx=17"):
            session.run(None, {"raw_features": small})
    with pytest.raises(ValueError, match="grid of 16 rows .* at least 17 rows"):
        net.predict_target(folded_fields("F", ny=16, nx=8, steps=10), "cpu")


def test_cells_outside_the_training_data_are_flagged_and_written(network, tmp_path):
    import warnings

    import xarray as xr

    from conftest import folded_fields
    from diffnorm.ml.domain import FLAGS

    assert {"anisotropy", "stretching_max", "open_faces_seen"} <= set(network.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfRangeWarning)
        steep = random_fields(steps=6, anisotropy=6.0)  # κx/κy ≈ 36, trained up to ~9
        flags, report = network.check_fields(steep)
        assert report["anisotropy"] > steep.n_ocean // 2 and report["fold"] == 0
        assert np.all(flags[~steep.mask] == 0)
        folded = folded_fields("T", ny=24, nx=30, steps=6)  # the tiny model saw no fold
        flags, report = network.check_fields(folded)
    assert report["fold"] > 0 and np.all(flags[-1][folded.mask[-1]] & FLAGS["fold"])
    assert not np.any(flags[: -network.encoding.halo] & FLAGS["fold"])
    src = write_fields(tmp_path / "in.nc", steep)
    out = tmp_path / "out.nc"
    model = network.save(tmp_path / "m.pt")
    args = ["estimate", str(src), "-o", str(out), "-q", "--method", "cnn", "--model", str(model)]
    res = CliRunner().invoke(app, [*args, "--exact-basins", "64"])
    assert res.exit_code == 0 and "outside the trained range" in res.output, res.output
    with xr.open_dataset(out) as ds:
        written = ds["domain_flags"].values
        assert "anisotropy" in ds["domain_flags"].attrs["flag_meanings"]
        assert ds.attrs["info_outside_anisotropy"] == report_count(written, steep)


def test_a_periodic_grid_narrower_than_its_kernel_is_flagged(network):
    """A network cannot tell a periodic grid from the same grid tiled twice, while exact γ
    changes once the kernel meets itself across the wrap: such cells are flagged (by the
    east–west length scale only), carry no error estimate, and a grid one cell wide predicts
    instead of failing in the images baseline."""
    import warnings
    from dataclasses import replace

    from diffnorm.grid import box_grid, fields_from_cell_length_scales
    from diffnorm.ml.calibration import ErrorModel
    from diffnorm.ml.domain import FLAGS

    held = random_fields(ny=30, nx=40, seed=0)
    calibrated = ErrorModel.fit([(np.where(held.mask, 0.01, np.nan), held)])
    network = replace(network, error_model=calibrated.to_dict())

    def channel(nx: int, dx: float = 2.0, dy: float = 2.0):
        mask = np.ones((80, nx), bool)  # > 64 cells: not a small basin solved exactly
        mask[[0, -1]] = False
        grid = box_grid(80, nx, periodic_x=True, mask=mask)
        return fields_from_cell_length_scales(grid, dx, dy, network.steps)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfRangeWarning)
        for nx in (1, 4):
            f = channel(nx)
            flags, report = network.check_fields(f)
            assert report["wrap"] == f.n_ocean and np.all(flags[f.mask] & FLAGS["wrap"])
            assert np.all(np.isfinite(network.predict(f, "cpu")[f.mask]))
            r = estimate(f, "cnn", exact_basins=NETWORK, model=network)
            assert np.all(np.isnan(r.error_estimate[f.mask]))
        wide = estimate(channel(40), "cnn", exact_basins=NETWORK, model=network).error_estimate
        assert np.all(np.isfinite(wide[channel(40).mask]))
        # κ along y does not wrap: a long D across the channel is no reason to flag
        assert network.check_fields(channel(16, dx=1.5, dy=5.0))[1]["wrap"] == 0
        assert network.check_fields(channel(16, dx=5.0, dy=1.5))[1]["wrap"] > 0
        assert network.check_fields(channel(40))[1]["wrap"] == 0
    closed = random_fields(ny=20, nx=24, steps=network.steps, periodic_x=False)
    assert network.check_fields(closed)[1]["wrap"] == 0


def report_count(flags, fields):
    return int(((flags & 2) > 0)[fields.counted].sum())


@pytest.mark.slow
def test_torchscript_runs_in_cpp_libtorch(network, tmp_path):
    """The exported fields graph loads and runs in libtorch from C++ (what FTorch calls) on a
    host's float64 arrays, on a grid narrower than the halo, and gives the γ of Python."""
    import shutil
    import subprocess
    from pathlib import Path

    from diffnorm.ml.export import export
    from diffnorm.ml.pipeline import FieldsToGamma

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler on this machine")
    root = Path(torch.__file__).parent
    exe = tmp_path / "run"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    source = Path(__file__).parent / "cpp" / "run_torchscript.cpp"
    subprocess.run(
        [
            compiler,
            "-std=c++20",
            "-O0",
            str(source),
            "-o",
            str(exe),
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        ]
        + [f"-I{root / 'include'}", f"-I{root / 'include/torch/csrc/api/include'}"]
        + [f"-L{root / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{root / 'lib'}"],
        check=True,
        capture_output=True,
    )
    ts, _ = export(network, tmp_path / "m.ts", "torchscript")
    ny, nx = 9, max(2, network.encoding.halo - 1)  # narrower than the halo: the wrap repeats it
    out = subprocess.run([str(exe), str(ts), str(ny), str(nx)], check=True, capture_output=True)
    got = np.array(out.stdout.split(), dtype=np.float64).reshape(1, ny, nx)
    k = torch.arange(ny * nx, dtype=torch.float64).reshape(1, ny, nx)
    inputs = (
        (torch.sin(k * 0.37) > -0.8).double(),
        1e8 * (1.2 + 0.3 * torch.sin(k * 0.11)),
        1e8 * (0.8 + 0.3 * torch.cos(k * 0.23)),
        1e8 * (0.7 + 0.2 * torch.cos(k * 0.19)),
    )
    with torch.no_grad():
        want = FieldsToGamma(network, True).eval()(*inputs).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_exports_take_float64_any_size_and_pin_no_device(network, tmp_path):
    import onnxruntime

    from diffnorm.ml.export import export, reference_target

    ts, _ = export(network, tmp_path / "m.ts", "torchscript", graph="features")
    onnx, _ = export(network, tmp_path / "m.onnx", "onnx", graph="features")
    module = torch.jit.load(str(ts))
    assert '"cpu"' not in str(module.inlined_graph)  # would break a GPU run
    session = onnxruntime.InferenceSession(str(onnx))
    h = network.encoding.halo
    for shape in ((h - 1, h - 1), (h - 1, 40), (40, h - 1)):  # smaller than the halo somewhere
        x = np.random.default_rng(1).normal(size=(1, 5, *shape))
        ref = reference_target(network, x, True)
        assert ref.shape == (1, *shape)
        got = module(torch.from_numpy(x)).detach().numpy()  # float64 in
        np.testing.assert_allclose(got, ref, atol=1e-5)
        onnx_out = session.run(None, {"raw_features": x.astype(np.float32)})[0]
        np.testing.assert_allclose(onnx_out, ref, atol=1e-4)


# the walk mean's export takes ~20 s a grid: a closed, a periodic and an F-fold grid (the
# T fold adds only same_on_copies, which the other targets test)
GRAPH_CASES = [
    (fold, target)
    for target in ("log_ratio", "log_images", "log_images_smooth", "log_images_walk")
    for fold in ("none", "T", "F")
    if (fold, target) != ("T", "log_images_walk")
]


@pytest.mark.parametrize(("fold", "target"), GRAPH_CASES)
def test_the_fields_graph_is_the_python_prediction(network, fold, target, tmp_path):
    """mask, area, alpha_x, alpha_y (float64) in, γ out: the same γ as GammaNetwork.predict,
    in PyTorch, TorchScript and ONNX, on a closed basin, a periodic grid and both folds, with
    the analytic, the images and the smoothed images baselines (the smoothing, and the local
    area channel, cross the wrap and the fold)."""
    from dataclasses import replace

    import onnxruntime

    # the smoothed baseline's case also takes the local area channel: both are 3×3 ocean means
    area = "local" if target == "log_images_smooth" else network.encoding.area
    network = replace(network, encoding=replace(network.encoding, target=target, area=area))

    from conftest import folded_fields
    from diffnorm.ml.export import export
    from diffnorm.ml.pipeline import FieldsToGamma

    if fold == "none":
        cases = [
            random_fields(ny=20, nx=26, steps=network.steps, islands=False, periodic_x=p)
            for p in (True, False)
        ]
    else:
        cases = [folded_fields(fold, ny=20, nx=26, steps=network.steps, seed=3)]
    for f in cases:
        arrays = [f.mask.astype(np.float64), f.area, f.alpha_x, f.alpha_y]
        inputs = tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in arrays)
        with torch.no_grad():
            got = FieldsToGamma(network, f.periodic_x, f.north_fold).eval()(*inputs)[0].numpy()
        want = network.predict(f, "cpu")
        m = f.mask
        np.testing.assert_allclose(got[m], want[m], rtol=1e-5)
        assert np.all(np.isnan(got[~m]))
        if fold == "T":  # a T-fold copy is its cell: one γ for both (log γ² was up to 0.2 apart)
            rep = f.topology.representative.reshape(f.shape)
            copies = f.topology.duplicate & m
            assert copies.any()
            np.testing.assert_array_equal(want[copies], want.ravel()[rep[copies]])
            np.testing.assert_array_equal(got[copies], got.ravel()[rep[copies]])
        ts, card = export(
            network, tmp_path / "f.ts", "torchscript", f.periodic_x, north_fold=f.north_fold
        )
        loaded = torch.jit.load(str(ts))
        traced = loaded(*inputs)[0].numpy()  # no grad: an inference graph
        np.testing.assert_allclose(traced[m], want[m], rtol=1e-5)
        # a device constant would make the graph fail on a GPU (found on an H200: the halo's
        # fill was made with device=x.device, which the tracer froze to "cpu")
        assert 'value="cpu"' not in str(loaded.inlined_graph)
        assert '"alpha_x"' in card.read_text()
        # what the host must solve itself: small basins, and under a fold its band
        said = json.loads(card.read_text())["gamma"]
        assert "2048 cells" in said and ("rows under the north fold" in said) == (fold != "none")
        onnx, _ = export(
            network, tmp_path / "f.onnx", "onnx", f.periodic_x, north_fold=f.north_fold
        )
        feed = dict(
            zip(["mask", "area", "alpha_x", "alpha_y"], (a[None] for a in arrays), strict=True)
        )
        out = onnxruntime.InferenceSession(str(onnx)).run(None, feed)[0][0]
        np.testing.assert_allclose(out[m], want[m], rtol=1e-4)


def test_a_gate_leaves_the_open_ocean_to_the_baseline(network, tmp_path):
    from dataclasses import replace

    from diffnorm.methods.analytic import analytic_gamma_squared

    gated = replace(network, encoding=replace(network.encoding, gate=(1.5, 2.5)))
    back = GammaNetwork.load(gated.save(tmp_path / "g.pt"))
    assert back.encoding.gate == (1.5, 2.5)
    f = random_fields(ny=40, nx=40, steps=network.steps, islands=False, periodic_x=False)
    weight = back.encoding.gate_weight(f)
    assert weight.max() == 1.0 and weight.min() == 0.0  # full at the coast, none far out
    gamma = back.predict(f, "cpu")
    far = weight == 0
    base = analytic_gamma_squared(f)  # the tiny network corrects the analytic estimate
    np.testing.assert_allclose(gamma[far] ** 2, base[far], rtol=1e-12)
    near = weight == 1
    np.testing.assert_allclose(gamma[near], network.predict(f, "cpu")[near], rtol=1e-12)
    from diffnorm.ml.pipeline import FieldsToGamma

    arrays = [f.mask.astype(np.float64), f.area, f.alpha_x, f.alpha_y]
    with torch.no_grad():
        graph = FieldsToGamma(back, False)(*(torch.from_numpy(a)[None] for a in arrays))[0]
    np.testing.assert_allclose(graph.numpy()[f.mask], gamma[f.mask], rtol=1e-5)


@pytest.mark.parametrize(
    ("periodic", "target"),
    [
        (False, "log_images"),
        (True, "log_images"),
        (True, "log_images_smooth"),
        (False, "log_images_walk"),
    ],
)
def test_an_images_model_leaves_box_exact_cells_to_the_exact_baseline(
    network, periodic, target, tmp_path
):
    """Where a cell's reach holds only its straight-line box and one κ, the images value is
    exact and the network's correction is dropped, in Python and in the fields graph alike."""
    from dataclasses import replace

    from diffnorm.grid import box_grid, fields_from_cell_length_scales
    from diffnorm.methods.images import box_exact_cells, images_gamma_squared
    from diffnorm.ml.pipeline import FieldsToGamma

    net = replace(network, encoding=replace(network.encoding, target=target))
    mask = np.zeros((28, 36), dtype=bool)
    mask[1:-1, 1:-1] = True
    if periodic:
        mask[1:-1, :] = True
    mask[8, 20] = False  # one land cell: the cells that reach it are not exact
    grid = box_grid(*mask.shape, mask=mask, periodic_x=periodic)
    f = fields_from_cell_length_scales(grid, 1.5, 1.5, net.steps)
    exact = box_exact_cells(f)
    assert 0 < exact.sum() < f.mask.sum()
    gamma = net.predict(f, "cpu")
    np.testing.assert_allclose(gamma[exact] ** 2, images_gamma_squared(f)[exact], rtol=1e-12)
    assert (
        np.abs(gamma[~exact & f.mask] ** 2 / images_gamma_squared(f)[~exact & f.mask] - 1).max()
        > 1e-3
    )
    arrays = [f.mask.astype(np.float64), f.area, f.alpha_x, f.alpha_y]
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in arrays)
    with torch.no_grad():
        got = FieldsToGamma(net, f.periodic_x).eval()(*inputs)[0].numpy()
    np.testing.assert_allclose(got[f.mask], gamma[f.mask], rtol=1e-5)
    import onnxruntime

    from diffnorm.ml.export import export

    ts, _ = export(net, tmp_path / "b.ts", "torchscript", f.periodic_x)  # traced on 48×64
    traced = torch.jit.load(str(ts))(*inputs)[0].detach().numpy()
    np.testing.assert_allclose(traced[f.mask], gamma[f.mask], rtol=1e-5)
    onnx, _ = export(net, tmp_path / "b.onnx", "onnx", f.periodic_x)
    feed = dict(zip(["mask", "area", "alpha_x", "alpha_y"], (a[None] for a in arrays), strict=True))
    out = onnxruntime.InferenceSession(str(onnx)).run(None, feed)[0][0]
    np.testing.assert_allclose(out[f.mask], gamma[f.mask], rtol=1e-4)


def test_a_unet_model_reads_wrap_context_on_a_periodic_grid(network, tmp_path):
    """A U-Net's receptive field outgrows its halo: on a periodic grid the prediction pads
    its ``wrap_context`` too, so it moves with the grid when the seam moves by whole pooling
    cells, and the TorchScript and ONNX fields graphs pad the same."""
    from dataclasses import replace

    import onnxruntime

    from diffnorm.augment import Transform
    from diffnorm.ml.export import export
    from diffnorm.ml.networks import build_network

    arch = {"arch": "unet", "in_channels": network.arch["in_channels"], "width": 4}
    arch |= {"levels": 2, "halo": network.encoding.halo}
    torch.manual_seed(0)
    unet = replace(network, net=build_network(**arch), arch=arch, name="tiny-unet")
    assert unet.wrap_context(True) != (0, 0) and unet.wrap_context(False) == (0, 0)
    f = random_fields(ny=20, nx=24, steps=network.steps, islands=True, periodic_x=True)
    t = unet.predict_target(f, "cpu")
    for shift in (4, 12):
        moved = Transform(shift_x=shift).fields(f)
        np.testing.assert_allclose(
            unet.predict_target(moved, "cpu"), np.roll(t, shift, axis=1), atol=1e-6
        )
    want, m = unet.predict(f, "cpu"), f.mask
    arrays = [f.mask.astype(np.float64), f.area, f.alpha_x, f.alpha_y]
    ts, card = export(unet, tmp_path / "u.ts", "torchscript", True)
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in arrays)
    traced = torch.jit.load(str(ts))(*inputs)[0].detach().numpy()
    np.testing.assert_allclose(traced[m], want[m], rtol=1e-5)
    assert '"wrap_context"' in card.read_text()
    onnx, _ = export(unet, tmp_path / "u.onnx", "onnx", True)
    feed = dict(zip(["mask", "area", "alpha_x", "alpha_y"], (a[None] for a in arrays), strict=True))
    out = onnxruntime.InferenceSession(str(onnx)).run(None, feed)[0][0]
    np.testing.assert_allclose(out[m], want[m], rtol=1e-4)


def test_choosing_a_shipped_model_twice_reads_no_file_the_second_time():
    from unittest import mock

    from diffnorm.ml.modelfile import GammaNetwork, _cached, resolve_model
    from diffnorm.models import shipped_models

    assert _cached.cache_info().maxsize > len(shipped_models())  # every one stays cached
    f = random_fields(ny=20, nx=24, steps=10, seed=1)
    first = resolve_model(None, f)
    with mock.patch.object(GammaNetwork, "load", side_effect=AssertionError("read again")):
        assert resolve_model(None, f) is first
        assert resolve_model(None, f, calibrated=True).error_model is not None
