"""The fields that define a diffusion operator on a 2-D grid (DESIGN §1) and their NetCDF form.

Grid of ``ny × nx`` cells indexed ``[j, i]`` (``j`` northward, ``i`` eastward):

- ``mask[j, i]``: 1 ocean, 0 land;
- ``area[j, i]``: cell area W = e1t·e2t (m²);
- ``alpha_x[j, i]``: scaled diffusivity κ₁₁·e2u/e1u on the east face of (j, i) (m²);
- ``alpha_y[j, i]``: scaled diffusivity κ₂₂·e1v/e2v on the north face of (j, i) (m²);
- ``steps``: number M of implicit diffusion steps (even, ≥ 4);
- ``periodic_x``: east–west wrap (face ``alpha_x[:, nx-1]`` couples to column 0);
- ``north_fold``: ``none``, ``T`` or ``F`` (ORCA's north fold; see :mod:`diffnorm.topology`,
  which owns the grid's connectivity).

A face is open when both its cells are ocean; open faces must carry a finite ``alpha > 0``.
Values on land cells and closed faces are ignored (they may be NaN in a file). On a folded
grid, values listed twice (a T-fold cell and its copy, a face on the fold) must agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffnorm.topology import EAST, NORTH, Topology, TopologyError

FIELD_NAMES: tuple[str, ...] = ("mask", "area", "alpha_x", "alpha_y")
FILE_LAYOUT_HINT = (
    "a diffnorm fields file holds the variables mask, area, alpha_x, alpha_y on dims (y, x) "
    "and the attributes steps (even integer >= 4), periodic_x (0 or 1) and optionally "
    "north_fold (none, T or F); "
    "`diffnorm grid` writes one"
)


# Attributes a file carries about its gamma (GammaResult.attrs, the generator's timing) or its
# writer: they describe one run, so fields read from a result file must not carry them into the
# next one (an analytic run on a brute output would claim certified_tolerance=0).
RESULT_ATTRS = frozenset(
    {"method", "certified_tolerance", "wall_time_s", "sample_wall_time_s", "diffnorm_version"}
)
RESULT_ATTR_PREFIXES = ("option_", "info_", "verify_")


def is_result_attr(name: str) -> bool:
    """Whether a global attribute describes a γ result or its writer, not the fields."""
    return name in RESULT_ATTRS or name.startswith(RESULT_ATTR_PREFIXES)


class FieldsError(ValueError):
    """Invalid operator fields; the message names the field and the fix."""


class FieldsLayoutWarning(UserWarning):
    """A file was read in a layout other than DESIGN's (e.g. transposed dims)."""


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as Python ones, for messages: ``5.5``, not
    ``np.float64(5.5)``."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _number(value: Any) -> str:
    """A number for a message, plain and exact enough to tell apart values that differ:
    ``1``, ``0``, ``1.2e+08``."""
    return f"{float(value):.10g}"


def check_steps(steps: Any) -> int:
    """``steps`` (M) as an int, refused unless an even integer >= 4 (``L^(1/2) = S^(M/2)``)."""
    try:
        whole = not isinstance(steps, bool | np.bool_ | str) and float(steps).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise FieldsError(f"steps must be an even integer >= 4, got {_plain(steps)!r}")
    if int(steps) < 4 or int(steps) % 2:
        raise FieldsError(
            f"steps must be an even integer >= 4 (L^(1/2) = S^(M/2)), got {int(steps)}"
        )
    return int(steps)


def same_fields(a: Fields, b: Fields) -> bool:
    """Whether ``a`` and ``b`` define the same operator: grid, topology, M and the values of
    mask, area and alphas (an operator built for one serves the other)."""
    if a is b:
        return True
    return (
        a.shape == b.shape
        and (a.steps, a.periodic_x, a.north_fold) == (b.steps, b.periodic_x, b.north_fold)
        and all(np.array_equal(getattr(a, n), getattr(b, n)) for n in FIELD_NAMES)
    )


def _field_array(value: Any, name: str) -> np.ndarray:
    """A field given to :class:`Fields` as a 2-D (y, x) array: a NumPy masked array's masked
    cells become NaN (its hidden values, often a netCDF fill of 1e36, are no data); an xarray
    ``DataArray`` is read as :func:`read_fields` reads a variable (``(x, y)`` dims transposed
    with a warning, units checked as SI)."""
    if hasattr(value, "dims") and hasattr(value, "attrs"):  # an xarray DataArray
        if name in FIELD_UNITS:
            check_units(value.attrs.get("units"), name, FIELD_UNITS[name], "Fields")
        value = _yx_dims(value, name, "Fields").values  # then checked as any array
    if np.ma.isMaskedArray(value):
        value = np.ma.filled(np.ma.asarray(value, dtype=np.float64), np.nan)
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise FieldsError(f"{name} must be a 2-D (y, x) array, got shape {arr.shape}")
    if np.iscomplexobj(arr) or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)):
        raise FieldsError(f"{name} has dtype {arr.dtype}; give real numbers (a float array)")
    return arr


def _first_index(bad: np.ndarray) -> str:
    j, i = np.argwhere(bad)[0]
    return f"j={j}, i={i}"


@dataclass(frozen=True, eq=False)
class Fields:
    """Validated inputs of the diffusion operator (see module docstring for the contract)."""

    mask: np.ndarray
    area: np.ndarray
    alpha_x: np.ndarray
    alpha_y: np.ndarray
    steps: int
    periodic_x: bool = False
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    north_fold: str = "none"
    topology: Topology = field(init=False, repr=False)

    def __post_init__(self) -> None:
        arrays = {}
        for name in FIELD_NAMES:
            value = getattr(self, name)
            if value is None:
                raise FieldsError(f"{name} is missing; {FILE_LAYOUT_HINT}")
            arrays[name] = _field_array(value, name)
        shape = arrays["mask"].shape
        if min(shape) < 1:
            raise FieldsError(f"mask has an empty shape {shape}; the grid needs ny, nx >= 1")
        for name in FIELD_NAMES[1:]:
            if arrays[name].shape != shape:
                raise FieldsError(
                    f"{name} has shape {arrays[name].shape} but mask has shape {shape}; "
                    "all fields must share the (y, x) grid"
                )
        raw_mask = arrays["mask"].astype(np.float64)
        if not np.isfinite(raw_mask).all():
            bad = ~np.isfinite(raw_mask)
            raise FieldsError(
                f"mask has {int(bad.sum())} missing (NaN or masked) value(s), first at "
                f"{_first_index(bad)}; give every cell 0 (land) or 1 (ocean)"
            )
        bad = ~np.isin(raw_mask, (0.0, 1.0))
        if bad.any():
            raise FieldsError(
                f"mask must hold only 0 (land) and 1 (ocean); found {float(raw_mask[bad][0]):g} at "
                f"{_first_index(bad)}"
            )
        mask = raw_mask.astype(bool)
        if not mask.any():
            raise FieldsError("mask has no ocean cell (all land): there is nothing to normalize")
        steps = check_steps(self.steps)
        if self.periodic_x not in (0, 1, True, False):
            raise FieldsError(f"periodic_x must be 0 or 1, got {_plain(self.periodic_x)!r}")
        periodic = bool(self.periodic_x)
        try:
            topology = Topology.shared(shape[0], shape[1], periodic, self.north_fold)
        except TopologyError as exc:
            raise FieldsError(str(exc)) from exc
        _check_fold_copies(topology, {"mask": raw_mask}, mask)

        area = arrays["area"].astype(np.float64)
        bad = mask & ~(np.isfinite(area) & (area > 0))
        if bad.any():
            raise FieldsError(
                f"area: {int(bad.sum())} ocean cell(s) have a non-finite or non-positive area "
                f"(first at {_first_index(bad)}); cell areas must be finite and > 0 m², "
                "or the cell must be masked as land"
            )
        _check_fold_copies(topology, {"area": area}, mask)
        open_x, open_y = topology.open_faces(mask)
        alphas = {}
        for name, opened in (("alpha_x", open_x), ("alpha_y", open_y)):
            alpha = arrays[name].astype(np.float64)
            bad = opened & ~(np.isfinite(alpha) & (alpha > 0))
            if bad.any():
                raise FieldsError(
                    f"{name}: {int(bad.sum())} open face(s) have a missing, non-finite or "
                    f"non-positive diffusivity (first at {_first_index(bad)}, value "
                    f"{float(alpha[bad][0]):g}); every face between two ocean cells needs "
                    "alpha > 0 — give it a positive diffusivity or mask one of its cells as land"
                )
            alphas[name] = np.where(opened, alpha, 0.0)
        _check_fold_copies(topology, alphas, mask)
        area = np.where(mask, area, np.where(np.isfinite(area), area, 0.0))

        for name in ("lat", "lon"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if value.shape != shape:
                    raise FieldsError(f"{name} has shape {value.shape}, expected {shape}")
                object.__setattr__(self, name, value)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "area", area)
        object.__setattr__(self, "alpha_x", alphas["alpha_x"])
        object.__setattr__(self, "alpha_y", alphas["alpha_y"])
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "periodic_x", periodic)
        object.__setattr__(self, "north_fold", topology.north_fold)
        object.__setattr__(self, "topology", topology)
        object.__setattr__(self, "attrs", dict(self.attrs))
        for name in ("mask", "area", "alpha_x", "alpha_y"):
            getattr(self, name).flags.writeable = False
        _check_conditioning(self.slot_alpha(), self.area, mask)  # the faces' alphas, once

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]

    @property
    def n_ocean(self) -> int:
        """Ocean cells, each T-fold cell once (the operator's unknowns)."""
        return int(self.ocean.size)

    @functools.cached_property
    def ocean(self) -> np.ndarray:
        """Flat indices of the operator's unknowns: ocean cells (not T-fold copies), row-major
        (read-only, computed once)."""
        return _read_only(self.topology.ocean(self.mask))

    @functools.cached_property
    def counted(self) -> np.ndarray:
        """Ocean cells that statistics count: each T-fold cell once (read-only)."""
        return _read_only(self.topology.counted(self.mask))

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Unknown-ordered values on the ``(ny, nx)`` grid, ``fill`` on land."""
        return self.topology.to_grid(values, self.mask, fill)

    @property
    def weights(self) -> np.ndarray:
        """``w = area`` on the unknowns (halved on T-fold pivots), float64."""
        factor = self.topology.cell_factor.ravel()[self.ocean]
        return self.area.ravel()[self.ocean].astype(np.float64) * factor

    def derived(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per Fields: quantities of the fields alone that features, flags,
        baselines, strata and error estimates each need (distances, runs, cell geometry).
        Arrays come back read-only. A changed field is a new Fields (:meth:`replace`), so the
        memo never goes stale."""
        memo = self.__dict__.setdefault("_derived", {})
        if key not in memo:
            memo[key] = _freeze(compute())
        return memo[key]

    def distance_to_coast(
        self, metric: str = "euclidean", limit: float | None = None
    ) -> np.ndarray:
        """Signed distance in cells to the coast (:meth:`Topology.distance_to_coast`; with
        ``limit``, clipped to ±limit and cheaper on a periodic grid), computed once per metric
        and limit (read-only)."""
        key = f"distance_{metric}" + ("" if limit is None else f"_{limit:g}")
        return self.derived(key, lambda: self.topology.distance_to_coast(self.mask, metric, limit))

    @functools.cached_property
    def _open_faces(self) -> tuple[np.ndarray, np.ndarray]:
        open_x, open_y = self.topology.open_faces(self.mask)
        return _read_only(open_x), _read_only(open_y)

    @property
    def open_x(self) -> np.ndarray:
        """Open east faces (both cells ocean)."""
        return self._open_faces[0]

    @property
    def open_y(self) -> np.ndarray:
        """Open north faces (both cells ocean; the last row is closed unless F-folded)."""
        return self._open_faces[1]

    @functools.cached_property
    def _slot_alpha(self) -> np.ndarray:
        return _read_only(self.topology.slot_alpha(self.alpha_x, self.alpha_y, self.mask))

    def slot_alpha(self) -> np.ndarray:
        """``(4, ny, nx)``: alpha of each cell's east, west, north, south face (0 if closed;
        read-only, computed once)."""
        return self._slot_alpha

    @functools.cached_property
    def basin_labels(self) -> np.ndarray:
        """Connected ocean regions (:meth:`Topology.basin_labels`; read-only, computed once)."""
        return _read_only(self.topology.basin_labels(self.mask))

    def replace(self, **changes: Any) -> Fields:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def grid_diffusivity(self) -> tuple[np.ndarray, np.ndarray]:
        """Face diffusivities in grid units, κ₁₁/e1² ≈ alpha_x/area (dimensionless).

        Uses the smaller of the two adjacent cell areas, so it bounds the local
        length scale in cells from above. Zero on closed faces.
        """
        area = np.where(self.mask, self.area, np.inf).ravel()
        nbr = self.topology.neighbours
        slots = self.slot_alpha()
        out = []
        for slot in (EAST, NORTH):
            other = area[np.maximum(nbr[slot], 0)].reshape(self.shape)
            smaller = np.minimum(area.reshape(self.shape), other)
            out.append(np.where(slots[slot] > 0, slots[slot] / smaller, 0.0))
        return out[0], out[1]


# Grid diffusivities alpha/area beyond this (a length scale of ~1e4 cells at M = 10) leave no
# digit in an implicit step: (W + K) is then K to round-off, whose kernel is the constants.
GRID_DIFFUSIVITY_MAX = 1e8


def _freeze(value: Any) -> Any:
    """``value`` with every NumPy array in it (also in tuples and dicts) made read-only."""
    if isinstance(value, np.ndarray):
        return _read_only(value)
    if isinstance(value, tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    return value


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _check_conditioning(slots: np.ndarray, area: np.ndarray, mask: np.ndarray) -> None:
    """Refuse diffusivities no solver can take: ``alpha/area`` (cells²) must be ≤
    ``GRID_DIFFUSIVITY_MAX`` (and finite: no overflow); ``slots``: ``Topology.slot_alpha``."""
    slots = slots.max(axis=0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        grid = np.where(mask, slots / np.where(mask, area, 1.0), 0.0)
    bad = ~(grid <= GRID_DIFFUSIVITY_MAX)
    if bad.any():
        j, i = np.argwhere(bad)[0]
        raise FieldsError(
            f"alpha/area is {grid[j, i]:.3g} cells² at j={j}, i={i} (alpha up to "
            f"{slots[j, i]:.3g} m², area {area[j, i]:.3g} m²): beyond "
            f"{GRID_DIFFUSIVITY_MAX:.0e} cells² (a length scale of ~1e4 cells) no solve keeps a "
            "digit; give alpha_x, alpha_y and area in m² on the same grid"
        )


def _check_fold_copies(topology: Topology, arrays: dict[str, np.ndarray], mask: np.ndarray):
    """Values a fold lists twice must agree: a T-fold cell and its copy (cell fields) and the
    two listings of a face on the fold (``alpha_x`` of a T fold, ``alpha_y`` of an F fold)."""
    if not topology.folded:
        return
    rx, ry = topology.repeated_faces
    copies = np.where(topology.duplicate, topology.representative.reshape(topology.shape), -1)
    for name, values in arrays.items():
        first = {"alpha_x": rx, "alpha_y": ry}.get(name, copies)
        where = (first >= 0) & (mask if name == "area" else True)
        j, i = np.nonzero(where)
        other = first[j, i]
        bad = ~np.isclose(values[j, i], np.ravel(values)[other], rtol=1e-6, atol=0.0)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            what = "face" if name.startswith("alpha") else "cell"
            one, copy = _number(values[j[k], i[k]]), _number(np.ravel(values)[other[k]])
            raise FieldsError(
                f"{name} breaks the {topology.north_fold}-pivot north fold: row j={j[k]} lists "
                f"one {what} at i={i[k]} and i={other[k] % topology.nx} with {one} and {copy}; "
                "values listed twice on the fold must agree (give NEMO's inner domain with the "
                "fold applied, as lbc_lnk leaves it)"
            )


# ---------------------------------------------------------------------------------------------
# NetCDF


def to_dataset(
    fields: Fields,
    gamma: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    variables: dict[str, tuple[np.ndarray, dict[str, Any]]] | None = None,
):
    """The CF-style xarray Dataset of a sample (fields, optional ``gamma``, attributes)."""
    import xarray as xr

    dims = ("y", "x")
    data_vars: dict[str, Any] = {
        "mask": (
            dims,
            fields.mask.astype(np.int8),
            {
                "long_name": "ocean mask (1 ocean, 0 land)",
                "flag_values": np.array([0, 1], dtype=np.int8),
                "flag_meanings": "land ocean",
                "location": "face",
            },
        ),
        "area": (
            dims,
            fields.area,
            {
                "long_name": "cell area e1t*e2t",
                "standard_name": "cell_area",
                "units": "m2",
                "location": "face",
            },
        ),
        "alpha_x": (
            dims,
            fields.alpha_x,
            {
                "long_name": "scaled diffusivity kappa11*e2u/e1u on the east face",
                "units": "m2",
                "location": "edge1",
                "comment": "alpha_x[j, i] lives on the face between cells (j, i) and (j, i+1)",
            },
        ),
        "alpha_y": (
            dims,
            fields.alpha_y,
            {
                "long_name": "scaled diffusivity kappa22*e1v/e2v on the north face",
                "units": "m2",
                "location": "edge2",
                "comment": "alpha_y[j, i] lives on the face between cells (j, i) and (j+1, i)",
            },
        ),
    }
    if gamma is not None:
        gamma = np.asarray(gamma, dtype=np.float64)
        if gamma.shape != fields.shape:
            raise FieldsError(f"gamma has shape {gamma.shape}, expected {fields.shape}")
        data_vars["gamma"] = (
            dims,
            np.where(fields.mask, gamma, np.nan),
            {
                "long_name": "normalization coefficient gamma = diag(L W^-1)^(-1/2)",
                "units": "m",
                "cell_measures": "area: area",
                "location": "face",
            },
        )
    for name, (values, var_attrs) in (variables or {}).items():
        if np.shape(values) != fields.shape:
            raise FieldsError(f"{name} has shape {np.shape(values)}, expected {fields.shape}")
        data_vars[name] = (dims, values, {"location": "face", **var_attrs})
    coords = {
        name: (dims, getattr(fields, name), COORDINATE_ATTRS[name])
        for name in ("lat", "lon")
        if getattr(fields, name) is not None
    }
    # result attributes come from this write's ``attrs`` only, never from the fields
    own = {k: v for k, v in fields.attrs.items() if not is_result_attr(k)}
    all_attrs = file_attrs(own, attrs or {}, fields.steps, fields.periodic_x, fields.north_fold)
    return xr.Dataset(data_vars, coords=coords, attrs=all_attrs)


COORDINATE_ATTRS = {
    "lat": {"units": "degrees_north", "standard_name": "latitude"},
    "lon": {"units": "degrees_east", "standard_name": "longitude"},
}


def file_attrs(
    own: dict[str, Any],
    result: dict[str, Any],
    steps: int | None,
    periodic_x: bool,
    north_fold: str,
) -> dict[str, Any]:
    """The global attributes of every file diffnorm writes: conventions, the fields' ``own``
    attributes, the writer's version, the ``result``'s attributes, then M (when known), the
    east–west wrap and the north fold (the fields' own values always win)."""
    from diffnorm import __version__

    out: dict[str, Any] = {"Conventions": "CF-1.10", **_netcdf_attrs(own)}
    out["diffnorm_version"] = __version__
    out.update(_netcdf_attrs(result))
    if steps is not None:
        out["steps"] = np.int32(steps)
    out["periodic_x"] = np.int32(int(periodic_x))
    out["north_fold"] = north_fold
    return out


def _netcdf_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """NetCDF attributes accept numbers, strings and 1-D arrays: render the rest as strings."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, bool | np.bool_):
            out[key] = np.int32(value)
        elif isinstance(value, str | int | float | np.integer | np.floating):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def write_fields(
    path: str | os.PathLike,
    fields: Fields,
    gamma: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    variables: dict[str, tuple[np.ndarray, dict[str, Any]]] | None = None,
) -> Path:
    """Write a sample atomically (temporary file in the same folder, then rename); ``variables``
    are extra per-cell arrays with their attributes (a method's error estimate, flags)."""
    ds = to_dataset(fields, gamma, attrs, variables)
    return atomic_to_netcdf(ds, path)


def check_output_path(path: str | os.PathLike, example: str = "output.nc") -> Path:
    """``path`` as a :class:`Path`, refused up front when no file can be written there: an
    existing folder (``IsADirectoryError``), or a parent that is a file (``NotADirectoryError``);
    ``example``: a file name the message suggests."""
    path = Path(path)
    if path.is_symlink():  # write where the link points, and keep the link
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise IsADirectoryError(
            f"output {path} is an existing folder; give a file name for the output (e.g. "
            f"{path / example})"
        )
    if path.exists() and not path.is_file():  # a device or a pipe: a rename would replace it
        raise FileExistsError(
            f"output {path} exists and is not a regular file; give a file name for the output"
        )
    check_output_folder(path.parent, f"output {path}")
    return path


def check_output_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse ``folder`` (``what`` names it in the message) when it cannot be made: the nearest
    existing one of it and its parents must be a folder."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(
                    f"{what}: {parent} is a file, not a folder; choose another folder for the "
                    "output"
                )
            return


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, example: str = "output.nc") -> Iterator[Path]:
    """A unique temporary file beside ``path`` (:func:`check_output_path` first) for the block to
    write, renamed onto ``path`` when the block succeeds and removed on any failure: a killed or
    failed writer never leaves a partial ``path`` or a stray temporary file, and two writers of
    the same ``path`` never share one."""
    path = check_output_path(path, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if path.is_file():  # a rewrite keeps the file's permissions
            shutil.copymode(path, tmp)
        else:  # mkstemp creates 0600: give the permissions the user's umask asks for
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_to_netcdf(ds, path: str | os.PathLike) -> Path:
    """``ds.to_netcdf(path)`` through :func:`atomic_output`."""
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars if ds[name].ndim}
    # coordinates are never missing: no _FillValue (CF readers would mask valid values)
    encoding.update({name: {"_FillValue": None} for name in ds.coords})
    with atomic_output(path) as tmp, _process_write_lock():
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return Path(path)


@contextlib.contextmanager
def _process_write_lock() -> Iterator[None]:
    """Where a Dask client is active (on every worker of ``generate``) xarray takes a
    cluster-wide lock, a round trip to the scheduler, for each attribute and variable it
    writes: 72 ms of a 64×64 window's 90 ms there (cProfile on a worker). Our datasets hold
    NumPy arrays and each file has one writer, so xarray's in-process lock is enough: it
    takes that when dask's scheduler is the synchronous one."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


def read_fields(path: str | os.PathLike) -> tuple[Fields, np.ndarray | None]:
    """Read a sample file: the fields and ``gamma`` (None when the file has none).

    ``Fields.attrs`` keeps the fields' own attributes (grid, parameters, provenance), not those
    of the file's γ (``method``, ``certified_tolerance``, ``option_*``, ``info_*``, …: see
    :func:`is_result_attr`); open the file with xarray to read those."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FieldsError(f"{path}: no such file; {FILE_LAYOUT_HINT}")
    try:
        ds = xr.open_dataset(path, engine="netcdf4", mask_and_scale=True)
    except Exception as exc:  # netCDF4 raises OSError, xarray ValueError: one message for both
        raise FieldsError(f"{path}: not a readable NetCDF file ({exc})") from exc
    with ds:
        return fields_from_dataset(ds, source=str(path))


def fields_from_dataset(ds, source: str = "dataset") -> tuple[Fields, np.ndarray | None]:
    """Fields (and gamma if present) from an xarray Dataset in the diffnorm layout."""
    missing = [name for name in FIELD_NAMES if name not in ds.variables]
    if missing:
        raise FieldsError(f"{source}: missing variable(s) {', '.join(missing)}; {FILE_LAYOUT_HINT}")
    for attr in ("steps", "periodic_x"):
        if attr not in ds.attrs:
            raise FieldsError(f"{source}: missing attribute {attr!r}; {FILE_LAYOUT_HINT}")
    for name, unit in FIELD_UNITS.items():
        if name in ds.variables:
            check_units(ds[name].attrs.get("units"), name, unit, source)
    arrays = {}
    for name in FIELD_NAMES + ("lat", "lon", "gamma"):
        if name in ds.variables:
            arrays[name] = _yx_array(ds[name], name, source)
    mask = arrays["mask"]
    if not np.isfinite(mask).all():
        j, i = np.argwhere(~np.isfinite(mask))[0]
        raise FieldsError(
            f"{source}: mask has {int((~np.isfinite(mask)).sum())} missing (NaN) value(s), first "
            f"at j={j}, i={i}; give every cell 0 (land) or 1 (ocean) — a _FillValue on land "
            "reads as NaN"
        )
    reserved = {"steps", "periodic_x", "north_fold", "Conventions"}
    attrs = {k: v for k, v in ds.attrs.items() if k not in reserved and not is_result_attr(k)}
    fields = Fields(
        mask=mask,
        area=arrays["area"],
        alpha_x=arrays["alpha_x"],
        alpha_y=arrays["alpha_y"],
        steps=_scalar(ds.attrs["steps"], "steps", source),
        periodic_x=_scalar(ds.attrs["periodic_x"], "periodic_x", source),
        north_fold=ds.attrs.get("north_fold", "none"),
        lat=arrays.get("lat"),
        lon=arrays.get("lon"),
        attrs=attrs,
    )
    return fields, arrays.get("gamma")


# the SI unit diffnorm reads each variable in (DESIGN §1): a file's ``units``, when it has one,
# must be a spelling of it; values in km², cm² or km read as m² or m would be silently wrong
FIELD_UNITS = {"area": "m2", "alpha_x": "m2", "alpha_y": "m2", "gamma": "m"}
_LENGTH_SPELLINGS = ("m", "meter", "meters", "metre", "metres")
_SPELLINGS = {
    "m": frozenset(_LENGTH_SPELLINGS),
    "m2": frozenset(f"{m}2" for m in _LENGTH_SPELLINGS),
    # κ is m² per diffusion step (DESIGN §1); tools that write it as a diffusivity say m2 s-1
    "kappa": frozenset(f"{m}2{per}" for m in _LENGTH_SPELLINGS for per in ("", "s-1", "/s")),
}
_SI_NAMES = {"m": "m", "m2": "m2", "kappa": "m2 (or m2 s-1)"}


def _normal_units(units: str) -> str:
    """``units`` in one spelling: lower case, no spaces, dots or exponent signs, ``square x``
    as ``x2`` (``m^2``, ``m**2``, ``m²``, ``square metres`` → ``m2``; ``m2 s^-1`` → ``m2s-1``)."""
    u = units.strip().lower().replace("²", "2").replace("**", "").replace("^", "")
    if u.startswith("square "):
        u = u[len("square ") :] + "2"
    return "".join(c for c in u if c not in " .·*")


def check_units(units: Any, name: str, expected: str, source: str) -> None:
    """Refuse a variable whose ``units`` attribute is not an SI spelling of ``expected``
    (``m``, ``m2``, or ``kappa``: m2 or m2 s-1); absent or empty units are taken as SI."""
    if units is None or not str(units).strip():
        return
    normal = _normal_units(str(units))
    if normal in _SPELLINGS[expected]:
        return
    si = target = _SI_NAMES[expected]
    hint = ""
    for prefix, scale in _PREFIXES.items():  # km2, cm2 s-1, km: say by how much
        rest = normal[len(prefix) :]
        if normal.startswith(prefix) and "m" + rest in _SPELLINGS[expected]:
            target = "m" + rest.replace("s-1", " s-1")
            hint = f" (multiply values in {units} by {scale ** (2 if rest[:1] == '2' else 1):g})"
    fix = (
        f"convert {name} to {target}{hint} and set its units attribute to match"
        if hint
        else f"if the values are in {si} already, set its units to {si.split()[0]!r}; "
        f"else convert {name} to {si}"
    )
    raise FieldsError(
        f"{source}: {name} has units {str(units)!r}, but diffnorm reads it in {si} (SI); {fix}"
    )


_PREFIXES = {"km": 1e3, "cm": 1e-2, "mm": 1e-3}


def _yx_array(var, name: str, source: str) -> np.ndarray:
    """A 2-D variable as a float64 ``(y, x)`` array (:func:`_yx_dims`)."""
    return np.asarray(_yx_dims(var, name, source).values, dtype=np.float64)


def _yx_dims(var, name: str, source: str):
    """A 2-D variable as ``(y, x)``, by dim names: ``(x, y)`` is transposed with a warning
    (solving it as stored would swap the axes and the roles of alpha_x and alpha_y); other
    names are refused, since which is the row cannot be told."""
    import warnings

    if var.ndim != 2:
        raise FieldsError(f"{source}: variable {name} has dims {var.dims}; expected 2-D (y, x)")
    if tuple(var.dims) == ("x", "y"):
        warnings.warn(
            f"{source}: {name} is stored (x, y); read as (y, x)", FieldsLayoutWarning, stacklevel=4
        )
        var = var.transpose("y", "x")
    elif tuple(var.dims) != ("y", "x"):
        raise FieldsError(
            f"{source}: variable {name} has dims {var.dims}; name them (y, x) (rows northward, "
            "columns eastward), or (x, y) to have them transposed"
        )
    return var


def _scalar(value: Any, name: str, source: str) -> Any:
    arr = np.asarray(value)
    if arr.size != 1:
        raise FieldsError(
            f"{source}: attribute {name} must be a single number, got {_plain(value)!r}"
        )
    item = arr.reshape(()).item()
    if isinstance(item, str):  # a text attribute (ncatted … c) holding a number: that number
        try:
            item = float(item)
        except ValueError:
            return item
    if isinstance(item, float) and item.is_integer():
        return int(item)
    return item
