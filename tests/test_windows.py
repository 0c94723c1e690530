"""Geometry windows for training: shapes, determinism and exact γ on them."""

from __future__ import annotations

import numpy as np
import pytest

from diffnorm.data import generate
from diffnorm.data.config import ConfigError, config_from_dict
from diffnorm.data.windows import KINDS, sharp_steps, window_mask
from diffnorm.fields import read_fields
from diffnorm.methods import estimate
from diffnorm.topology import Topology


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_seeded_and_has_ocean_and_land(kind):
    a = window_mask(np.random.default_rng(7), 24, 32, kind)
    b = window_mask(np.random.default_rng(7), 24, 32, kind)
    assert a.shape == (24, 32) and a.dtype == bool
    assert np.array_equal(a, b)
    assert 0 < a.sum() < a.size or kind in ("islands", "lakes", "coast")


def test_channels_and_lakes_make_narrow_and_separate_water():
    rng = np.random.default_rng(0)
    narrow = basins = 0
    for _ in range(20):
        m = window_mask(rng, 32, 32, "channels")
        # an ocean cell with land on both sides along one axis: a one-cell-wide passage
        pad = np.pad(m, 1)
        across_x = ~pad[1:-1, :-2] & ~pad[1:-1, 2:]
        across_y = ~pad[:-2, 1:-1] & ~pad[2:, 1:-1]
        narrow += int((m & (across_x | across_y)).any())
        lakes = window_mask(rng, 32, 32, "lakes")
        basins += int(Topology.of(lakes.shape).basin_labels(lakes).max() > 1)
    assert narrow >= 5 and basins >= 5


def test_sharp_steps_stay_in_range_and_make_a_front():
    rng = np.random.default_rng(3)
    d = np.full((20, 20), 3.0)
    d1, d2 = sharp_steps(rng, d, d, 1.5, 8.0)
    assert d1.min() >= 1.5 and d1.max() <= 8.0
    assert np.unique(np.round(d1, 12)).size == 2


def test_a_windows_dataset_has_one_geometry_per_sample(tmp_path):
    raw = {
        "grid": {"name": "windows", "ny": 16, "nx": 16},
        "steps": 6,
        "parameters": {"d_min": 1.5, "d_max": 3.0, "sharp_fraction": 0.5},
        "splits": {"train": 3},
        "seed": 1,
    }
    config = config_from_dict(raw)
    assert config.method == "selinv"
    generate(config, tmp_path / "ds", workers=1)
    masks = []
    for k in range(3):
        fields, gamma = read_fields(tmp_path / "ds" / "train" / f"train_{k:05d}.nc")
        assert np.all(np.isfinite(gamma[fields.mask]))
        masks.append(fields.mask)
    assert not np.array_equal(masks[0], masks[1])


def test_windows_config_needs_a_size():
    with pytest.raises(ConfigError, match="grid.ny and grid.nx"):
        config_from_dict({"grid": {"name": "windows"}})


def test_stretched_windows_vary_their_cell_sizes():
    from diffnorm.data.windows import stretched_metrics, window_mask

    mask = window_mask(np.random.default_rng(4), 32, 32, "basin")
    m = stretched_metrics(np.random.default_rng(5), mask, 0.3)
    spread = np.log(m.area).std()
    assert 0.2 < spread < 1.5 and not m.periodic_x
    np.testing.assert_allclose(m.e1u[:, :-1], 0.5 * (m.e1t[:, :-1] + m.e1t[:, 1:]))
    np.testing.assert_allclose(m.e2v[:-1], 0.5 * (m.e2t[:-1] + m.e2t[1:]))
    again = stretched_metrics(np.random.default_rng(5), mask, 0.3)
    np.testing.assert_array_equal(again.e1t, m.e1t)  # the same stream, the same grid


def test_polar_windows_are_fold_tops_with_areas_falling_to_the_pole(tmp_path):
    raw = {
        "grid": {"name": "windows", "ny": 16, "nx": 16},
        "steps": 6,
        "parameters": {"d_min": 1.5, "d_max": 3.0, "polar_fraction": 1.0},
        "splits": {"train": 4},
        "seed": 4,  # draws T and F folds
    }
    generate(config_from_dict(raw), tmp_path / "ds", workers=1)
    folds = set()
    for k in range(4):
        fields, gamma = read_fields(tmp_path / "ds" / "train" / f"train_{k:05d}.nc")
        assert fields.periodic_x
        assert np.all(np.diff(fields.area[:, 0]) < 0)  # toward the pole
        assert 0.35 < fields.area[-1, 0] / fields.area[-2, 0] < 0.995
        if fields.north_fold not in folds:  # the target is exact γ: brute force, each fold
            folds.add(fields.north_fold)
            brute = estimate(fields, "brute").gamma
            np.testing.assert_allclose(gamma[fields.mask], brute[fields.mask], rtol=1e-6)
    assert folds == {"F", "T"}
    with pytest.raises(ConfigError, match="polar_fraction must be in"):
        config_from_dict({**raw, "parameters": {"polar_fraction": 1.5}})
    with pytest.raises(ConfigError, match="polar_fraction .* goes with grid 'windows'"):
        config_from_dict({"grid": {"name": "toy"}, "parameters": {"polar_fraction": 0.5}})


def test_training_pools_dataset_folders(tmp_path):
    from diffnorm.ml.data import TrainingDataModule

    base = {"grid": {"name": "windows", "ny": 16, "nx": 16}, "steps": 6}
    for name, polar, n in (("a", 0.0, 2), ("b", 1.0, 3)):
        raw = {**base, "parameters": {"d_min": 1.5, "d_max": 3.0, "polar_fraction": polar}}
        generate(config_from_dict({**raw, "splits": {"train": n, "val": 1}}), tmp_path / name, 1)
    dm = TrainingDataModule(f"{tmp_path / 'a'}, {tmp_path / 'b'}", halo=4)
    dm.setup()
    assert len(dm.sets["train"]) == 5 and len(dm.sets["val"]) == 2
    assert dm.info["north_fold"] != ["none"] and len(dm.info["dataset_config_digest"]) == 2
    from diffnorm.data.dataset import DatasetFolderError, pooled_split

    with pytest.raises(DatasetFolderError, match="names no dataset folder"):
        pooled_split(" , ", "train")


def test_length_scales_set_in_metres_follow_the_metric():
    from diffnorm.lengthscales import metric_cell_length_scales

    ny, nx = 24, 20
    lat = np.linspace(20.0, 70.0, ny)[:, None]
    e1 = 1e5 * np.cos(np.radians(lat)) * np.ones((ny, nx))
    e2 = 1e5 * np.ones((ny, nx))
    mask = np.ones((ny, nx), dtype=bool)
    seen = set()
    for seed in range(12):
        d1, d2 = metric_cell_length_scales(e1, e2, mask, np.random.default_rng(seed), 1.0, 50.0)
        assert 1.0 <= min(d1.min(), d2.min()) and max(d1.max(), d2.max()) <= 50.0
        free = (d1 > 1.0) & (d1 < 50.0) & (d2 > 1.0) & (d2 < 50.0)  # not clipped
        assert free.mean() > 0.9
        l1, l2 = (d1 * e1)[free], (d2 * e2)[free]  # the length scales in metres
        constant, isotropic = np.ptp(np.log(l1)) < 1e-12, np.allclose(l1, l2)
        seen.add((constant, isotropic))
        np.testing.assert_allclose(l1 / l2, l1[0] / l2[0], rtol=1e-12)  # one ratio in metres
        if constant:  # κ constant in m²: d₁ in cells grows like 1/cos φ
            rows = np.flatnonzero(free[:, 0])
            np.testing.assert_allclose(
                d1[rows, 0] * np.cos(np.radians(lat[rows, 0])),
                d1[rows[0], 0] * np.cos(np.radians(lat[rows[0], 0])),
                rtol=1e-12,
            )
    assert seen == {(True, True), (True, False), (False, True), (False, False)}


def _window_checked(tmp_path, parameters: dict, seed: int) -> tuple[dict, object]:
    """A one-window dataset of 16×16 cells with these parameters, its exact γ checked against
    brute force; the raw config and the window's fields."""
    raw = {
        "grid": {"name": "windows", "ny": 16, "nx": 16},
        "steps": 6,
        "parameters": {"d_min": 1.5, "d_max": 3.0, **parameters},
        "splits": {"train": 1},
        "seed": seed,
    }
    generate(config_from_dict(raw), tmp_path / "ds", workers=1)
    fields, gamma = read_fields(tmp_path / "ds" / "train" / "train_00000.nc")
    brute = estimate(fields, "brute").gamma
    np.testing.assert_allclose(gamma[fields.mask], brute[fields.mask], rtol=1e-6)
    return raw, fields


def test_metre_windows_are_drawn_and_checked(tmp_path):
    raw, _ = _window_checked(tmp_path, {"metric_std": 0.3, "metre_fraction": 1.0}, seed=3)
    stretched = {**raw, "parameters": {"metric_std": 0.3}}
    assert config_from_dict(raw).digest() != config_from_dict(stretched).digest()
    with pytest.raises(ConfigError, match="metre_fraction must be in"):
        config_from_dict({**raw, "parameters": {"metre_fraction": -0.1}})


def test_periodic_windows_are_drawn_and_checked(tmp_path):
    raw, fields = _window_checked(tmp_path, {"periodic_fraction": 1.0}, seed=1)
    assert fields.periodic_x and fields.north_fold == "none"
    with pytest.raises(ConfigError, match="periodic_fraction .* uniform cells"):
        config_from_dict({**raw, "parameters": {"periodic_fraction": 1.0, "metric_std": 0.3}})
    with pytest.raises(ConfigError, match="periodic_fraction must be in"):
        config_from_dict({**raw, "parameters": {"periodic_fraction": 2.0}})
