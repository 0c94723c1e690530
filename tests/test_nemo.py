"""Real NEMO files, and folded ORCA-like meshes in both NEMO layouts, give the γ of fields built
by hand from their metrics; γ goes back on the file's own layout by NEMO's rules."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from diffnorm.fields import Fields, FieldsError
from diffnorm.grid import fields_from_metrics
from diffnorm.methods import estimate
from diffnorm.nemo import Layout, mesh_mask_grid, to_nemo_layout
from diffnorm.topology import CELL, FACE_X, FACE_Y, Topology

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nemo"
KAPPA = 2.0e8  # m², constant: face means are κ whatever the averaging
STEPS = 10
METRICS = ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v")
KIND = {"e1t": "T", "e2t": "T", "tmask": "T", "gphit": "T", "glamt": "T"}
KIND.update({"e1u": "U", "e2u": "U", "e1v": "V", "e2v": "V"})


def by_hand(mask, e, fold="none", periodic=False) -> Fields:
    """DESIGN §1 written out: area = e1t·e2t, alpha_x = κ·e2u/e1u, alpha_y = κ·e1v/e2v."""
    return Fields(
        mask.astype(float),
        e["e1t"] * e["e2t"],
        KAPPA * e["e2u"] / e["e1u"],
        KAPPA * e["e1v"] / e["e2v"],
        STEPS,
        periodic,
        north_fold=fold,
    )


def gamma_of(metrics) -> np.ndarray:
    return estimate(fields_from_metrics(metrics, KAPPA, KAPPA, STEPS), "brute").gamma


# -- the files NEMO wrote -------------------------------------------------------------------------
def test_nemo36_mesh_mask_gives_the_hand_built_gamma():
    path = SHARED / "gyre_nemo3.6_mesh_mask.nc"
    with netCDF4.Dataset(path) as ds:
        e = {v: np.asarray(ds[v][0], dtype=float) for v in METRICS}
        mask = np.asarray(ds["tmask"][0, 0]) > 0
    g = mesh_mask_grid(path)
    assert g.shape == (12, 12) and not g.periodic_x and g.north_fold == "none"
    assert g.attrs["nemo_mask_from"] == "tmask" and g.attrs["nemo_layout"] == "plain"
    expected = estimate(by_hand(mask, e), "brute").gamma
    np.testing.assert_allclose(gamma_of(g), expected, rtol=1e-12, equal_nan=True)


def test_nemo40_domain_cfg_gives_the_hand_built_gamma():
    path = SHARED / "gyre_nemo4.0_domain_cfg_out.nc"
    with netCDF4.Dataset(path) as ds:
        e = {v: np.asarray(ds[v][0], dtype=float) for v in METRICS}
        mask = np.asarray(ds["bottom_level"][0]) > 0
        assert int(ds["jperio"][...]) == 0
    g = mesh_mask_grid(path)
    assert g.shape == (22, 32) and g.attrs["nemo_mask_from"] == "bottom_level"
    expected = estimate(by_hand(mask, e), "brute").gamma
    np.testing.assert_allclose(gamma_of(g), expected, rtol=1e-12, equal_nan=True)


def test_x_y_order_is_transposed_by_name_never_solved_transposed(tmp_path):
    src = SHARED / "gyre_nemo4.0_domain_cfg_out.nc"
    with xr.open_dataset(src) as ds:
        flipped = ds.transpose(..., "x", "y")
        flipped.to_netcdf(tmp_path / "xy.nc")
    g = mesh_mask_grid(tmp_path / "xy.nc")
    assert g.shape == (22, 32) and "e1t" in g.attrs["transposed_from_x_y"]
    np.testing.assert_allclose(gamma_of(g), gamma_of(mesh_mask_grid(src)), rtol=1e-12)


# -- folded ORCA-like meshes in NEMO's two layouts ------------------------------------------------
def lbc_nfd(full: np.ndarray, kind: str, fold: str) -> None:
    """NEMO's north-fold rule for one scalar field (psgn = 1) on a full ``(jpj, jpi)`` array,
    transcribed from lbc_nfd_2d's 1-based loops (one process): ``P(ji, jj) = full[jj-1, ji-1]``."""
    jpj, jpi = full.shape

    def p(ji, jj):
        return full[jj - 1, ji - 1]

    def put(ji, jj, v):
        full[jj - 1, ji - 1] = v

    if fold == "T":
        if kind == "T":
            for ji in range(2, jpi + 1):
                put(ji, jpj, p(jpi - ji + 2, jpj - 2))
            put(1, jpj, p(3, jpj - 2))
            for ji in range(jpi // 2 + 1, jpi + 1):
                put(ji, jpj - 1, p(jpi - ji + 2, jpj - 1))
        elif kind == "U":
            for ji in range(1, jpi):
                put(ji, jpj, p(jpi - ji + 1, jpj - 2))
            put(1, jpj, p(2, jpj - 2))
            put(jpi, jpj, p(jpi - 1, jpj - 2))
            put(1, jpj - 1, p(jpi, jpj - 1))
            for ji in range(jpi // 2, jpi):
                put(ji, jpj - 1, p(jpi - ji + 1, jpj - 1))
        else:
            for jl in (-1, 0):
                for ji in range(2, jpi + 1):
                    put(ji, jpj + jl, p(jpi - ji + 2, jpj - 3 - jl))
            put(1, jpj, p(3, jpj - 3))
    else:
        if kind == "T":
            for ji in range(1, jpi + 1):
                put(ji, jpj, p(jpi - ji + 1, jpj - 1))
        elif kind == "U":
            for ji in range(1, jpi):
                put(ji, jpj, p(jpi - ji, jpj - 1))
            put(jpi, jpj, p(1, jpj - 1))
        else:
            for ji in range(1, jpi + 1):
                put(ji, jpj, p(jpi - ji + 1, jpj - 2))
            for ji in range(jpi // 2 + 1, jpi + 1):
                put(ji, jpj - 1, p(jpi - ji + 1, jpj - 1))


def nemo40(inner: np.ndarray, kind: str, fold: str) -> np.ndarray:
    """A NEMO ≤ 4.0 array: the inner domain with its two cyclic halo columns and its ghost row,
    filled by lbc_lnk (east-west copies, then the fold)."""
    ny, nx = inner.shape
    full = np.zeros((ny + 1, nx + 2))
    full[:ny, 1:-1] = inner
    full[:, 0], full[:, -1] = full[:, -2], full[:, 1]
    lbc_nfd(full, kind, fold)
    return full


def orca_like_mesh(fold: str, ny: int = 12, nx: int = 16, seed: int = 0) -> dict:
    """Random positive metrics on NEMO's inner domain that already obey the fold (as NEMO's
    own fields do after lbc_lnk), with land on the fold row, and lat/lon."""
    rng = np.random.default_rng(seed)
    arrays = {v: rng.uniform(4e4, 1e5, (ny, nx)) for v in METRICS}
    mask = np.ones((ny, nx))
    mask[0] = 0
    mask[4:6, 5:8] = 0
    mask[ny - 1, 3] = 0
    arrays["tmask"] = mask
    arrays["gphit"] = np.linspace(-70, 88, ny)[:, None] + rng.uniform(0, 0.5, (ny, nx))
    arrays["glamt"] = rng.uniform(-180, 180, (ny, nx))
    # apply the fold to the inner domain: run NEMO's rule on the full layout and cut it back
    for v in arrays:
        arrays[v] = nemo40(arrays[v], KIND.get(v, "T"), fold)[:ny, 1:-1]
    return arrays


def write_mesh(path: Path, arrays: dict, fold: str, layout: str, jperio: bool = True) -> Path:
    if layout == "4.2":
        data = {v: (("t", "y", "x"), a[None]) for v, a in arrays.items()}
        attrs = {"Iperio": 1, "NFold": 1, "NFtype": fold}
    else:
        data = {v: (("t", "y", "x"), nemo40(a, KIND[v], fold)[None]) for v, a in arrays.items()}
        attrs = {}
        if jperio:
            data["jperio"] = ((), 4 if fold == "T" else 6)
    xr.Dataset(data, attrs=attrs).to_netcdf(path)
    return path


@pytest.mark.parametrize("fold", ["T", "F"])
def test_folded_meshes_in_both_layouts_give_the_hand_built_gamma(fold, tmp_path):
    arrays = orca_like_mesh(fold)
    e = {v: arrays[v] for v in METRICS}
    expected = estimate(by_hand(arrays["tmask"] > 0, e, fold, True), "brute").gamma
    cases = [("4.2", True), ("4.0", True), ("4.0", False)]
    for layout, jperio in cases:
        path = write_mesh(tmp_path / f"{layout}{jperio}.nc", arrays, fold, layout, jperio)
        g = mesh_mask_grid(path)
        assert (g.north_fold, g.periodic_x, g.shape) == (fold, True, (12, 16)), (layout, jperio)
        np.testing.assert_allclose(gamma_of(g), expected, rtol=1e-11, equal_nan=True)
        # and back on the file's layout, by NEMO's rule for T points
        gamma = gamma_of(g)
        back = to_nemo_layout(gamma, Topology(12, 16, True, fold), g.attrs)
        want = np.nan_to_num(gamma, nan=-1.0)
        want = want if layout == "4.2" else nemo40(want, "T", fold)
        np.testing.assert_array_equal(np.nan_to_num(back, nan=-1.0), want)


def test_overrides_and_refusals(tmp_path):
    arrays = orca_like_mesh("T")
    path = write_mesh(tmp_path / "m.nc", arrays, "T", "4.2")
    assert mesh_mask_grid(path, north_fold="none").north_fold == "none"
    no_meta = write_mesh(tmp_path / "n.nc", arrays, "T", "4.0", jperio=False)
    assert mesh_mask_grid(no_meta, north_fold="F").north_fold == "F"  # the option wins
    with xr.open_dataset(path) as ds:
        ds.assign(jperio=((), 5)).drop_attrs().to_netcdf(tmp_path / "j5.nc")
    with pytest.raises(FieldsError, match="jperio=5 .* not supported"):
        mesh_mask_grid(tmp_path / "j5.nc")
    with pytest.raises(FieldsError, match="nemo_layout"):
        Layout.from_attrs({}, Topology(4, 4))


@pytest.mark.parametrize("fold", ["T", "F"])
@pytest.mark.parametrize("kind", [CELL, FACE_X, FACE_Y])
def test_halo_padding_follows_lbc_nfd(fold, kind):
    # the network's halo and the write-back use Topology.pad: it must mirror every point type
    # as NEMO does (T: cells, U: east faces, V: north faces)
    ny, nx = 9, 12
    a = np.random.default_rng(2).standard_normal((ny, nx))
    nemo_kind = {CELL: "T", FACE_X: "U", FACE_Y: "V"}[kind]
    inner = nemo40(a, nemo_kind, fold)[:ny, 1:-1]  # a field that obeys the fold
    full = nemo40(inner, nemo_kind, fold)
    ours = Topology(ny, nx, True, fold).pad(inner, (1, 1), kind=kind)[1:]
    if fold == "F" and kind == FACE_X:
        # lbc_nfd sets this halo corner from P(1, jpj-1), not from its cyclic image P(2, jpj)
        # as every other point: neither is a face of the inner domain
        ours[-1, -1] = full[-1, -1]
    np.testing.assert_array_equal(ours, full)


def test_gamma_on_nemo_layout_keeps_the_provenance_of_the_normal_output(tmp_path):
    from diffnorm.fields import write_fields
    from diffnorm.nemo import write_nemo_gamma

    arrays = orca_like_mesh("F")
    mesh = write_mesh(tmp_path / "mesh.nc", arrays, "F", "4.0")
    fields = fields_from_metrics(mesh_mask_grid(mesh), KAPPA, KAPPA, STEPS)
    result = estimate(fields, "selinv")
    normal = write_fields(tmp_path / "g.nc", fields, result.gamma, attrs=result.attrs())
    nemo = write_nemo_gamma(tmp_path / "n.nc", fields, result.gamma, result.attrs())
    with xr.open_dataset(normal) as want, xr.open_dataset(nemo) as got:
        assert got.attrs == want.attrs  # steps, periodic_x, north_fold, diffnorm_version, method
        assert (got.attrs["steps"], got.attrs["north_fold"]) == (STEPS, "F")
        assert got["gamma"].shape == got["lat"].shape == (13, 18)  # halo columns, ghost row
        np.testing.assert_array_equal(got["lat"].values, nemo40(arrays["gphit"], "T", "F"))
        np.testing.assert_array_equal(got["lon"].values, nemo40(arrays["glamt"], "T", "F"))


def test_gamma_on_nemo_layout_masks_land_checks_the_shape_and_keeps_per_cell_results(tmp_path):
    from diffnorm.nemo import write_nemo_gamma

    arrays = orca_like_mesh("F")
    mesh = write_mesh(tmp_path / "mesh.nc", arrays, "F", "4.0")
    fields = fields_from_metrics(mesh_mask_grid(mesh), KAPPA, KAPPA, STEPS)
    gamma = np.where(fields.mask, 5.0e4, 0.0)  # a caller's zero on land
    error = np.full(fields.shape, 0.01)
    flags = np.where(fields.mask, 3, 7).astype(np.uint8)
    extra = {"gamma_error_estimate": (error, {}), "domain_flags": (flags, {})}
    path = write_nemo_gamma(tmp_path / "n.nc", fields, gamma, variables=extra)
    with xr.open_dataset(path) as got:
        ocean = nemo40(fields.mask.astype(float), "T", "F") > 0
        assert got["gamma"].shape == got["domain_flags"].shape == (13, 18)
        assert np.isnan(got["gamma"].values[~ocean]).all()
        assert np.isnan(got["gamma_error_estimate"].values[~ocean]).all()
        assert (got["gamma"].values[ocean] == 5.0e4).all()
        assert got["domain_flags"].dtype == np.uint8
        assert set(np.unique(got["domain_flags"].values[ocean])) == {3}
    with pytest.raises(FieldsError, match=r"gamma has shape \(.*\), expected"):
        write_nemo_gamma(tmp_path / "t.nc", fields, gamma.T)


def test_metrics_and_parameters_in_other_units_than_si_are_refused(tmp_path):
    from diffnorm.nemo import read_parameters

    arrays = orca_like_mesh("T")
    mesh = write_mesh(tmp_path / "mesh.nc", arrays, "T", "4.2")
    with xr.open_dataset(mesh) as ds:
        km = ds.load()
    km["e2t"].attrs["units"] = "km"
    km.to_netcdf(tmp_path / "km.nc")
    with pytest.raises(FieldsError, match=r"e2t has units 'km', .* to m \(multiply .* by 1000\)"):
        mesh_mask_grid(tmp_path / "km.nc")
    km["e2t"].attrs["units"] = "metres"
    km.to_netcdf(tmp_path / "metres.nc")
    g = mesh_mask_grid(tmp_path / "metres.nc")
    k = np.full(g.shape, KAPPA)
    for units, ok in [("cm2", False), ("cm2 s-1", False), ("m2 s-1", True), ("m2", True)]:
        attrs = {"units": units}
        ds = xr.Dataset({n: (("y", "x"), k, attrs) for n in ("kappa11", "kappa22")})
        ds.to_netcdf(tmp_path / "k.nc")
        if ok:
            assert read_parameters(tmp_path / "k.nc", g, "kappa")[0][1, 1] == KAPPA
        else:
            with pytest.raises(FieldsError, match=f"kappa11 has units '{units}', .*by 0.0001"):
                read_parameters(tmp_path / "k.nc", g, "kappa")
    ds = xr.Dataset({n: (("y", "x"), k, {"units": "km"}) for n in ("D1", "D2")})
    ds.to_netcdf(tmp_path / "d.nc")
    with pytest.raises(FieldsError, match="D1 has units 'km'"):
        read_parameters(tmp_path / "d.nc", g, "length_scales")


def test_cli_mesh_with_users_kappa_and_gamma_back_on_nemo_layout(tmp_path):
    from typer.testing import CliRunner

    from diffnorm.cli import app

    runner = CliRunner()
    arrays = orca_like_mesh("T")
    mesh = write_mesh(tmp_path / "mesh.nc", arrays, "T", "4.0")
    k = np.full((13, 18), KAPPA)  # on the file's own layout: cut like the mesh
    xr.Dataset({"kappa11": (("y", "x"), k), "kappa22": (("y", "x"), k)}).to_netcdf(
        tmp_path / "k.nc"
    )
    fields = tmp_path / "f.nc"
    args = ["grid", "mesh", "--mesh", str(mesh), "--kappa", str(tmp_path / "k.nc")]
    res = runner.invoke(app, [*args, "--steps", str(STEPS), "-o", str(fields)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "gamma_nemo.nc"
    res = runner.invoke(app, ["estimate", str(fields), "-o", str(out), "-q", "--nemo-layout"])
    assert res.exit_code == 0, res.output
    e = {v: arrays[v] for v in METRICS}
    expected = estimate(by_hand(arrays["tmask"] > 0, e, "T", True), "selinv").gamma
    with xr.open_dataset(out) as ds:
        gamma = ds["gamma"].values
        error = ds["gamma_error_estimate"].values  # selinv's certificate, laid out alike
    assert gamma.shape == error.shape == (13, 18)
    assert np.array_equal(np.isnan(error), np.isnan(gamma))
    want = nemo40(np.nan_to_num(expected, nan=-1.0), "T", "T")
    np.testing.assert_allclose(np.nan_to_num(gamma, nan=-1.0), want, rtol=1e-6)
    # a parameter file on neither layout is refused with both shapes named
    xr.Dataset({"D1": (("y", "x"), k[:5]), "D2": (("y", "x"), k[:5])}).to_netcdf(tmp_path / "d.nc")
    args = ["grid", "mesh", "--mesh", str(mesh), "--length-scales", str(tmp_path / "d.nc")]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "g.nc")])
    assert res.exit_code == 2 and "D1 has shape (5, 18)" in res.output
    assert not (tmp_path / "g.nc").exists()
