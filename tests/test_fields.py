"""Validation of the fields and the NetCDF round trip."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from conftest import random_fields
from diffnorm.fields import Fields, FieldsError, read_fields, write_fields


def base(**changes):
    ny, nx = 6, 7
    arrays = dict(
        mask=np.ones((ny, nx)),
        area=np.ones((ny, nx)),
        alpha_x=np.ones((ny, nx)),
        alpha_y=np.ones((ny, nx)),
        steps=4,
        periodic_x=False,
    )
    arrays.update(changes)
    return Fields(**arrays)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"area": np.ones((6, 8))}, "area has shape"),
        ({"alpha_x": np.ones((6,))}, "alpha_x must be a 2-D"),
        ({"area": np.where(np.eye(6, 7) > 0, np.nan, 1.0)}, "area: 6 ocean cell"),
        ({"alpha_y": -np.ones((6, 7))}, "alpha_y: .* open face"),
        ({"alpha_x": np.full((6, 7), np.inf)}, "alpha_x: .*open face"),
        ({"mask": np.zeros((6, 7))}, "all land"),
        ({"mask": np.full((6, 7), 0.5)}, "mask must hold only 0"),
        ({"steps": 5}, "steps must be an even integer"),
        ({"steps": 2}, "steps must be an even integer"),
        ({"steps": 4.5}, "steps must be an even integer"),
        ({"periodic_x": 2}, "periodic_x must be 0 or 1"),
        # NumPy scalars (as read from files) in plain form, not np.float64(4.5)
        ({"steps": np.float64(4.5)}, r"steps must be an even integer >= 4, got 4\.5$"),
        ({"periodic_x": np.int64(2)}, "periodic_x must be 0 or 1, got 2$"),
        ({"alpha_y": None}, "alpha_y is missing"),
    ],
)
def test_bad_input_names_the_field(changes, pattern):
    with pytest.raises(FieldsError, match=pattern):
        base(**changes)


def test_masked_arrays_dataarrays_complex_values_and_bad_steps_are_read_or_refused():
    import warnings

    from diffnorm.fields import FieldsLayoutWarning

    f = random_fields()
    area = np.ma.masked_array(f.area.copy())
    area.data[3, 3] = 9.969e36  # a netCDF fill under the mask: no data, not an area
    area[3, 3] = np.ma.masked
    with pytest.raises(FieldsError, match=r"area: 1 ocean cell.* j=3, i=3"):
        f.replace(area=area)
    mask = np.ma.masked_array(f.mask.astype(float), mask=~f.mask)
    with pytest.raises(FieldsError, match="mask has .* missing \\(NaN or masked\\)"):
        f.replace(mask=mask)
    with pytest.raises(FieldsError, match="alpha_x has dtype complex128"):
        f.replace(alpha_x=f.alpha_x.astype(complex))
    for steps in (None, "10", 2.5):
        with pytest.raises(FieldsError, match="steps must be an even integer >= 4"):
            f.replace(steps=steps)
    km2 = xr.DataArray(f.area / 1e6, dims=("y", "x"), attrs={"units": "km2"})
    with pytest.raises(FieldsError, match="area has units 'km2'.*by 1e\\+06"):
        f.replace(area=km2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = f.replace(alpha_x=xr.DataArray(f.alpha_x.T, dims=("x", "y")))
    assert any(issubclass(w.category, FieldsLayoutWarning) for w in caught)
    np.testing.assert_array_equal(g.alpha_x, f.alpha_x)
    # an (x, y) DataArray gets the same checks as any array, other dim names are refused
    with pytest.raises(FieldsError, match="area has dtype complex"):
        f.replace(area=xr.DataArray(f.area.T.astype(complex), dims=("x", "y")))
    with pytest.raises(FieldsError, match=r"dims \('lon', 'lat'\); name them \(y, x\)"):
        f.replace(area=xr.DataArray(f.area, dims=("lon", "lat")))


def test_a_steps_attribute_written_as_text_is_read_as_its_number(tmp_path):
    f = random_fields(steps=6)
    write_fields(tmp_path / "f.nc", f)
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        ds = ds.load()
    ds.attrs["steps"] = "6"  # what `ncatted -a steps,global,o,c,6` leaves
    ds.to_netcdf(tmp_path / "text.nc")
    assert read_fields(tmp_path / "text.nc")[0].steps == 6
    ds.attrs["steps"] = "six"
    ds.to_netcdf(tmp_path / "words.nc")
    with pytest.raises(FieldsError, match="steps must be an even integer >= 4, got 'six'"):
        read_fields(tmp_path / "words.nc")


def test_land_and_closed_faces_may_hold_anything():
    mask = np.ones((6, 7))
    mask[2, 3] = 0
    alpha_x = np.ones((6, 7))
    alpha_x[2, 2:4] = np.nan  # both faces of the land cell
    alpha_x[:, -1] = -5.0  # closed east edge when not periodic
    alpha_y = np.ones((6, 7))
    alpha_y[-1] = np.nan  # the last row's north faces are closed
    area = np.ones((6, 7))
    area[2, 3] = np.nan
    f = base(mask=mask, alpha_x=alpha_x, alpha_y=alpha_y, area=area)
    assert f.alpha_x[2, 2] == 0 and f.alpha_x[0, -1] == 0 and f.alpha_y[-1, 0] == 0
    with pytest.raises(FieldsError, match="alpha_x"):
        base(mask=mask, alpha_x=alpha_x, alpha_y=alpha_y, area=area, periodic_x=True)


def test_open_faces_follow_the_wrap():
    f = base(periodic_x=True)
    assert f.open_x[:, -1].all()
    assert not base().open_x[:, -1].any()
    assert not f.open_y[-1].any()


def test_netcdf_round_trip(tmp_path):
    fields = random_fields(seed=3)
    gamma = np.where(fields.mask, 2.0, np.nan)
    path = write_fields(tmp_path / "s.nc", fields, gamma, attrs={"method": "brute", "tol": 0.0})
    back, g = read_fields(path)
    for name in ("mask", "area", "alpha_x", "alpha_y"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fields, name))
    assert back.steps == fields.steps and back.periodic_x == fields.periodic_x
    np.testing.assert_array_equal(g, gamma)
    # the result's attributes are in the file, but not in the fields read back from it
    assert "method" not in back.attrs and back.attrs["tol"] == 0.0
    with xr.open_dataset(path) as ds:
        assert ds["gamma"].attrs["units"] == "m"
        assert ds.attrs["periodic_x"] == 1 and ds.attrs["method"] == "brute"
    assert not list(tmp_path.glob(".*tmp"))


def test_reading_bad_files(tmp_path):
    with pytest.raises(FieldsError, match="no such file"):
        read_fields(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(FieldsError, match="not a readable NetCDF"):
        read_fields(tmp_path / "junk.nc")
    ds = xr.Dataset({"mask": (("y", "x"), np.ones((3, 3)))}, attrs={"steps": 4, "periodic_x": 0})
    ds.to_netcdf(tmp_path / "partial.nc")
    with pytest.raises(FieldsError, match="missing variable.*area, alpha_x, alpha_y"):
        read_fields(tmp_path / "partial.nc")
    fields = random_fields()
    path = write_fields(tmp_path / "ok.nc", fields)
    with xr.open_dataset(path) as ds:
        broken = ds.load()
    del broken.attrs["steps"]
    broken.to_netcdf(tmp_path / "nosteps.nc")
    with pytest.raises(FieldsError, match="missing attribute 'steps'"):
        read_fields(tmp_path / "nosteps.nc")


def test_an_output_path_that_cannot_be_written_is_refused_by_name(tmp_path):
    fields = random_fields(seed=3)
    folder = tmp_path / "out"
    folder.mkdir()
    # not "[Errno 21] Is a directory: '.out.3t852jgh.tmp' -> 'out'", after the run
    with pytest.raises(
        IsADirectoryError, match=f"output {folder} is an existing folder; give a file"
    ):
        write_fields(folder, fields)
    a_file = write_fields(tmp_path / "f.nc", fields)
    with pytest.raises(
        NotADirectoryError, match=f"{a_file} is a file, not a folder; choose another"
    ):
        write_fields(a_file / "sub" / "x.nc", fields)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nc", "out"]  # no temporary left


def test_atomic_output_uses_a_unique_temporary_and_removes_it_on_failure(tmp_path):
    from diffnorm.fields import atomic_output

    target = tmp_path / "g.nc"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_output(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["g.nc"]
    # two writers of one path at once: their own temporaries, the last rename wins
    with atomic_output(target) as first, atomic_output(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["g.nc"]


def test_atomic_output_keeps_a_link_and_a_mode_and_refuses_a_special_file(tmp_path):
    import os
    import stat

    from diffnorm.fields import atomic_output

    target, link = tmp_path / "g.nc", tmp_path / "link.nc"
    target.write_text("old")
    target.chmod(0o640)
    link.symlink_to(target)
    with atomic_output(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"  # written through the link
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="not a regular file"):
        with atomic_output(fifo):
            pass
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # a rename would have replaced it


@pytest.mark.parametrize(
    "name, units, ok",
    [
        ("area", "km2", False),
        ("area", "m^2", True),
        ("area", "square metres", True),
        ("alpha_x", "cm2", False),
        ("alpha_y", "m**2", True),
        ("gamma", "km", False),
        ("gamma", "metres", True),
        ("area", "", True),  # empty or absent units are read as SI
    ],
)
def test_fields_in_other_units_than_si_are_refused(tmp_path, name, units, ok):
    fields = random_fields(seed=3)
    path = write_fields(tmp_path / "s.nc", fields, np.where(fields.mask, 1e5, np.nan))
    with xr.open_dataset(path) as ds:
        changed = ds.load()
    changed[name].attrs["units"] = units
    changed.to_netcdf(tmp_path / "u.nc")
    if ok:
        read_fields(tmp_path / "u.nc")
        return
    with pytest.raises(FieldsError, match=rf"{name} has units '{units}', .* convert {name} to m"):
        read_fields(tmp_path / "u.nc")


def test_files_carry_cf_metadata_and_the_users_umask(tmp_path):
    import os

    import xarray as xr

    fields = random_fields(seed=3).replace(lat=np.zeros((14, 17)), lon=np.ones((14, 17)))
    old = os.umask(0o022)
    try:
        path = write_fields(tmp_path / "s.nc", fields, np.where(fields.mask, 1.0, np.nan))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        assert ds["area"].attrs["standard_name"] == "cell_area"
        assert ds["gamma"].attrs["cell_measures"] == "area: area"
        assert ds["mask"].attrs["flag_meanings"] == "land ocean"
        assert ds["alpha_x"].attrs["location"] == "edge1"
        assert "_FillValue" not in ds["lat"].attrs and "_FillValue" not in ds["lon"].attrs


def test_a_transposed_file_is_read_by_dim_names(tmp_path):
    import xarray as xr

    from diffnorm.fields import FieldsLayoutWarning
    from diffnorm.methods import estimate

    fields = random_fields(seed=4, anisotropy=3.0)
    path = write_fields(tmp_path / "s.nc", fields)
    with xr.open_dataset(path) as ds:
        ds.transpose("x", "y").to_netcdf(tmp_path / "xy.nc")
    with pytest.warns(FieldsLayoutWarning, match=r"stored \(x, y\)"):
        back, _ = read_fields(tmp_path / "xy.nc")
    np.testing.assert_array_equal(back.alpha_x, fields.alpha_x)
    assert np.allclose(
        estimate(back, "brute").gamma, estimate(fields, "brute").gamma, equal_nan=True
    )
    with xr.open_dataset(path) as ds:
        ds.rename({"x": "i", "y": "j"}).to_netcdf(tmp_path / "ij.nc")
    with pytest.raises(FieldsError, match=r"name them \(y, x\)"):
        read_fields(tmp_path / "ij.nc")
