"""Exact γ on sub-grids: a crop padded by halo_width, the band under a fold."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_fields
from diffnorm.methods import estimate
from diffnorm.subgrid import halo_width, interior_gamma


@pytest.mark.parametrize("periodic_x", [True, False])
def test_the_interior_of_a_padded_crop_is_the_whole_grid_gamma(periodic_x):
    fields = random_fields(ny=60, nx=70, steps=10, periodic_x=periodic_x, kappa=0.3, seed=2)
    whole = estimate(fields, "selinv", tolerance=1e-9).gamma
    for tol, box in ((1e-3, (20, 40, 0, 25)), (1e-5, (25, 35, 50, 66))):
        inner, (hy, hx) = interior_gamma(fields, *box, tolerance=tol)
        j0, j1, i0, i1 = box
        ref = whole[j0:j1, i0:i1]
        m = np.isfinite(ref)
        assert np.abs(inner[m] ** 2 / ref[m] ** 2 - 1).max() <= tol
        # and the halo is needed: half of it gives a larger error somewhere
    small, _ = interior_gamma(fields, 20, 40, 0, 25, tolerance=0.3)
    ref = whole[20:40, 0:25]
    m = np.isfinite(ref)
    assert np.abs(small[m] ** 2 / ref[m] ** 2 - 1).max() > 1e-3


def test_halo_grows_with_the_length_scale_and_the_tolerance():
    assert halo_width(0.5, 0.5, 10, 1e-6) < halo_width(2.0, 2.0, 10, 1e-6)
    hy, hx = halo_width(4.0, 0.25, 10, 1e-6)
    assert hx > hy  # anisotropic: wider along the long axis
    assert halo_width(1.0, 1.0, 10, 1e-3) < halo_width(1.0, 1.0, 10, 1e-8)


@pytest.mark.parametrize("kx, ky, power", [(0.0, 3.0, 10), (0.3, 0.02, 4), (7.7, 36.0, 20)])
def test_the_kernel_along_each_axis_is_the_full_kernels(kx, ky, power):
    from diffnorm.methods.probing import lattice_kernel, lattice_kernel_axes

    full = lattice_kernel(kx, ky, power)
    column, row = lattice_kernel_axes(kx, ky, power)
    np.testing.assert_allclose(column, full[:, 0], rtol=0, atol=1e-13 * full[0, 0])
    np.testing.assert_allclose(row, full[0, :], rtol=0, atol=1e-13 * full[0, 0])


@pytest.mark.parametrize("fold", ["T", "F"])
def test_the_band_under_a_fold_gives_the_whole_grid_gamma(fold):
    from conftest import folded_fields
    from diffnorm.subgrid import fold_band, fold_band_variance

    fields = folded_fields(fold, ny=40, nx=24, steps=10, seed=3, kappa=0.3)
    whole = estimate(fields, "selinv", tolerance=1e-9).gamma
    band, first = fold_band(fields, 4, tolerance=1e-5)
    assert band.north_fold == fold and band.periodic_x and first == band.shape[0] - 4
    assert band.shape[0] < fields.shape[0]  # a band, not the grid
    idx, v = fold_band_variance(fields, 4, tolerance=1e-5)
    cells = fields.ocean[idx]
    assert np.all(cells // fields.shape[1] >= fields.shape[0] - 4)
    assert idx.size == np.count_nonzero(fields.counted[-4:])  # each unknown of the rows once
    ref = whole.ravel()[cells] ** -2.0
    assert np.abs(v / ref - 1).max() <= 1e-5
    # the halo is needed: a band with none is walled too close
    thin, _ = fold_band(fields, 4, tolerance=0.9)
    assert thin.shape[0] < band.shape[0]


def test_the_fold_band_is_a_no_op_without_a_fold():
    from diffnorm.subgrid import fold_band, fold_band_variance

    idx, v = fold_band_variance(random_fields(), 4)
    assert idx.size == 0 and v.size == 0
    from conftest import folded_fields

    f = folded_fields("F", ny=20, nx=12)
    mask = f.mask.copy()
    mask[-6:] = 0  # land under the fold, ocean below it
    land_top = f.replace(mask=mask)
    idx, v = fold_band_variance(land_top, 4)
    assert idx.size == 0 and v.size == 0
    with pytest.raises(ValueError, match="north fold"):
        fold_band(random_fields(), 4)


@pytest.mark.parametrize("case", ["closed", "periodic", "T", "F"])
def test_cells_solved_on_their_region_have_the_whole_grid_gamma(case):
    from conftest import folded_fields
    from diffnorm.subgrid import cells_region, cells_variance

    if case in ("T", "F"):
        fields = folded_fields(case, ny=48, nx=40, steps=10, seed=4, kappa=0.3)
    else:
        fields = random_fields(ny=50, nx=60, steps=10, periodic_x=case == "periodic", seed=5)
    whole = estimate(fields, "selinv", tolerance=1e-9).gamma
    ocean = fields.mask.astype(bool)
    cells = np.zeros(fields.shape, dtype=bool)
    cells[5:9, 0:6] = True  # across the wrap's seam on the periodic grid
    cells[-3:, 10:14] = True  # under the fold on the folded ones
    cells[20, 30] = True
    cells &= ocean
    region = cells_region(fields, cells, 1e-5)
    assert region[cells].all() and region.sum() < ocean.sum()  # a region, not the grid
    idx, v = cells_variance(fields, cells, 1e-5, whole_share=None)
    assert np.array_equal(fields.ocean[idx], np.flatnonzero(cells))
    assert np.abs(v * whole.ravel()[fields.ocean[idx]] ** 2 - 1).max() <= 1e-5
    # the halo is needed: a region walled at one cell is wrong by far more
    # and every other cell whose own halo the region holds comes out as exact
    more, w = cells_variance(fields, cells, 1e-5, whole_share=None, interior=True)
    assert np.isin(idx, more).all() and more.size > 2 * idx.size
    assert more.size < fields.ocean[region.ravel()[fields.ocean]].size  # not the whole region
    assert np.abs(w * whole.ravel()[fields.ocean[more]] ** 2 - 1).max() <= 1e-5
    _, rough = cells_variance(fields, cells, 0.5, whole_share=None)
    assert np.abs(rough * whole.ravel()[fields.ocean[idx]] ** 2 - 1).max() > 1e-3
    empty = cells_variance(fields, np.zeros(fields.shape, dtype=bool))
    assert empty[0].size == 0 and empty[1].size == 0


def test_the_interior_leaves_out_the_cells_that_see_across_a_fold():
    """A region holding one side of an F fold only: a cell whose rectangle reaches the fold
    row sees the other side, which the region walls off (0.31 off when they were kept)."""
    from conftest import folded_fields
    from diffnorm.subgrid import region_interior

    fields = folded_fields("F", ny=30, nx=40, steps=10, seed=4, kappa=0.03)
    whole = estimate(fields, "selinv", tolerance=1e-10).gamma
    region = np.zeros(fields.shape, dtype=bool)
    region[-14:, :16] = True
    region &= fields.mask.astype(bool)
    inside = region_interior(fields, region, 1e-5)
    assert inside.any() and not inside[-1].any()
    g = estimate(fields.replace(mask=region.astype(np.int8)), "selinv", tolerance=1e-6).gamma
    assert np.abs((whole[inside] / g[inside]) ** 2 - 1).max() <= 1e-5


@pytest.mark.parametrize("fold", ["T", "F"])
def test_a_cell_whose_halo_reaches_the_fold_sees_across_it(fold):
    """A cell a few rows under the fold, whose halo reaches the fold row, where the other side
    of the fold diffuses 50× faster: the region must keep the fold row whole (a T fold's
    copies with their cells) and be as deep as the other side's length scale asks."""
    from diffnorm.fields import Fields
    from diffnorm.subgrid import cells_variance

    ny, nx = 40, 60
    k = np.full((ny, nx), 0.3)
    k[:, 36:] = 15.0  # the mirror side of the columns < 24
    kx, ky = k.copy(), k.copy()
    cols = np.arange(nx // 2, nx)
    if fold == "T":  # the values the fold lists twice agree
        dup = np.arange(nx // 2 + 1, nx)
        kx[-1, dup] = ky[-1, dup] = k[-1, nx - dup]
        kx[-1, cols] = kx[-1, nx - 1 - cols]
    else:
        ky[-1, cols] = ky[-1, nx - 1 - cols]
    area = np.full((ny, nx), 1e8)
    fields = Fields(np.ones((ny, nx)), area, kx * area, ky * area, 10, True, north_fold=fold)
    whole = estimate(fields, "selinv", tolerance=1e-9).gamma
    for row in range(ny - 9, ny):
        cells = np.zeros((ny, nx), dtype=bool)
        cells[row, 12] = True
        idx, v = cells_variance(fields, cells, 1e-4)
        assert np.abs(v * whole.ravel()[fields.ocean[idx]] ** 2 - 1).max() <= 1e-4, row
    if fold == "T":  # a copy stands for its cell
        copy = np.zeros((ny, nx), dtype=bool)
        copy[-1, nx - 12] = True
        idx, _ = cells_variance(fields, copy, 1e-4, whole_share=None)
        assert fields.ocean[idx].tolist() == [(ny - 1) * nx + 12]


def test_cells_whose_region_is_most_of_the_ocean_get_the_whole_grid_solved():
    from diffnorm.subgrid import cells_region, cells_variance

    fields = random_fields(ny=40, nx=60, steps=10, periodic_x=False, seed=6, kappa=0.1)
    whole = estimate(fields, "selinv", tolerance=1e-9).gamma
    cells = np.zeros(fields.shape, dtype=bool)
    cells[2::15, 2::15] = True
    cells &= fields.mask.astype(bool)
    share = cells_region(fields, cells, 1e-4).sum() / fields.n_ocean
    assert 0.5 < share < 1.0
    few, _ = cells_variance(fields, cells, 1e-4, whole_share=1.0)
    assert few.size == cells.sum()
    idx, v = cells_variance(fields, cells, 1e-4, whole_share=share)
    assert np.array_equal(idx, np.arange(fields.n_ocean))
    assert np.abs(v * whole.ravel()[fields.ocean] ** 2 - 1).max() <= 1e-4


@pytest.mark.parametrize("fold", ["T", "F"])
def test_the_fold_band_reaches_as_far_as_the_faster_rows_under_it(fold):
    """Slow rows under the fold over fast ones: the band's halo from its own rows alone was
    1.4e-2 off at tolerance 1e-4; grown until it covers the rows it takes in, it holds."""
    from diffnorm.fields import Fields
    from diffnorm.subgrid import band_depth, fold_band_variance

    ny, nx = 50, 40
    k = np.full((ny, nx), 8.0)
    k[-8:] = 0.3
    area = np.full((ny, nx), 1e8)
    fields = Fields(np.ones((ny, nx)), area, k * area, k * area, 10, True, north_fold=fold)
    whole = estimate(fields, "selinv", tolerance=1e-9).gamma
    idx, v = fold_band_variance(fields, 6, 1e-4)
    assert np.abs(v * whole.ravel()[fields.ocean[idx]] ** 2 - 1).max() <= 1e-4
    assert band_depth(fields, 6, 1e-4) > halo_width(0.3, 0.3, 10, 1e-4)[0]  # the slow rows'
