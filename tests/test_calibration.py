"""The per-cell error estimate: quantiles of |ε| by cell class, calibrated on held-out data."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_fields
from diffnorm.ml.calibration import MIN_CELLS, ErrorModel, cell_classes, coverage


def _eps(fields, seed: int) -> np.ndarray:
    """|ε| that grows toward the coast: 0.1/d times a uniform draw."""
    di, _ = cell_classes(fields)
    rng = np.random.default_rng(seed)
    scale = np.array([0.1, 0.05, 0.02, 0.01, 0.005])[np.maximum(di, 0)]
    return np.where(fields.mask, scale * rng.uniform(size=fields.shape), np.nan)


def test_the_estimate_covers_its_quantile_on_data_like_the_held_out_set():
    held = [random_fields(ny=30, nx=40, seed=s) for s in range(6)]
    model = ErrorModel.fit([(_eps(f, s), f) for s, f in enumerate(held)], quantile=0.8)
    fresh = random_fields(ny=30, nx=40, seed=99)
    eps = _eps(fresh, 99)
    est = model.estimate(fresh)
    assert np.all(np.isnan(est[~fresh.mask]))
    assert 0.7 < coverage(eps, est, fresh.counted) < 0.9
    di, _ = cell_classes(fresh)
    assert est[di == 0].min() > est[di == 4].max()  # the coast is where the error is
    back = ErrorModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(back.estimate(fresh), est)


def test_sparse_classes_take_their_distance_row():
    f = random_fields(ny=30, nx=40, seed=1)
    model = ErrorModel.fit([(_eps(f, 1), f)], quantile=0.5)
    for row, counts in zip(model.table, model.cells, strict=True):
        thin = [v for v, n in zip(row, counts, strict=True) if n < MIN_CELLS]
        assert all(v == thin[0] for v in thin)


def test_bad_quantile_and_other_classes_are_refused():
    f = random_fields(ny=20, nx=20, seed=2)
    with pytest.raises(ValueError, match="quantile"):
        ErrorModel.fit([(_eps(f, 2), f)], quantile=1.5)
    d = ErrorModel.fit([(_eps(f, 2), f)]).to_dict()
    d["face_bins"] = [[0, 4]]
    with pytest.raises(ValueError, match="calibrate it again"):
        ErrorModel.from_dict(d)


def _with_correction(fields, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A correction t, constant on 8×8 blocks, and |ε| = |t|·uniform: the farther the network
    moved, the larger."""
    rng = np.random.default_rng(seed)
    ny, nx = fields.shape
    blocks = rng.choice([0.01, 0.05, 0.2, 0.6], size=(-(-ny // 8), -(-nx // 8)))
    t = np.where(fields.mask, np.kron(blocks, np.ones((8, 8)))[:ny, :nx], 0.0)
    return np.where(fields.mask, t * rng.uniform(size=fields.shape), np.nan), t


def test_the_correction_bins_sharpen_the_estimate_and_old_models_still_load():
    held = [random_fields(ny=30, nx=40, seed=s) for s in range(6)]
    triples = [(*_with_correction(f, s), f) for s, f in enumerate(held)]
    model = ErrorModel.fit([(e, f, t) for e, t, f in triples], quantile=0.8)
    blunt = ErrorModel.fit([(e, f) for e, _, f in triples], quantile=0.8)
    assert model.by_correction is not None and blunt.by_correction is None
    fresh = random_fields(ny=30, nx=40, seed=99)
    eps, t = _with_correction(fresh, 99)
    sharp = model.estimate(fresh, t)
    assert 0.7 < coverage(eps, sharp, fresh.counted) < 0.9
    assert 0.7 < coverage(eps, blunt.estimate(fresh), fresh.counted) < 0.9
    ocean = fresh.counted
    # (sparse classes fall back to their class's value in every bin)
    assert np.median(sharp[ocean & (t == 0.6)]) > 10 * np.median(sharp[ocean & (t == 0.01)])
    # sharper: the cells with large errors are the ones it flags
    big = ocean & (eps > 0.3)
    assert np.mean(sharp[big] > 0.3) > 0.8 and np.mean(blunt.estimate(fresh)[big] > 0.3) < 0.2
    assert np.isfinite(model.estimate(fresh)[ocean]).all()  # without a correction: by class
    back = ErrorModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(back.estimate(fresh, t), sharp)
    old = blunt.to_dict()  # a file from before the bins: the correction is ignored
    assert "by_correction" not in old
    np.testing.assert_array_equal(
        ErrorModel.from_dict(old).estimate(fresh, t), blunt.estimate(fresh)
    )
    d = model.to_dict()
    d["correction_edges"] = [0.5]
    with pytest.raises(ValueError, match="calibrate it again"):
        ErrorModel.from_dict(d)


def test_a_cell_beside_a_large_correction_takes_its_bin():
    """Errors that sit next to where the network moved far (the cell's own |t| small, a
    neighbour's large): with the 3×3 window the estimate is large there and small elsewhere;
    with the cell's own |t| (window 1) it can cover them only by being large on nearly every
    cell. A file from before the window keeps reading the cell's own |t|."""
    import diffnorm.ml.calibration as calibration

    f = random_fields(ny=30, nx=40, islands=False)  # periodic: the square wraps
    t = np.zeros(f.shape)
    t[10, 0] = 0.6
    bins = calibration.correction_bins(f, t, 3)
    assert bins[9:12, -1].tolist() == [3, 3, 3] and bins[10, 2] == bins[12, 0] == 0

    def sample(seed):
        f = random_fields(ny=30, nx=40, seed=seed, islands=False)
        rng = np.random.default_rng(seed)
        t = np.where(rng.uniform(size=f.shape) < 0.05, 0.6, 0.01)  # isolated large moves
        near = calibration.correction_bins(f, t, 3) == len(calibration.CORRECTION_EDGES)
        eps = np.where(near & (t < 0.1), 0.5, 0.01) * rng.uniform(size=f.shape)
        return eps, f, t

    held = [sample(s) for s in range(6)]
    model = ErrorModel.fit(held, quantile=0.8)
    own = ErrorModel.fit(held, quantile=0.8, window=1)
    assert (model.correction_window, own.correction_window) == (3, 1)
    eps, f, t = sample(99)
    big, ocean = f.counted & (eps > 0.1), f.counted
    assert big.sum() > 50
    sharp, blunt = model.estimate(f, t), own.estimate(f, t)
    assert np.mean(sharp[big] > 0.1) > 0.95 and np.mean(sharp[ocean] > 0.1) < 0.45
    assert np.mean(blunt[ocean] > 0.1) > 0.8  # covers them only by flagging nearly all
    old = {k: v for k, v in own.to_dict().items() if k != "correction_window"}
    np.testing.assert_array_equal(ErrorModel.from_dict(old).estimate(f, t), blunt)
    back = ErrorModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(back.estimate(f, t), sharp)


def test_data_with_several_m_scale_each_group_to_its_quantile():
    """A network twice as wrong at M = 4 as at M = 16: pooled, M = 4 is under-covered; the
    factor per M group covers the quantile in each."""
    held = [random_fields(ny=30, nx=40, seed=s, steps=4 if s % 2 else 16) for s in range(8)]

    def eps(f, seed):
        return _eps(f, seed) * (2.0 if f.steps == 4 else 1.0)

    model = ErrorModel.fit([(eps(f, s), f) for s, f in enumerate(held)], quantile=0.8)
    assert model.by_steps is not None and model.by_steps[0] > 1.0 > model.by_steps[2]
    pooled = ErrorModel(model.quantile, model.table, model.cells)
    for steps, seed in ((4, 101), (16, 100)):
        fresh = random_fields(ny=30, nx=40, seed=seed, steps=steps)
        e = eps(fresh, seed)
        assert 0.72 < coverage(e, model.estimate(fresh), fresh.counted) < 0.88
        if steps == 4:
            assert coverage(e, pooled.estimate(fresh), fresh.counted) < 0.72
    back = ErrorModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(back.estimate(fresh), model.estimate(fresh))
    one_m = ErrorModel.fit([(_eps(f, 0), f) for f in held[::2]])  # one M: no factors
    assert one_m.by_steps is None and "by_steps" not in one_m.to_dict()


def test_cells_under_a_fold_get_their_own_factor():
    """A network ten times as wrong in the rows under its exact fold band: those rows are
    fitted apart, so the fold factor covers the quantile there and the classes cover it
    everywhere else (neither over- nor under-covered)."""
    from conftest import folded_fields
    from diffnorm.ml.calibration import FOLD_ROWS, fold_zone
    from diffnorm.subgrid import EXACT_FOLD_ROWS

    def eps(f, seed):
        e = _eps(f, seed)
        if f.topology.folded:
            e[-FOLD_ROWS:] *= 10.0
            e[-EXACT_FOLD_ROWS:] = np.nan  # the exact band: no network error to calibrate on
        return e

    held = [folded_fields("TF"[s % 2], ny=40, nx=40, seed=s) for s in range(8)]
    held += [random_fields(ny=40, nx=40, seed=s) for s in range(8)]
    model = ErrorModel.fit([(eps(f, s), f) for s, f in enumerate(held)], quantile=0.8)
    assert model.by_fold is not None and 8.0 < model.by_fold < 12.0
    pooled = ErrorModel(model.quantile, model.table, model.cells)
    for fold, seed in (("F", 100), ("T", 101)):
        fresh = folded_fields(fold, ny=40, nx=40, seed=seed)
        e = eps(fresh, seed)
        zone = fold_zone(fresh) & fresh.counted
        assert 0.7 < coverage(e, model.estimate(fresh), zone) < 0.9
        assert coverage(e, pooled.estimate(fresh), zone) < 0.5
        south = fresh.counted & ~fold_zone(fresh)
        assert 0.7 < coverage(e, model.estimate(fresh), south) < 0.9
        est = model.estimate(fresh)
        np.testing.assert_array_equal(est[south], pooled.estimate(fresh)[south])
        assert np.isnan(est[-EXACT_FOLD_ROWS:]).all()  # never held out: unknown
    flat = random_fields(ny=40, nx=40, seed=102)  # no fold: no factor
    np.testing.assert_array_equal(model.estimate(flat), pooled.estimate(flat))
    assert 0.7 < coverage(_eps(flat, 102), model.estimate(flat), flat.counted) < 0.9
    back = ErrorModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(back.estimate(fresh), model.estimate(fresh))
    d = model.to_dict()
    d["fold_rows"] = 10
    with pytest.raises(ValueError, match="calibrate it again"):
        ErrorModel.from_dict(d)
    old = {k: v for k, v in model.to_dict().items() if k not in ("by_fold", "fold_rows")}
    np.testing.assert_array_equal(ErrorModel.from_dict(old).estimate(fresh), pooled.estimate(fresh))
    unfolded = ErrorModel.fit([(_eps(f, 0), f) for f in held[8:]])
    assert unfolded.by_fold is None and "by_fold" not in unfolded.to_dict()


def test_dead_ends_get_their_own_factor():
    """A network five times as wrong at dead ends: fitted apart, the factor covers the
    quantile there, and the channels and corners of their class keep theirs."""
    import dataclasses

    from diffnorm.ml.calibration import dead_ends

    def comb(seed):
        """A land strip with 1-cell inlets every other column: a dead end at each inlet's head."""
        f = random_fields(ny=40, nx=40, seed=seed, islands=False)
        mask = f.mask.copy()
        mask[20:25] = 0
        mask[20:23, 1::2] = 1
        return dataclasses.replace(f, mask=mask)

    def eps(f, seed):
        return np.where(dead_ends(f), 5.0, 1.0) * _eps(f, seed)

    held = [comb(s) for s in range(10)]
    assert sum(int(dead_ends(f).sum()) for f in held) >= MIN_CELLS
    model = ErrorModel.fit([(eps(f, s), f) for s, f in enumerate(held)], quantile=0.8)
    assert model.by_dead_end is not None and 3.0 < model.by_dead_end < 8.0
    pooled = ErrorModel(model.quantile, model.table, model.cells)
    fresh = [comb(s) for s in (100, 101, 102, 103)]
    e = np.concatenate([eps(f, s).ravel() for s, f in enumerate(fresh)])
    est = np.concatenate([model.estimate(f).ravel() for f in fresh])
    plain = np.concatenate([pooled.estimate(f).ravel() for f in fresh])
    ends = np.concatenate([(dead_ends(f) & f.counted).ravel() for f in fresh])
    rest = np.concatenate([(~dead_ends(f) & f.counted).ravel() for f in fresh])
    assert 0.6 < coverage(e, est, ends) and coverage(e, plain, ends) < 0.5
    assert 0.7 < coverage(e, est, rest) < 0.9
    np.testing.assert_array_equal(est[rest], plain[rest])
    back = ErrorModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(back.estimate(fresh[0]), model.estimate(fresh[0]))
    old = {k: v for k, v in model.to_dict().items() if k not in ("by_dead_end", "dead_end_faces")}
    np.testing.assert_array_equal(
        ErrorModel.from_dict(old).estimate(fresh[0]), pooled.estimate(fresh[0])
    )
    d = model.to_dict()
    d["dead_end_faces"] = 2
    with pytest.raises(ValueError, match="calibrate it again"):
        ErrorModel.from_dict(d)


def test_served_threshold_is_the_largest_tau_whose_served_tail_stays_under_the_target():
    from diffnorm.ml.calibration import served_threshold

    # three classes of 20 000 cells: estimates 0.006 / 0.01 / 0.02, errors up to 0.01 / 0.04 /
    # 0.2; served Q99.99 is 0.01, then ~0.04, then ~0.2 as τ takes in each class
    rng = np.random.default_rng(0)
    est = np.repeat([0.006, 0.01, 0.02], 20_000)
    eps = rng.uniform(size=est.size) * np.repeat([0.01, 0.04, 0.2], 20_000)
    eps[:5] = np.nan  # cells with no held-out error (solved exactly) are left out
    assert served_threshold([eps], [est], target=0.045) == 0.01
    assert served_threshold([eps], [est], target=0.5) == 0.02
    assert served_threshold([eps], [est], target=0.005) is None  # the first class fails
    # a class above the target stops the scan: a larger τ past it is not taken
    assert served_threshold([eps], [np.repeat([0.006, 0.02, 0.01], 20_000)], 0.045) == 0.006


def test_the_fit_stores_its_tau_and_files_without_one_still_load():
    held = [random_fields(ny=30, nx=40, seed=s) for s in range(6)]
    model = ErrorModel.fit([(_eps(f, s), f) for s, f in enumerate(held)])
    assert model.exact_above is not None and 0.005 <= model.exact_above <= 0.03
    d = model.to_dict()
    assert ErrorModel.from_dict(d).exact_above == model.exact_above
    del d["exact_above"]
    assert ErrorModel.from_dict(d).exact_above is None
    # errors far above the target everywhere: the smallest τ, not none (a file with none
    # takes the package's larger τ)
    from diffnorm.ml.calibration import TAU_RANGE

    wrong = [(np.where(f.mask, 1.0, np.nan), f) for f in held]
    assert ErrorModel.fit(wrong).exact_above == TAU_RANGE[0]
