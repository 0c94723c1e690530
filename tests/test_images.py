"""The images estimate: exact in rectangular basins with constant κ, an approximation elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import folded_fields, random_fields
from diffnorm.grid import box_grid, fields_from_cell_length_scales
from diffnorm.methods import estimate
from diffnorm.methods.images import (
    CAP,
    ImagesVariance,
    images_and_walk_gamma_squared,
    images_gamma_squared,
    straight_runs,
    straight_runs_numpy,
)
from diffnorm.methods.lattice import lattice_point_variance


def _box(ny: int, nx: int, d1: float, d2: float, steps: int = 10, periodic_x: bool = False):
    mask = np.zeros((ny + 2, nx + 2), dtype=bool)
    mask[1:-1, 1:-1] = True
    if periodic_x:
        mask[1:-1, :] = True
    grid = box_grid(*mask.shape, mask=mask, periodic_x=periodic_x)
    return fields_from_cell_length_scales(grid, d1, d2, steps)


@pytest.mark.parametrize(
    "ny, nx, d1, d2",
    [
        (12, 16, 3.0, 3.0),  # the GYRE-like box: wide, images
        (1, 30, 6.0, 6.0),  # a one-cell channel: closed across (S = 1)
        (2, 30, 2.0, 8.0),  # two cells wide, long scale across: modes
        (3, 25, 8.0, 1.5),  # anisotropic the other way
        (5, 12, 5.0, 5.0),  # L between the exact-mode limit and CAP: the switch
        (40, 40, 1.5, 1.5),  # short scales, walls far from the middle: no images there
    ],
)
def test_images_are_exact_in_rectangular_basins(ny, nx, d1, d2):
    f = _box(ny, nx, d1, d2)
    exact = estimate(f, "brute").gamma
    got = np.sqrt(images_gamma_squared(f))
    m = f.mask
    np.testing.assert_allclose(got[m], exact[m], rtol=2e-5)  # the ive table's interpolation


def test_images_are_exact_in_a_periodic_channel():
    f = _box(6, 48, 4.0, 4.0, periodic_x=True)
    exact = estimate(f, "selinv").gamma
    got = np.sqrt(images_gamma_squared(f))
    np.testing.assert_allclose(got[f.mask], exact[f.mask], rtol=2e-5)


def test_images_beat_the_lattice_near_irregular_coasts():
    f = random_fields(ny=40, nx=48, steps=10, islands=True, periodic_x=True, seed=5)
    exact = estimate(f, "selinv").gamma ** 2
    m = f.counted
    images = images_gamma_squared(f)
    lattice = estimate(f, "lattice").gamma ** 2
    err_images = np.abs(images[m] / exact[m] - 1)
    err_lattice = np.abs(lattice[m] / exact[m] - 1)
    assert err_images.mean() < 0.6 * err_lattice.mean()  # 0.14 against 0.27 on this mask


def test_far_from_every_wall_the_images_value_is_the_lattice_value():
    f = _box(70, 70, 2.0, 3.0)
    runs = straight_runs(torch.from_numpy(f.mask * 1.0)[None], False, False)
    far = np.all([r[0].numpy() >= CAP for r in runs], axis=0) & f.mask
    assert far.sum() == 36  # 6 × 6 cells at least CAP = 32 from each wall
    lattice = estimate(f, "lattice").gamma ** 2
    np.testing.assert_allclose(images_gamma_squared(f)[far], lattice[far], rtol=2e-5)


@pytest.mark.parametrize("steps, rtol", [(4, 1e-4), (6, 1e-5), (10, 1e-5), (20, 1e-5)])
def test_quadrature_matches_the_lattice_integral(steps, rtol):
    kx = np.array([0.0, 0.05, 0.3, 1.0, 3.0, 10.0, 40.0, 100.0])
    ky = np.array([3.0, 0.05, 40.0, 1.0, 0.3, 10.0, 0.01, 100.0])
    far = torch.full((kx.size,), float(CAP))
    with torch.no_grad():
        v = ImagesVariance(steps)(torch.from_numpy(kx), torch.from_numpy(ky), far, far, far, far)
    import diffnorm.methods.lattice as lattice_module

    nodes = lattice_module.NODES
    lattice_module.NODES = 200
    try:
        want = lattice_point_variance(kx, ky, steps)
    finally:
        lattice_module.NODES = nodes
    np.testing.assert_allclose(v.numpy(), want, rtol=rtol)


@pytest.mark.parametrize("steps", [2, 6, 10])
def test_dropping_the_quadrature_tail_changes_v_by_at_most_its_bound(steps, monkeypatch):
    import diffnorm.methods.images as images

    rng = np.random.default_rng(steps)
    n = 400
    kx, ky = (torch.from_numpy(10.0 ** rng.uniform(-2, 2, n)) for _ in range(2))
    runs = [torch.from_numpy(rng.integers(0, CAP + 1, n).astype(np.float64)) for _ in range(4)]
    runs[0][:20] = runs[1][:20] = runs[2][:20] = runs[3][:20] = 0.0  # one-cell basins: S = 1
    with torch.no_grad():
        short = ImagesVariance(steps)
        monkeypatch.setattr(images, "QUADRATURE_TAIL", 0.0)
        full = ImagesVariance(steps)
        assert short.t.numel() < full.t.numel()
        v_short, v_full = short(kx, ky, *runs), full(kx, ky, *runs)
    rel = (v_full / v_short - 1.0).numpy()
    assert np.all(rel >= 0.0) and rel.max() <= 1e-8  # a non-negative tail, within its bound
    assert rel[:20].max() > 1e-12  # where S = 1 the tail is all that differs


def test_the_numpy_runs_equal_the_traceable_ones():
    rng = np.random.default_rng(5)
    for _ in range(120):
        ny, nx = rng.integers(1, 12), rng.integers(1, 45)
        m = (rng.random((2, ny, nx)) < rng.uniform(0.3, 1.0)).astype(np.float64)
        periodic, folded, cap = bool(rng.integers(2)), bool(rng.integers(2)), rng.integers(1, 40)
        want = straight_runs(torch.from_numpy(m), periodic, folded, int(cap))
        got = straight_runs_numpy(m, periodic, folded, int(cap))
        for w, g in zip(want, got, strict=True):
            np.testing.assert_array_equal(g, w.numpy())


def test_runs_cross_the_wrap_and_stop_at_land_and_closed_edges():
    m = np.ones((3, 8))
    m[1, 2] = 0.0
    w, e, s, n = (r[0].numpy() for r in straight_runs(torch.from_numpy(m)[None], True, False))
    assert e[1, 3] == 6 and w[1, 3] == 0  # east across the wrap back to the land cell
    assert s[0, 0] == 0 and n[0, 0] == 2 and n[2, 0] == 0  # closed south and north edges
    w, e, *_ = (r[0].numpy() for r in straight_runs(torch.from_numpy(m)[None], False, False))
    assert e[1, 3] == 4 and w[1, 1] == 1
    *_, n = (r[0].numpy() for r in straight_runs(torch.from_numpy(m)[None], True, True))
    assert n[2, 0] == CAP  # across a fold: open


@pytest.mark.parametrize("method", ["images", "walk"])
def test_images_method_on_a_folded_grid(method):
    f = folded_fields("F", ny=20, nx=26, steps=10, seed=3)
    r = estimate(f, method)
    assert np.all(np.isfinite(r.gamma[f.mask])) and np.all(r.gamma[f.mask] > 0)


def test_box_exact_cells_are_exact_and_the_others_are_not_claimed():
    from diffnorm.methods.images import box_exact_cells

    f = _box(30, 40, 2.0, 2.0)
    assert box_exact_cells(f)[f.mask].all()  # a rectangle of one κ: every cell
    mask = f.mask.copy()
    mask[10, 25] = False
    g = fields_from_cell_length_scales(box_grid(*mask.shape, mask=mask), 2.0, 2.0, 10)
    exact = box_exact_cells(g, physical_rtol=0.0)  # the strict test alone
    err = np.abs(images_gamma_squared(g) / estimate(g, "brute").gamma ** 2 - 1)
    assert exact.sum() > 0.3 * g.mask.sum()
    assert err[exact].max() < 1e-5 and err[g.mask & ~exact].max() > 0.1
    relaxed = box_exact_cells(g)  # ... and the open-sea cells 2·D from the land cell
    assert relaxed.sum() > exact.sum() and err[relaxed].max() < 1e-4
    d1 = np.full(f.mask.shape, 2.0)
    d1[:, 20:] = 2.5
    varying = fields_from_cell_length_scales(box_grid(*f.mask.shape, mask=f.mask), d1, 2.0, 10)
    exact = box_exact_cells(varying, physical_rtol=0.0)
    assert not exact[:, 12:28].any() and exact[:, :5].any()  # within reach of the step in κ
    near = box_exact_cells(varying)  # the open-sea test: 2.5·D of uniform κ, no wall
    err = np.abs(images_gamma_squared(varying) / estimate(varying, "brute").gamma ** 2 - 1)
    assert not near[:, 16:24].any() and err[near & ~exact].max() < 2e-4


def _sea_on_latitudes(kappa, lat_max: float = 64.0, island=None):
    """A closed 2° lat–lon basin from the equator to ``lat_max`` (with land at ``island``, an
    index): only the metric varies."""
    from dataclasses import replace

    from diffnorm.grid import fields_from_metrics, latlon_grid

    g = latlon_grid(2.0, lat_min=0.0, lat_max=lat_max, polar_cap=None)
    names = ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v", "lat", "lon")
    cut = {k: np.ascontiguousarray(getattr(g, k)[:, :40]) for k in names}
    mask = np.zeros(cut["e1t"].shape, dtype=bool)
    mask[1:-1, 1:-1] = True
    if island is not None:
        mask[island] = False
    grid = replace(g, periodic_x=False, mask=mask, name="sea", **cut)
    return fields_from_metrics(grid, kappa, kappa, steps=10)


def test_uniform_physical_kappa_in_the_open_sea_counts_as_exact():
    """κ constant in m² on lat–lon cells: the grid-unit κ varies with cos φ, yet the images
    value holds in the open sea (PHYSICAL_RTOL), no land within DISK_REACH·D; a random κ does
    not pass, and ``physical_rtol=0`` keeps the strict test."""
    from diffnorm.methods.images import DISK_REACH, box_exact_cells
    from diffnorm.metrics import distance_to_coast

    f = _sea_on_latitudes(3e9)
    relaxed = box_exact_cells(f)
    assert not box_exact_cells(f, physical_rtol=0.0).any()
    assert relaxed.sum() > 0.2 * f.mask.sum()
    kmax = (f.slot_alpha() / np.where(f.mask, f.area, 1.0)).max(axis=0)
    length = np.sqrt(2 * f.steps * kmax)
    coast = distance_to_coast(f, "euclidean")  # closed edges count as coast
    assert (coast[relaxed] > DISK_REACH * length[relaxed]).all()
    err = np.abs(images_gamma_squared(f) / estimate(f, "selinv").gamma ** 2 - 1)
    assert err[relaxed].max() < 1e-3 < err[f.mask & ~relaxed].max()
    rng = np.random.default_rng(0)
    noisy = _sea_on_latitudes(3e9 * np.exp(0.3 * rng.standard_normal(f.shape)))
    assert not box_exact_cells(noisy).any()


@pytest.mark.parametrize(("island", "corner_cells"), [((12, 20), 10), ((12, [19, 21]), 5)])
def test_an_island_in_the_corner_of_the_window_does_not_count(island, corner_cells):
    """Land in the corners of a cell's square window but not within DISK_REACH·D of it leaves
    the images value exact: the disk test passes such cells; nearer ones are kept out. Two
    islands with one sea cell between them: that cell, open only north–south, has no
    √(κx·κy) and does not count against the uniform κ_phys (it did, and kept the cells out)."""
    from diffnorm.methods.images import DISK_REACH, OPEN_REACH, box_exact_cells

    f = _sea_on_latitudes(3e9, island=island)
    passed = box_exact_cells(f)
    kmax = (f.slot_alpha() / np.where(f.mask, f.area, 1.0)).max(axis=0)
    length = np.sqrt(2 * f.steps * kmax)
    j, i = np.indices(f.shape)
    square = np.maximum(abs(j - 12), abs(i - 20)) <= np.ceil(OPEN_REACH * length)
    round_ = np.hypot(j - 12, i - 20) <= DISK_REACH * length
    assert (passed & square & ~round_).sum() > corner_cells  # land only in their corners
    assert not (passed & round_).any()
    err = np.abs(images_gamma_squared(f) / estimate(f, "selinv").gamma ** 2 - 1)
    assert err[passed].max() < 1e-3


@pytest.mark.parametrize(("ramp", "passed_max", "kept_out_max"), [(0, 1e-4, 0.05), (4, 3e-4, 5e-3)])
def test_a_jump_in_resolution_is_not_open_sea(ramp, passed_max, kept_out_max):
    """κ constant in m² across columns where the cell area doubles, at once (``ramp`` 0) or over
    a tanh ramp: κ_phys stays uniform, but the images value is 9 % (0.7 %) off next to it;
    METRIC_CURVATURE keeps those cells out."""
    from diffnorm.fields import Fields
    from diffnorm.methods.images import box_exact_cells

    ny, nx = 40, 60
    alpha = np.full((ny, nx), 0.3e8)
    x = np.arange(nx)[None, :] - 29.5
    step = np.sign(x) if ramp == 0 else np.tanh(x / ramp)
    area = 1e8 * (1.5 + 0.5 * step) * np.ones((ny, 1))
    f = Fields(np.ones((ny, nx)), area, alpha, alpha, 10, False)
    passed = box_exact_cells(f)
    err = np.abs(images_gamma_squared(f) / estimate(f, "selinv").gamma ** 2 - 1)
    assert passed.sum() > 50 and err[passed].max() < passed_max
    assert err[~passed].max() > kept_out_max  # the cells it keeps out needed it


def test_a_wall_with_the_metric_varying_toward_it_is_not_open_sea():
    """Cell areas growing as e^{0.06·i} toward a wall, κ constant in m²: a wall 1.6·D away put
    the images value 1.4e-2 off (its image is taken at the cell's own κ); with no land within
    DISK_REACH·D the cells that pass stay within 3e-4 (found by review)."""
    from diffnorm.fields import Fields
    from diffnorm.methods.images import box_exact_cells

    ny = nx = 60
    area = 1e8 * np.exp(0.06 * (np.arange(nx)[None, :] - 30.0)) * np.ones((ny, 1))
    alpha = np.full((ny, nx), 1.2e8)
    f = Fields(np.ones((ny, nx)), area, alpha, alpha, 10, False)
    passed = box_exact_cells(f)
    err = np.abs(images_gamma_squared(f) / estimate(f, "selinv").gamma ** 2 - 1)
    assert passed.sum() > 500 and err[passed].max() < 3e-4
    assert err[~passed].max() > 0.1


@pytest.mark.parametrize("seed", [1, 2])
def test_the_images_value_of_a_t_fold_copy_is_its_cell_s(seed):
    """A T-fold copy and its cell are one cell: one images value (each copy's straight runs,
    taken from its own side of the fold, had put it up to 97 % off)."""
    f = folded_fields("T", ny=24, nx=30, steps=10, seed=seed)
    g2 = images_gamma_squared(f)
    copies = f.topology.duplicate & f.mask
    assert copies.any()
    np.testing.assert_array_equal(g2[copies], g2.ravel()[f.topology.representative][copies.ravel()])


@pytest.mark.parametrize(("ny", "nx", "periodic"), [(12, 16, False), (2, 30, False), (6, 48, True)])
def test_the_walk_mean_leaves_a_rectangle_with_constant_kappa_as_it_is(ny, nx, periodic):
    """Every cell of a rectangle's run has the same box: averaging along it changes nothing."""
    f = _box(ny, nx, 3.0, 2.0, periodic_x=periodic)
    m = f.mask
    np.testing.assert_allclose(walk_of(f)[m], images_gamma_squared(f)[m], rtol=1e-12)


def test_the_walk_method_is_the_walk_mean_and_images_where_that_is_exact():
    """``estimate(f, "walk")``: the walk mean off the box-exact cells, the images value on
    them (a rectangle of one κ is box-exact everywhere, so the two methods agree there)."""
    from diffnorm.methods.images import box_exact_cells

    f = random_fields(ny=24, nx=24, steps=10, seed=5)
    images, walk = images_and_walk_gamma_squared(f)
    exact = box_exact_cells(f)
    want = np.sqrt(np.where(exact, images, walk))[f.mask]
    np.testing.assert_allclose(estimate(f, "walk").gamma[f.mask], want, rtol=1e-14)
    box = _box(12, 16, 3.0, 2.0)
    np.testing.assert_allclose(
        estimate(box, "walk").gamma, estimate(box, "images").gamma, rtol=1e-12
    )


def test_the_walk_mean_follows_the_grid_s_symmetries():
    """Flips, transposes and (on a periodic grid) shifts move the walk value with the cells
    (to the float32 of the image sums): the mean's window is symmetric and crosses the wrap."""
    from diffnorm.augment import symmetries

    for periodic in (True, False):
        f = random_fields(ny=24, nx=24, steps=10, periodic_x=periodic, seed=3)
        base = walk_of(f)
        for t in symmetries(f.topology):
            moved = walk_of(t.fields(f))
            np.testing.assert_allclose(moved, t.cells(base), rtol=1e-6, err_msg=t.name)
        if periodic:
            shifted = walk_of(f.replace(**_rolled(f, 7)))
            np.testing.assert_allclose(shifted, np.roll(base, 7, axis=1), rtol=1e-6)


def walk_of(f) -> np.ndarray:
    return images_and_walk_gamma_squared(f)[1]


def _rolled(f, k: int) -> dict:
    return {n: np.roll(getattr(f, n), k, axis=1) for n in ("mask", "area", "alpha_x", "alpha_y")}


def test_the_walk_mean_is_nearer_exact_than_images_in_inlets():
    """A basin with a one-cell inlet and a three-cell one: the inlet's own column ends at once
    (S_y = 1), while a walk from its mouth has long left it. Measured: |log γ²/γ²_base| at
    the one-cell inlet's mouth 0.73 → 0.09, in the wide inlet 0.105 → 0.012 on average, over
    the basin 0.013 → 0.003."""
    mask = np.zeros((28, 40), dtype=bool)
    mask[1:-1, 1:25] = True
    mask[12, 25:36] = True
    mask[5:8, 25:30] = True
    f = fields_from_cell_length_scales(box_grid(*mask.shape, mask=mask), 3.0, 3.0, 10)
    exact = estimate(f, "selinv").gamma ** 2
    t_images = np.abs(np.log(exact / images_gamma_squared(f)))
    images, walk = images_and_walk_gamma_squared(f)
    np.testing.assert_array_equal(images, images_gamma_squared(f))  # one value, two calls
    t_walk = np.abs(np.log(exact / walk))
    assert t_walk[12, 25] < 0.2 * t_images[12, 25]
    assert t_walk[5:8, 25:30].mean() < 0.2 * t_images[5:8, 25:30].mean()
    assert t_walk[mask].mean() < 0.4 * t_images[mask].mean()


@pytest.mark.parametrize("steps", [4, 10, 40, 170])
def test_gamma_quadrature_is_scipys_gauss_laguerre_normalized(steps):
    from scipy.special import gammaln, roots_genlaguerre

    from diffnorm.methods.lattice import gamma_quadrature

    t, w = gamma_quadrature(48, steps)
    t_ref, w_ref = roots_genlaguerre(48, steps - 1.0)
    np.testing.assert_allclose(t, t_ref, rtol=1e-12)
    w_ref = w_ref / np.exp(gammaln(steps))  # the Gamma(M, 1) density's 1/Γ(M)
    big = w_ref > 1e-12 * w_ref.max()
    np.testing.assert_allclose(w[big], w_ref[big], rtol=1e-8)
    # its moments are the Gamma(M, 1) distribution's: E t = M, Var t = M
    assert abs(w.sum() - 1) < 1e-13 and abs(w @ t / steps - 1) < 1e-12
    assert abs(w @ (t - steps) ** 2 / steps - 1) < 1e-11
