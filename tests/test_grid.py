"""Grid builders, length-scale helpers and coastline caching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from diffnorm.fields import FieldsError
from diffnorm.grid import (
    EARTH_RADIUS,
    box_grid,
    built_in_grid,
    fields_from_cell_length_scales,
    fields_from_length_scales,
    fields_from_metrics,
    kappa_from_length_scale,
    length_scale_from_kappa,
    orca1_latitudes,
)
from diffnorm.lengthscales import random_cell_length_scales
from diffnorm.nemo import mesh_mask_grid


@pytest.fixture(scope="module")
def coarse():
    return built_in_grid("latlon", resolution=4.0)


@pytest.fixture(scope="module")
def toy():
    return built_in_grid("toy")


def test_latlon_area_formula(coarse):
    dphi = dlam = math.radians(4.0)
    expected = EARTH_RADIUS**2 * np.cos(np.radians(coarse.lat)) * dphi * dlam
    np.testing.assert_allclose(coarse.area, expected, rtol=1e-12)
    assert coarse.periodic_x and coarse.shape == (45, 90)
    assert not coarse.mask[np.abs(coarse.lat) > 80].any()


def test_toy_grid_matches_the_study(toy):
    assert toy.shape == (180, 360)
    assert not toy.mask[np.abs(toy.lat) > 70].any()
    j = int(np.argmin(np.abs(toy.lat[:, 0] - 23.5)))
    i = int(np.argmin(np.abs(toy.lon[0] - 10.5)))
    assert not toy.mask[j, i]  # Sahara
    j = int(np.argmin(np.abs(toy.lat[:, 0] - 0.5)))
    i = int(np.argmin(np.abs(toy.lon[0] + 150.5)))
    assert toy.mask[j, i]  # central Pacific
    assert 0.5 < toy.mask.mean() < 0.7


def test_orca1_like_rows():
    edges = orca1_latitudes()
    d = np.diff(edges)
    assert edges.size == 293 and np.all(d > 0)
    assert edges[0] == pytest.approx(-78.0) and edges[-1] == pytest.approx(89.5)
    equator = d[np.argmin(np.abs(edges[:-1]))]
    assert 0.3 <= equator <= 0.45 and d.max() > 2 * equator


def test_fields_faces_and_length_scales():
    mask = np.ones((12, 15), dtype=bool)
    mask[4:6, 5:8] = False
    grid = box_grid(12, 15, dx=2e4, dy=1e4, mask=mask)
    steps, d = 10, 3.0
    f = fields_from_cell_length_scales(grid, d, d, steps)
    interior = f.open_x & np.roll(f.open_x, 1, axis=1)
    np.testing.assert_allclose((f.alpha_x / f.area)[interior], d**2 / (2 * steps - 4), rtol=1e-12)
    assert np.all(f.alpha_x[~f.open_x] == 0) and np.all(f.alpha_x[f.open_x] > 0)
    assert np.all(f.alpha_y[~f.open_y] == 0) and np.all(f.alpha_y[f.open_y] > 0)
    # metres in, same fields out
    g = fields_from_length_scales(grid, d * 2e4, d * 1e4, steps)
    np.testing.assert_allclose(g.alpha_x, f.alpha_x)
    assert length_scale_from_kappa(kappa_from_length_scale(5e4, steps), steps) == 5e4
    with pytest.raises(FieldsError, match="length scale D1"):
        fields_from_length_scales(grid, -1.0, 1.0, steps)


def test_random_length_scales_are_bounded_and_seeded():
    shape = (40, 60)
    d1, d2 = random_cell_length_scales(shape, np.random.default_rng(1), d_min=1.5, d_max=6)
    e1, _ = random_cell_length_scales(shape, np.random.default_rng(1), d_min=1.5, d_max=6)
    f1, _ = random_cell_length_scales(shape, np.random.default_rng(2), d_min=1.5, d_max=6)
    for d in (d1, d2):
        assert d.min() >= 1.5 and d.max() <= 6.0
    np.testing.assert_array_equal(d1, e1)
    assert not np.allclose(d1, f1)
    ratio = (d1 / d2) ** 2
    assert ratio.min() >= 1 / 3 - 1e-12 and ratio.max() <= 3 + 1e-12
    assert d1.std() > 0.1  # really random, not constant


def _mesh_mask(path, core: dict[str, np.ndarray], halo: bool) -> None:
    """A NEMO-style mesh_mask.nc: ``tmask (t, z, y, x)``, metrics ``(t, y, x)``; with
    ``halo`` the columns are NEMO's cyclic layout (0 and nx-1 repeat nx-2 and 1)."""

    def layout(a):
        return np.concatenate([a[:, -1:], a, a[:, :1]], axis=1) if halo else a

    ds = xr.Dataset(
        {
            "tmask": (("t", "z", "y", "x"), layout(core["tmask"])[None, None].repeat(3, 1)),
            **{
                v: (("t", "y", "x"), layout(core[v])[None])
                for v in ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v")
            },
        }
    )
    ds.to_netcdf(path)


def _mesh_core(ny: int, nx: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    core = {v: rng.uniform(5e4, 1e5, (ny, nx)) for v in ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v")}
    tmask = np.ones((ny, nx))
    tmask[2, 3] = 0
    tmask[4, -1] = 0  # land next to the seam
    core["tmask"] = tmask
    return core


def test_mesh_mask_round_trip(tmp_path):
    ny, nx = 6, 10  # nx with the halo
    core = _mesh_core(ny, nx - 2)
    path = tmp_path / "mesh_mask.nc"
    _mesh_mask(path, core, halo=True)
    # by default the cyclic halo is detected and dropped: each ocean cell once, wrapping
    g = mesh_mask_grid(path)
    assert g.periodic_x and g.shape == (ny, nx - 2)
    assert g.attrs["cyclic_halo"] == "dropped"
    for v in ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v"):
        np.testing.assert_array_equal(getattr(g, v), core[v])
    assert not g.mask[2, 3]
    f = fields_from_cell_length_scales(g, 2.0, 2.0, 6)
    assert f.n_ocean == ny * (nx - 2) - 2
    h = mesh_mask_grid(path, drop_halo=True)
    np.testing.assert_array_equal(h.mask, g.mask)
    assert h.periodic_x
    # kept on request, on a closed grid only (wrapping would put copies side by side)
    k = mesh_mask_grid(path, drop_halo=False)
    assert not k.periodic_x and k.shape == (ny, nx) and k.attrs["cyclic_halo"] == "kept"
    with pytest.raises(FieldsError, match="extra ocean cells next to their copies"):
        mesh_mask_grid(path, periodic_x=True, drop_halo=False)
    # a grid stored without a halo: nothing dropped, closed unless declared periodic
    plain = tmp_path / "plain.nc"
    _mesh_mask(plain, core, halo=False)
    p = mesh_mask_grid(plain)
    assert not p.periodic_x and p.shape == (ny, nx - 2) and p.attrs["cyclic_halo"] == "none"
    assert mesh_mask_grid(plain, periodic_x=True).periodic_x
    with pytest.raises(FieldsError, match="no cyclic halo"):
        mesh_mask_grid(plain, drop_halo=True)
    xr.open_dataset(path).drop_vars("e2v").to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(FieldsError, match="missing variable.*e2v"):
        mesh_mask_grid(tmp_path / "bad.nc")


def test_mesh_mask_cyclic_halo_gives_the_gamma_of_the_grid_without_it(tmp_path):
    # ORCA-like layout: the γ of a mesh_mask with a cyclic halo is the γ of the same periodic
    # grid stored without one (the halo columns are not extra ocean cells)
    from diffnorm.methods import estimate

    ny, nx = 8, 12
    core = _mesh_core(ny, nx)
    _mesh_mask(tmp_path / "halo.nc", core, halo=True)
    _mesh_mask(tmp_path / "plain.nc", core, halo=False)
    with_halo = mesh_mask_grid(tmp_path / "halo.nc")
    plain = mesh_mask_grid(tmp_path / "plain.nc", periodic_x=True)
    assert with_halo.shape == plain.shape == (ny, nx)
    d = np.random.default_rng(1).uniform(1.5, 3.0, (ny, nx))
    gamma = [
        estimate(fields_from_cell_length_scales(g, d, d, 6), "brute").gamma
        for g in (with_halo, plain)
    ]
    np.testing.assert_allclose(gamma[0], gamma[1], rtol=1e-12)
    assert np.isfinite(gamma[0]).sum() == ny * nx - 2


def test_coastline_cache_is_written_and_reused(tmp_path, monkeypatch):
    from diffnorm import coast

    monkeypatch.setenv("DIFFNORM_CACHE", str(tmp_path))
    monkeypatch.setattr(coast, "_MEMORY", {})
    lat = np.array([[0.5, 45.5]])
    lon = np.array([[-150.5, 2.5]])  # central Pacific, France
    size = np.ones((1, 2))
    mask = coast.land_mask(lat, lon, size, size)
    assert mask.tolist() == [[False, True]]
    files = list(tmp_path.glob("land_*.npy"))
    assert len(files) == 1
    np.save(files[0], np.array([[True, True]]))  # a cached answer must be what is used
    monkeypatch.setattr(coast, "_MEMORY", {})
    assert coast.land_mask(lat, lon, size, size).tolist() == [[True, True]]


def test_small_basins_are_removed_across_the_wrap():
    from diffnorm.coast import remove_small_basins
    from diffnorm.topology import Topology

    ocean = np.zeros((5, 8), dtype=bool)
    ocean[1, 0] = ocean[1, 7] = True  # one 2-cell basin through the east-west edge
    ocean[3, 3] = True  # a 1-cell lake
    kept = remove_small_basins(ocean, 2, Topology(5, 8, periodic_x=True))
    assert kept[1, 0] and kept[1, 7] and not kept[3, 3]
    assert not remove_small_basins(ocean, 2, Topology(5, 8))[1, 0]


def test_fields_builders_name_a_wrong_shape_and_a_bad_m():
    g = box_grid(10, 12)
    with pytest.raises(FieldsError, match=r"d1 has shape \(3, 3\); .* grid's shape \(10, 12\)"):
        fields_from_cell_length_scales(g, np.ones((3, 3)), 3.0, steps=10)
    with pytest.raises(FieldsError, match=r"kappa22 has shape \(3, 3\)"):
        fields_from_metrics(g, 3e6, np.ones((3, 3)), steps=10)
    for steps in (0, 2):  # κ = D²/(2M − 4) divided by zero before M was checked
        with pytest.raises(FieldsError, match="steps must be an even integer >= 4"):
            fields_from_cell_length_scales(g, 3.0, 3.0, steps=steps)
    with pytest.raises(ValueError, match="ny, nx >= 1"):
        box_grid(0, 5)
    with pytest.raises(ValueError, match=r"'orca1' is fixed; option\(s\) resolution go with"):
        built_in_grid("orca1", resolution=2)
