"""North folds and the Topology object: every method against an independent double cover."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import double_cover, folded_fields, random_fields
from diffnorm.augment import Transform, symmetries
from diffnorm.fields import FieldsError, read_fields, write_fields
from diffnorm.methods import estimate
from diffnorm.metrics import distance_to_coast
from diffnorm.ml.halo import pad_halo
from diffnorm.operator import system_matrix
from diffnorm.topology import CELL, FACE_X, FACE_Y, Topology, TopologyError

FOLDS = ["T", "F"]


def images_variance(fields) -> np.ndarray:
    """``v(c) = G(c, c) + G(c, m(c))`` on the unfolded double cover, dense, on the grid."""
    cover, mirror = double_cover(fields)
    a = system_matrix(cover).toarray()
    w = cover.area.ravel()[cover.ocean]
    s = np.linalg.solve(a, np.diag(w))
    g = np.linalg.matrix_power(s, cover.steps) / w[None, :]
    index = np.full(cover.mask.size, -1)
    index[cover.ocean] = np.arange(cover.ocean.size)
    ny, nx = fields.shape
    c = index[: ny * nx]
    m = index[mirror]
    ok = c >= 0
    v = np.full(ny * nx, np.nan)
    v[ok] = g[c[ok], c[ok]] + g[c[ok], m[ok]]
    return v.reshape(ny, nx)


@pytest.fixture(params=FOLDS, ids=["T-fold", "F-fold"])
def folded(request):
    return folded_fields(request.param, seed=3)


def test_brute_on_a_fold_is_the_method_of_images(folded):
    v = images_variance(folded)
    gamma = estimate(folded, "brute").gamma
    m = folded.mask
    np.testing.assert_allclose(gamma[m] ** -2, v[m], rtol=1e-9)
    # the fold matters: a closed last row gives another γ near it
    closed = folded.replace(
        north_fold="none", alpha_y=np.where(np.arange(9)[:, None] < 8, 1, 0) * folded.alpha_y
    )
    near = np.zeros_like(m)
    near[-2:] = True
    assert np.abs(estimate(closed, "brute").gamma[m & near] ** -2 / v[m & near] - 1).max() > 1e-2


def test_exact_and_approximate_methods_follow_the_fold(folded):
    exact = estimate(folded, "brute").gamma
    m = folded.counted
    selinv = estimate(folded, "selinv", tolerance=1e-8)
    err = np.abs(selinv.gamma[m] ** 2 / exact[m] ** 2 - 1)
    assert selinv.tolerance <= 1e-8 and err.max() <= selinv.tolerance
    # short length scales on a wider grid, so that probing probes instead of using brute force
    short = folded_fields(folded.north_fold, ny=14, nx=40, seed=3, kappa=0.05)
    exact_short = estimate(short, "brute").gamma
    probing = estimate(short, "probing", tolerance=1e-4)
    assert "fallback" not in probing.info and probing.info["fold_band_colours"] > 0
    ms = short.counted
    err = np.abs(probing.gamma[ms] ** 2 / exact_short[ms] ** 2 - 1)
    assert err.max() <= 1e-4 and np.all(probing.error_estimate[ms] >= err)
    rand = estimate(folded, "randomization", samples=4000, seed=1).gamma
    assert np.abs(rand[m] ** 2 / exact[m] ** 2 - 1).mean() < 0.05
    for name in ("analytic", "lattice"):
        approx = estimate(folded, name).gamma
        assert np.all(np.isfinite(approx[m])) and np.abs(approx[m] / exact[m] - 1).mean() < 0.5
    torch_brute = estimate(folded, "brute", backend="torch").gamma
    np.testing.assert_allclose(torch_brute[m], exact[m], rtol=1e-9)


def test_t_fold_copies_carry_their_cell(folded):
    gamma = estimate(folded, "brute").gamma
    topo = folded.topology
    rep = topo.representative.reshape(topo.shape)
    copies = topo.duplicate & folded.mask
    assert copies.any() == (folded.north_fold == "T")
    np.testing.assert_array_equal(gamma[copies], gamma.ravel()[rep[copies]])
    assert folded.n_ocean == int((folded.mask & ~topo.duplicate).sum())


@pytest.mark.parametrize("fold", FOLDS)
def test_the_fold_checks_values_listed_twice(fold):
    f = folded_fields(fold)
    ny, nx = f.shape
    if fold == "T":
        mask = f.mask.astype(float)
        mask[ny - 1, nx - 1] = 1 - mask[ny - 1, 1]
        # plain numbers, not NumPy reprs (np.float64(1.0) and np.float64(0.0))
        with pytest.raises(
            FieldsError, match=r"mask breaks the T-pivot .* row j=8 .* with 0 and 1;"
        ):
            f.replace(mask=mask)
        ax = f.alpha_x.copy()
        ax[ny - 1, nx - 5] *= 2  # the face between copies of cells 5 and 4
        with pytest.raises(FieldsError, match="alpha_x breaks the T-pivot"):
            f.replace(alpha_x=ax)
    else:
        ay = f.alpha_y.copy()
        ay[ny - 1, nx - 1] *= 2
        one, copy = (f"{v:.10g}" for v in (ay[ny - 1, nx - 1], ay[ny - 1, 0]))
        with pytest.raises(
            FieldsError, match=rf"alpha_y breaks the F-pivot .* i=11 and i=0 with {one} and {copy};"
        ):
            f.replace(alpha_y=ay)
    with pytest.raises(TopologyError, match="even number of columns"):
        Topology(4, 7, True, fold)
    with pytest.raises(FieldsError, match="periodic"):
        f.replace(periodic_x=False)


def test_file_round_trip_keeps_the_fold(folded, tmp_path):
    back, _ = read_fields(write_fields(tmp_path / "f.nc", folded))
    assert back.north_fold == folded.north_fold


@pytest.mark.parametrize("fold", FOLDS)
def test_basins_and_coast_distance_cross_the_fold(fold):
    ny, nx = 6, 8
    mask = np.zeros((ny, nx))
    mask[ny - 1, 1] = mask[ny - 2, 1] = 1
    partner = nx - 2 if fold == "F" else nx - 1  # joins (ny-1, 1) across the fold
    mask[ny - 1, partner] = mask[ny - 2, partner] = 1
    if fold == "T":
        mask[ny - 2, partner] = 0
        mask[ny - 2, 2] = mask[ny - 1, 2] = mask[ny - 1, nx - 2] = 1
    topo = Topology(ny, nx, True, fold)
    labels = topo.basin_labels(mask)
    assert labels.max() == 1 and labels[ny - 1, 1] == labels[ny - 1, partner]
    assert Topology(ny, nx, True).basin_labels(mask).max() > 1
    ocean = np.ones((ny, nx))
    ocean[0] = 0
    dist = topo.distance_to_coast(ocean)
    assert dist[ny - 1].min() > 1  # the fold is not a coast
    assert Topology(ny, nx, True).distance_to_coast(ocean)[ny - 1].max() == 1


@pytest.mark.parametrize("fold", FOLDS)
@pytest.mark.parametrize("kind", [CELL, FACE_X, FACE_Y])
def test_torch_halo_matches_numpy_padding(fold, kind):
    topo = Topology(7, 10, True, fold)
    a = np.random.default_rng(0).standard_normal((7, 10))
    expected = topo.pad(a, 3, fill=-9.0, kind=kind)
    got = pad_halo(torch.from_numpy(a)[None, None], 3, True, -9.0, fold, [kind])[0, 0]
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("fold", FOLDS)
def test_halo_padding_agrees_with_xgcm(fold):
    xr = pytest.importorskip("xarray")
    xgcm = pytest.importorskip("xgcm")
    from xgcm.padding import pad

    ny, nx, halo = 7, 10, 3
    coords = {
        "x_c": np.arange(nx) + 0.5,
        "x_r": np.arange(nx) + 1.0,
        "y_c": np.arange(ny) + 0.5,
        "y_r": np.arange(ny) + 1.0,
    }
    ds = xr.Dataset(coords=coords)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # xgcm's fold is marked experimental
        grid = xgcm.Grid(
            ds,
            coords={"X": {"center": "x_c", "right": "x_r"}, "Y": {"center": "y_c", "right": "y_r"}},
            padding={"X": "periodic", "Y": {"fold": "center" if fold == "T" else "corner"}},
            autoparse_metadata=False,
        )
    topo = Topology(ny, nx, True, fold)
    rng = np.random.default_rng(1)
    for kind, dims in ((CELL, ("y_c", "x_c")), (FACE_X, ("y_c", "x_r")), (FACE_Y, ("y_r", "x_c"))):
        if fold == "T" and kind == FACE_Y:
            # xgcm 0.10.1 mirrors the V row next to a T-pivot fold onto the first halo row;
            # NEMO's lbc_nfd (V, T pivot: ptab(ji, jpj) = ptab(ijt, jpj-3), and the fold row's
            # own V = its mirror in jpj-2) gives the row two below the fold, as we do: checked
            # against NEMO's rules in test_nemo_layout_follows_lbc_nfd
            continue
        a = rng.standard_normal((ny, nx))
        da = xr.DataArray(a, dims=dims, coords={d: coords[d] for d in dims})
        padded = pad(da, grid, {"X": (halo, halo), "Y": (0, halo)}).transpose(*dims).values
        ours = topo.pad(a, halo, kind=kind)[halo:, :]
        np.testing.assert_array_equal(ours, padded, err_msg=kind)


def test_symmetries_of_a_fold_commute_with_gamma(folded):
    gamma = estimate(folded, "brute").gamma
    transforms = symmetries(folded.topology)
    assert len(transforms) == 4 and not any(t.flip_y or t.transpose for t in transforms)
    for t in transforms:
        moved = estimate(t.fields(folded), "brute").gamma
        np.testing.assert_allclose(moved, t.cells(gamma), rtol=1e-10, equal_nan=True)
    with pytest.raises(ValueError, match="does not map"):
        Transform(flip_y=True).fields(folded)
    with pytest.raises(ValueError, match="breaks the"):
        Transform(shift_x=1).fields(folded)


def test_cnn_runs_on_a_folded_grid(folded):
    big = folded_fields(folded.north_fold, ny=24, nx=30, steps=10, seed=1)
    result = estimate(big, "cnn", exact_basins=0)
    m = big.mask
    assert np.all(np.isfinite(result.gamma[m]))
    if big.north_fold == "T":
        rep = big.topology.representative.reshape(big.shape)
        copies = big.topology.duplicate & m
        np.testing.assert_array_equal(result.gamma[copies], result.gamma.ravel()[rep[copies]])
    assert distance_to_coast(big).shape == big.shape


def test_random_length_scales_are_smooth_across_the_fold():
    from diffnorm.lengthscales import random_cell_length_scales

    topo = Topology(40, 60, True, "F")
    d, _ = random_cell_length_scales(topo.shape, np.random.default_rng(0), topology=topo)
    across = np.abs(np.log(d[-1] / d[-1, ::-1])).mean()  # neighbours through the fold
    along = np.abs(np.log(d[-1] / d[-2])).mean()  # neighbours below
    closed = Topology(40, 60, True)
    c, _ = random_cell_length_scales(closed.shape, np.random.default_rng(0), topology=closed)
    assert across < 2 * along < np.abs(np.log(c[-1] / c[-1, ::-1])).mean()


def test_index_distance_goes_round_the_wrap_and_across_the_fold():
    topo = Topology(10, 12, True, "F")
    assert topo.index_distance(9, 0, np.array([9]), np.array([11]))[0] == 1  # wrap and fold
    assert topo.index_distance(9, 2, np.array([9]), np.array([9]))[0] == 1  # across the fold
    assert Topology(10, 12).index_distance(9, 2, np.array([9]), np.array([9]))[0] == 7


@pytest.mark.parametrize("fold", ["none", "T", "F"])
def test_a_basin_s_dense_block_is_the_system_matrix_s(fold):
    from diffnorm.operator import system_block

    f = folded_fields(fold, seed=3) if fold != "none" else random_fields(ny=10, nx=12, seed=3)
    a = system_matrix(f).toarray()
    labels = f.basin_labels.ravel()[f.ocean]
    for b in np.unique(labels):
        idx = np.flatnonzero(labels == b)
        np.testing.assert_array_equal(system_block(f, idx), a[np.ix_(idx, idx)])
    some = np.arange(0, f.ocean.size, 3)  # not a basin: faces leaving the set stay in the diagonal
    np.testing.assert_allclose(np.diag(system_block(f, some)), np.diag(a)[some])
    off = system_block(f, some) - np.diag(np.diag(system_block(f, some)))
    np.testing.assert_array_equal(off, (a - np.diag(np.diag(a)))[np.ix_(some, some)])


def test_fields_of_one_grid_share_a_read_only_topology():
    a, b = random_fields(seed=1), random_fields(seed=2)
    assert a.topology is b.topology  # one set of neighbour tables for many samples
    assert random_fields(periodic_x=False).topology is not a.topology
    nbr = a.topology.neighbours
    with pytest.raises(ValueError, match="read-only"):
        nbr[0, 0] = 3
    big = Topology.shared(1025, 1024)  # above SHARED_CELLS: its own
    assert big is not Topology.shared(1025, 1024) and big == Topology.shared(1025, 1024)


def _graph_labels(topo: Topology, mask: np.ndarray) -> np.ndarray:
    """Basins as one graph of every cell (the definition): neighbour faces and copies."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = mask.ravel()
    nbr = topo.neighbours
    ok = (nbr >= 0) & m[None, :] & m[np.maximum(nbr, 0)]
    src = np.concatenate([np.broadcast_to(np.arange(m.size), nbr.shape)[ok], np.arange(m.size)])
    dst = np.concatenate([nbr[ok], topo.representative])
    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(m.size,) * 2)
    return connected_components(graph, directed=False)[1].reshape(mask.shape)


@pytest.mark.parametrize(
    ("fold", "periodic"), [("none", False), ("none", True), ("T", True), ("F", True)]
)
def test_basin_labels_and_coast_distance_match_their_definitions(fold, periodic):
    rng = np.random.default_rng(5)
    for _ in range(15):
        ny, nx = int(rng.integers(3, 14)), 2 * int(rng.integers(2, 12))
        lone = rng.random() < 0.3  # one land cell in a tall grid: the wrap is the short way
        ny = 2 * nx if lone else ny
        topo = Topology(ny, nx, periodic, fold)
        mask = rng.random((ny, nx)) < rng.uniform(0.2, 1.0)
        if lone:
            mask[:] = True
            mask[ny // 2, rng.integers(nx)] = False
        mask = mask.ravel()[topo.representative].reshape(ny, nx)  # copies agree
        labels = topo.basin_labels(mask)
        ref = _graph_labels(topo, mask)
        # the same partition of the ocean, numbered by first cell in row-major order
        assert labels[~mask].max(initial=0) == 0 and labels[mask].min(initial=1) == 1
        pairs = set(zip(labels[mask].tolist(), ref[mask].tolist(), strict=True))
        assert len(pairs) == labels.max() == len(set(ref[mask].tolist()))
        first = [np.flatnonzero(labels.ravel() == k)[0] for k in range(1, labels.max() + 1)]
        assert first == sorted(first)
        if fold != "none" or not (~mask).any():
            continue
        # Manhattan distance to the nearest land cell, the short way round the wrap, with
        # closed edges as coast (a land row/column just beyond them)
        dist = topo.distance_to_coast(mask, "manhattan")
        jl, il = np.nonzero(~mask)
        edges_j = np.r_[np.full(nx, -1), np.full(nx, ny)]
        edges_i = np.r_[np.arange(nx), np.arange(nx)]
        if not periodic:
            edges_j = np.r_[edges_j, np.arange(ny), np.arange(ny)]
            edges_i = np.r_[edges_i, np.full(ny, -1), np.full(ny, nx)]
        jl, il = np.r_[jl, edges_j], np.r_[il, edges_i]
        for j, i in zip(*np.nonzero(mask), strict=True):
            dx = np.abs(il - i)
            if periodic:
                dx = np.minimum(dx, nx - dx)
            assert dist[j, i] == (np.abs(jl - j) + dx).min()


@pytest.mark.parametrize(
    ("fold", "periodic"), [("none", False), ("none", True), ("T", True), ("F", True)]
)
@pytest.mark.parametrize("metric", ["manhattan", "euclidean"])
def test_a_limited_coast_distance_is_the_full_one_clipped(fold, periodic, metric):
    """With ``limit`` a periodic grid is padded by limit + 1 columns only: the distances are
    the full ones clipped to ±limit, on wide grids whose coast is far across the wrap too."""
    rng = np.random.default_rng(11)
    for _ in range(12):
        ny, nx = int(rng.integers(4, 16)), 2 * int(rng.integers(8, 40))
        topo = Topology(ny, nx, periodic, fold)
        mask = rng.random((ny, nx)) < rng.uniform(0.5, 0.99)
        mask[:, : int(rng.integers(0, nx // 2))] = True  # long stretches with no land
        mask = mask.ravel()[topo.representative].reshape(ny, nx)
        if mask.all() or not mask.any():
            continue
        full = topo.distance_to_coast(mask, metric)
        for limit in (1, 2.5, 6, 20):
            clipped = topo.distance_to_coast(mask, metric, limit)
            np.testing.assert_array_equal(clipped, np.clip(full, -limit, limit))


@pytest.mark.parametrize("fold", ["none", "T", "F"])
def test_stencil_of_some_cells_is_the_grid_s_there_and_zero_elsewhere(fold):
    f = folded_fields(fold, seed=4) if fold != "none" else random_fields(ny=10, nx=12, seed=4)
    topo = f.topology
    w, nbr, c = topo.stencil(f.mask, f.area, f.slot_alpha())
    cells = np.flatnonzero(f.mask.ravel())[::3]
    ws, nbrs, cs = topo.stencil(f.mask, f.area, f.slot_alpha(), cells)
    np.testing.assert_array_equal(ws[cells], w[cells])
    np.testing.assert_array_equal(cs[:, cells], c[:, cells])
    others = np.setdiff1d(np.arange(w.size), cells)
    assert not ws[others].any() and not cs[:, others].any() and w[cells].any()
    assert nbrs is nbr
