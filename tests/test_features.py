"""Inputs and targets for the networks."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_fields
from diffnorm.methods import estimate
from diffnorm.ml.features import (
    Standardizer,
    channel_names,
    gamma_from_target,
    raw_features,
    raw_target,
)


@pytest.mark.parametrize("distance", ["none", "manhattan", "euclidean"])
def test_features_are_dimensionless(small_fields, distance):
    f = raw_features(small_fields, distance)
    assert f.shape == (len(channel_names(distance)), *small_fields.shape)
    c = 123.0
    scaled = small_fields.replace(
        area=small_fields.area * c,
        alpha_x=small_fields.alpha_x * c,
        alpha_y=small_fields.alpha_y * c,
    )
    np.testing.assert_allclose(raw_features(scaled, distance), f, rtol=1e-12)
    assert np.all(f[:, ~small_fields.mask][:3] == 0)  # land carries no diffusivity or area


def test_distance_channel_wraps_east_west():
    fields = random_fields(ny=10, nx=12, islands=False, periodic_x=True)
    d = raw_features(fields, "manhattan")[3]
    # no land and a wrap: the nearest coast is the closed southern/northern edge
    np.testing.assert_array_equal(d[:, 0], d[:, 6])
    assert d[0, 0] == 1 and d[4, 3] == 5


@pytest.mark.parametrize(
    "kind", ["log_ratio", "log_lattice", "log_images_smooth", "log_images_walk", "gamma"]
)
def test_target_round_trip(small_fields, kind):
    gamma = estimate(small_fields, "brute").gamma
    t = raw_target(small_fields, gamma, kind)
    back = gamma_from_target(small_fields, t, kind)
    m = small_fields.mask
    np.testing.assert_allclose(back[m], gamma[m], rtol=1e-12)
    assert np.all(np.isnan(back[~m]))


def test_standardizer_round_trip(small_fields):
    raw = [raw_features(small_fields), raw_features(small_fields.replace(periodic_x=False))]
    s = Standardizer.fit(raw, [np.array([0.1, 0.3]), np.array([0.2])])
    x = np.concatenate([s.inputs(r).reshape(r.shape[0], -1) for r in raw], axis=1)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(x.std(axis=1), 1, rtol=1e-12)
    assert s.target_mean == pytest.approx(0.2)
    t = Standardizer.from_dict(s.to_dict())
    np.testing.assert_allclose(t.inputs(raw[1]), s.inputs(raw[1]))
    assert s.land("manhattan").shape == (5,)


def test_local_area_means_the_same_on_any_grid():
    from diffnorm.ml.features import local_area

    uniform = random_fields(ny=10, nx=12, islands=False)
    uniform = uniform.replace(area=np.full(uniform.shape, 3e8))
    assert np.all(local_area(uniform) == 0)  # any uniform grid, whatever its cell size
    # an area that doubles from one row to the next: the interior sees log(a / mean of 3 rows)
    rows = uniform.replace(area=3e8 * 2.0 ** np.arange(10)[:, None] * np.ones((1, 12)))
    np.testing.assert_allclose(local_area(rows)[5], np.log(3 / 3.5))
    names = channel_names("manhattan", "local")
    assert names[2] == "area_local"
    f = raw_features(rows, "manhattan", "local")
    np.testing.assert_allclose(f[2], local_area(rows))
    with pytest.raises(ValueError, match="area must be one of"):
        channel_names("manhattan", "mean")


@pytest.mark.parametrize("periodic", [False, True])
def test_the_smoothed_images_baseline_blends_each_cell_with_its_ocean_neighbours(periodic):
    """log γ²_s = ½ log γ²_images + ½ (mean of log γ²_images over the ocean cells of the 3×3
    square), across the wrap; the images value where it is exact."""
    from diffnorm.methods.images import box_exact_cells, images_gamma_squared
    from diffnorm.ml.features import smoothed_images_gamma_squared

    f = random_fields(ny=12, nx=15, periodic_x=periodic, seed=2)
    m = f.mask
    log = np.where(m, np.log(np.where(m, images_gamma_squared(f), 1.0)), 0.0)
    got = np.log(smoothed_images_gamma_squared(f))
    exact = box_exact_cells(f)
    for j, i in zip(*np.nonzero(m), strict=True):
        rows = [r for r in (j - 1, j, j + 1) if 0 <= r < f.shape[0]]
        cols = [c % f.shape[1] for c in (i - 1, i, i + 1) if periodic or 0 <= c < f.shape[1]]
        block = np.ix_(rows, cols)
        mean = log[block][m[block]].mean()
        want = log[j, i] if exact[j, i] else 0.5 * log[j, i] + 0.5 * mean
        assert got[j, i] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert np.all(np.isnan(got[~m]))
    assert np.abs(got - log)[m & ~exact].max() > 1e-3  # the blend moved the others
