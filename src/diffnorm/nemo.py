"""NEMO grid files, both ways: read ``mesh_mask.nc`` / ``domain_cfg.nc`` into diffnorm's inner
domain, and put γ back on the file's own layout.

Layouts (``Layout``):

- NEMO ≥ 4.2 writes the inner domain only, with the global attributes ``Iperio`` (east–west
  cyclic), ``NFold`` and ``NFtype`` (``T`` or ``F``): nothing is dropped.
- NEMO ≤ 4.0 writes the full domain ``jpiglo × jpjglo``: a cyclic grid (``jperio`` 1, 4, 6)
  carries two halo columns (column 1 copies ``jpiglo−1``, column ``jpiglo`` copies 2), and a
  folded one (``jperio`` 4: T pivot, 6: F pivot) a ghost row above the fold (``jpjglo``),
  filled by ``lbc_nfd``. ``jperio`` is read where the file has it (``domain_cfg.nc``); else
  the halo and the ghost row are detected from the values, as NEMO's rules leave them.

Dims are matched by name: variables stored ``(…, x, y)`` are transposed (with a note in the
grid's attributes), never solved transposed. An explicit ``periodic_x`` / ``north_fold``
overrides what the file says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffnorm.fields import Fields, FieldsError, check_units
from diffnorm.grid import GridMetrics
from diffnorm.topology import CELL, Topology, parse_north_fold

METRIC_VARIABLES = ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v")
# jperio of NEMO ≤ 4.0: (east–west cyclic, north fold)
JPERIO = {0: (False, "none"), 1: (True, "none"), 4: (True, "T"), 6: (True, "F")}
JPERIO_UNSUPPORTED = {
    2: "a symmetric (equatorial) south boundary",
    3: "a T-pivot fold without east-west cyclicity",
    5: "an F-pivot fold without east-west cyclicity",
    7: "a bi-periodic domain",
}


@dataclass(frozen=True)
class Layout:
    """Where diffnorm's inner ``(ny, nx)`` domain sits in a NEMO file's arrays."""

    version: str  # "4.2" (inner domain), "4.0" (halo and ghost row) or "plain"
    halo_columns: int  # dropped on each side (1 for NEMO ≤ 4.0 cyclic grids)
    ghost_rows: int  # dropped at the north (1 for NEMO ≤ 4.0 folded grids)
    periodic_x: bool
    north_fold: str

    def attrs(self) -> dict[str, Any]:
        return {
            "nemo_layout": self.version,
            "nemo_halo_columns": self.halo_columns,
            "nemo_ghost_rows": self.ghost_rows,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], topology: Topology) -> Layout:
        if "nemo_layout" not in attrs:
            raise FieldsError(
                "--nemo-layout needs a grid read from a NEMO file (its attributes nemo_layout, "
                "nemo_halo_columns, nemo_ghost_rows say where the halo was); this one has none"
            )
        return cls(
            str(attrs["nemo_layout"]),
            int(attrs.get("nemo_halo_columns", 0)),
            int(attrs.get("nemo_ghost_rows", 0)),
            topology.periodic_x,
            topology.north_fold,
        )

    def inner(self, a: np.ndarray) -> np.ndarray:
        """The inner domain of a file-layout array."""
        rows = slice(0, a.shape[0] - self.ghost_rows)
        cols = slice(self.halo_columns, a.shape[1] - self.halo_columns)
        return a[rows, cols]

    def restore(self, inner: np.ndarray, topology: Topology) -> np.ndarray:
        """A T-point field (γ) on the file's layout: the halo columns and the ghost row filled
        as NEMO's ``lbc_lnk`` fills them (cyclic copies; the fold's mirror rows)."""
        if self.halo_columns == 0 and self.ghost_rows == 0:
            return np.array(inner, dtype=np.float64)
        padded = topology.pad(np.asarray(inner, dtype=np.float64), (1, 1), np.nan, CELL)
        h = self.halo_columns
        rows = padded[1 : 1 + topology.ny + self.ghost_rows]
        return rows[:, 1 - h : rows.shape[1] - 1 + h]


def _yx(var: Any, name: str, source: str, notes: list[str]) -> np.ndarray:
    """A 2-D ``(y, x)`` surface slice of ``var`` by dim names: leading singleton, time or depth
    dims take their first index; ``(x, y)`` is transposed (and noted)."""
    dims = tuple(var.dims)
    if len(dims) < 2:
        raise FieldsError(f"{source}: {name} has dims {dims}; expected (..., y, x)")
    lower = [d.lower() for d in dims]
    if "x" in lower and "y" in lower:
        ix, iy = lower.index("x"), lower.index("y")
        data = np.asarray(var.values)
        lead = [k for k in range(len(dims)) if k not in (ix, iy)]
        data = np.moveaxis(data, (iy, ix), (-2, -1))[(0,) * len(lead)]
        if ix < iy:
            notes.append(name)
        return data.astype(np.float64)
    data = np.asarray(var.values)
    while data.ndim > 2:
        data = data[0]
    return data.astype(np.float64)


def _cyclic_halo(arrays: dict[str, np.ndarray]) -> bool:
    """NEMO ≤ 4.0's cyclic halo: column 0 copies nx−2 and column nx−1 copies 1."""
    return arrays["e1t"].shape[1] > 3 and all(
        np.array_equal(arrays[v][:, 0], arrays[v][:, -2])
        and np.array_equal(arrays[v][:, -1], arrays[v][:, 1])
        for v in ("mask", "e1t", "e2t")
    )


def _ghost_row_fold(arrays: dict[str, np.ndarray]) -> str:
    """The fold whose ghost row (``lbc_nfd``'s rule for T points) the last row is, or none.
    Rows constant along x (a closed rectangle) never count: they mirror onto themselves."""
    inner = {k: v[:, 1:-1] for k, v in arrays.items()}
    nx = inner["e1t"].shape[1]
    if inner["e1t"].shape[0] < 4 or nx % 2:
        return "none"
    for fold in ("T", "F"):
        topo = Topology(inner["e1t"].shape[0] - 1, nx, True, fold)
        ok = True
        varying = False
        for v in ("mask", "e1t", "e2t", "lat", "lon"):
            if v not in inner:
                continue
            body = inner[v][:-1]
            ghost = topo.pad(body, (1, 0), np.nan, CELL)[-1]
            ok &= np.allclose(ghost, inner[v][-1], rtol=1e-12, atol=0.0)
            varying |= np.ptp(body[-3:], axis=1).max() > 0
        if ok and varying:
            return fold
    return "none"


def mesh_mask_grid(
    path: str | Path,
    periodic_x: bool | None = None,
    drop_halo: bool | None = None,
    north_fold: str | None = None,
) -> GridMetrics:
    """A user's NEMO grid from ``mesh_mask.nc`` (``tmask``) or ``domain_cfg.nc``
    (``bottom_level``), with ``e1t, e2t, e1u, e2u, e1v, e2v``; see the module docstring.

    ``drop_halo=False`` keeps a detected cyclic halo on a closed grid (the columns are then
    extra cells next to their copies); ``periodic_x``/``north_fold`` override the file. What
    was dropped is recorded in the attributes (``nemo_layout``, ``nemo_halo_columns``,
    ``nemo_ghost_rows``) so that :func:`to_nemo_layout` can put γ back.
    """
    import xarray as xr

    path = Path(path)
    source = str(path)
    if not path.exists():
        raise FieldsError(f"{path}: no such NEMO mesh_mask or domain_cfg file")
    notes: list[str] = []
    with xr.open_dataset(path) as ds:
        if "tmask" in ds.variables:
            mask_name = "tmask"
        elif "bottom_level" in ds.variables:
            mask_name = "bottom_level"
        else:
            mask_name = None
        missing = [v for v in METRIC_VARIABLES if v not in ds.variables]
        if missing or mask_name is None:
            missing += [] if mask_name else ["tmask (mesh_mask.nc) or bottom_level (domain_cfg)"]
            raise FieldsError(
                f"{path}: missing variable(s) {', '.join(missing)}; a NEMO mesh_mask.nc or "
                f"domain_cfg.nc needs {', '.join(METRIC_VARIABLES)} and a mask"
            )
        for v in METRIC_VARIABLES:
            check_units(ds[v].attrs.get("units"), v, "m", source)
        arrays = {v: _yx(ds[v], v, source, notes) for v in METRIC_VARIABLES}
        arrays["mask"] = (_yx(ds[mask_name], mask_name, source, notes) > 0.5).astype(float)
        for la, lo in (("gphit", "glamt"), ("nav_lat", "nav_lon")):
            if la in ds.variables and lo in ds.variables:
                arrays["lat"] = _yx(ds[la], la, source, notes)
                arrays["lon"] = _yx(ds[lo], lo, source, notes)
                break
        attrs = dict(ds.attrs)
        jperio = int(ds["jperio"].values) if "jperio" in ds.variables else None
    layout = _layout(path, arrays, attrs, jperio, periodic_x, drop_halo, north_fold)
    inner = {k: layout.inner(v) for k, v in arrays.items()}
    extra = {"nemo_mask_from": mask_name, **layout.attrs()}
    extra["cyclic_halo"] = (
        "dropped" if layout.halo_columns else ("kept" if drop_halo is False else "none")
    )
    if notes:
        extra["transposed_from_x_y"] = ",".join(notes)
    if layout.north_fold != "none":
        extra["north_fold_source"] = "option" if north_fold is not None else "file"
    return GridMetrics(
        mask=inner["mask"] > 0.5,
        **{v: inner[v] for v in METRIC_VARIABLES},
        periodic_x=layout.periodic_x,
        name=f"mesh:{path.name}",
        lat=inner.get("lat"),
        lon=inner.get("lon"),
        attrs=extra,
        north_fold=layout.north_fold,
    )


def _layout(
    path: Path,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
    jperio: int | None,
    periodic_x: bool | None,
    drop_halo: bool | None,
    north_fold: str | None,
) -> Layout:
    fold_option = None if north_fold is None else parse_north_fold(north_fold)
    if "Iperio" in attrs or "NFold" in attrs:  # NEMO ≥ 4.2: the inner domain
        periodic = bool(int(attrs.get("Iperio", 0)))
        fold = parse_north_fold(attrs.get("NFtype", "T")) if int(attrs.get("NFold", 0)) else "none"
        return Layout(
            "4.2",
            0,
            0,
            periodic if periodic_x is None else bool(periodic_x),
            fold if fold_option is None else fold_option,
        )
    cyclic = _cyclic_halo(arrays)
    if jperio is not None:
        if jperio in JPERIO_UNSUPPORTED:
            raise FieldsError(
                f"{path}: jperio={jperio} ({JPERIO_UNSUPPORTED[jperio]}) is not supported; "
                "diffnorm handles closed (0), cyclic (1) and cyclic with a T (4) or F (6) "
                "north fold"
            )
        if jperio not in JPERIO:
            raise FieldsError(f"{path}: unknown jperio={jperio}; expected 0, 1, 4 or 6")
        periodic, fold = JPERIO[jperio]
        if periodic and not cyclic:
            raise FieldsError(
                f"{path}: jperio={jperio} says east-west cyclic, but columns 0 and nx-1 are "
                "not copies of nx-2 and 1 as NEMO <= 4.0 writes them; pass periodic_x and "
                "drop_halo explicitly"
            )
    else:
        periodic = cyclic
        fold = _ghost_row_fold(arrays) if cyclic else "none"
    if fold_option is not None:
        fold = fold_option
    drop = cyclic if drop_halo is None else bool(drop_halo)
    if drop and not cyclic:
        raise FieldsError(
            f"{path}: drop_halo=True but columns 0 and nx-1 are not copies of nx-2 and 1 "
            "(no cyclic halo); leave drop_halo unset"
        )
    if not drop:
        if cyclic and periodic_x:
            raise FieldsError(
                f"{path}: periodic_x=True with the cyclic halo kept would make the two halo "
                "columns extra ocean cells next to their copies; drop the halo (the default) "
                "or keep it on a closed grid (periodic_x=False)"
            )
        if cyclic and fold != "none":
            raise FieldsError(
                f"{path}: a {fold}-pivot north fold needs the cyclic halo dropped; leave "
                "drop_halo unset"
            )
        periodic = bool(periodic_x) if periodic_x is not None else (periodic and not cyclic)
        return Layout("plain", 0, 0, periodic, fold)
    periodic = True if periodic_x is None else bool(periodic_x)
    if fold == "none":
        return Layout("4.0", 1, 0, periodic, fold)
    if jperio not in (4, 6) and _ghost_row_fold(arrays) == "none":
        raise FieldsError(
            f"{path}: north_fold={fold}, but the last row is not the ghost row NEMO <= 4.0 "
            "writes above a fold (its mirror of the rows below); give a file with its ghost "
            "row, or NEMO >= 4.2's inner domain with the attributes Iperio, NFold, NFtype"
        )
    return Layout("4.0", 1, 1, periodic, fold)


def to_nemo_layout(gamma: np.ndarray, topology: Topology, attrs: dict[str, Any]) -> np.ndarray:
    """γ (inner domain) on the layout of the NEMO file its grid was read from."""
    return Layout.from_attrs(attrs, topology).restore(gamma, topology)


PARAMETER_NAMES = {"kappa": ("kappa11", "kappa22"), "length_scales": ("D1", "D2")}


def read_parameters(path: str | Path, metrics: GridMetrics, kind: str) -> tuple[np.ndarray, ...]:
    """The user's diffusion parameters at T points from a NetCDF file: ``kappa11, kappa22``
    (m², ``kind="kappa"``) or Daley length scales ``D1, D2`` (m, ``kind="length_scales"``),
    on the grid's inner domain or on the NEMO file's own layout (cut like the mesh)."""
    import xarray as xr

    names = PARAMETER_NAMES[kind]
    path = Path(path)
    if not path.exists():
        raise FieldsError(f"{path}: no such parameter file (it needs {names[0]}, {names[1]})")
    notes: list[str] = []
    with xr.open_dataset(path) as ds:
        lower = {v.lower(): v for v in ds.variables}
        missing = [n for n in names if n.lower() not in lower]
        if missing:
            raise FieldsError(
                f"{path}: missing variable(s) {', '.join(missing)}; --{kind.replace('_', '-')} "
                f"needs {names[0]} and {names[1]} at T points, dims (y, x), in "
                f"{'m2' if kind == 'kappa' else 'm'}"
            )
        unit = "kappa" if kind == "kappa" else "m"
        for n in names:
            check_units(ds[lower[n.lower()]].attrs.get("units"), n, unit, str(path))
        values = [_yx(ds[lower[n.lower()]], n, str(path), notes) for n in names]
    out = []
    layout = None
    if "nemo_layout" in metrics.attrs:
        layout = Layout.from_attrs(metrics.attrs, metrics.topology)
    for name, v in zip(names, values, strict=True):
        if v.shape != metrics.shape and layout is not None:
            cut = layout.inner(v)
            v = cut if cut.shape == metrics.shape else v
        if v.shape != metrics.shape:
            raise FieldsError(
                f"{path}: {name} has shape {v.shape}, but the grid's inner domain is "
                f"{metrics.shape}; give it on the grid (or on the mesh file's own layout)"
            )
        bad = metrics.mask & ~(np.isfinite(v) & (v > 0))
        if bad.any():
            j, i = np.argwhere(bad)[0]
            raise FieldsError(
                f"{path}: {name} must be finite and > 0 on ocean cells; {int(bad.sum())} are "
                f"not (first at j={j}, i={i}, value {float(v[j, i]):g})"
            )
        out.append(v)
    return tuple(out)


def write_nemo_gamma(
    path: str | Path,
    fields: Fields,
    gamma: np.ndarray,
    attrs: dict[str, Any] | None = None,
    variables: dict[str, tuple[np.ndarray, dict[str, Any]]] | None = None,
) -> Path:
    """γ on the NEMO file's own layout (``to_nemo_layout``: the layout ``fields`` were read
    with), variable ``gamma`` on dims ``(y, x)`` (NaN on land) with ``lat``/``lon`` and the
    result's per-cell ``variables`` (:meth:`GammaResult.variables`: error estimate, flags)
    laid out alike, written atomically: what a NEMO-side reader expects. The global
    attributes are those of :func:`~diffnorm.fields.write_fields`'s output (the fields' own,
    the version, M, the wrap, the fold, and the result's ``attrs``)."""
    import xarray as xr

    from diffnorm.fields import COORDINATE_ATTRS, atomic_to_netcdf, file_attrs, is_result_attr

    topology = fields.topology
    layout = Layout.from_attrs(fields.attrs, topology)

    def laid_out(name: str, values: np.ndarray) -> np.ndarray:
        """``values`` (the fields' grid) on the file's layout; land NaN, or 0 for integers."""
        values = np.asarray(values)
        if values.shape != fields.shape:
            raise FieldsError(f"{name} has shape {values.shape}, expected {fields.shape}")
        if np.issubdtype(values.dtype, np.integer):
            out = layout.restore(np.where(fields.mask, values, 0).astype(np.float64), topology)
            return np.nan_to_num(out, nan=0.0).astype(values.dtype)
        return layout.restore(np.where(fields.mask, values, np.nan), topology)

    coords = {
        name: (("y", "x"), layout.restore(getattr(fields, name), topology), COORDINATE_ATTRS[name])
        for name in ("lat", "lon")
        if getattr(fields, name) is not None
    }
    data_vars = {
        "gamma": (
            ("y", "x"),
            laid_out("gamma", gamma),
            {
                "long_name": "normalization coefficient gamma = diag(L W^-1)^(-1/2)",
                "units": "m",
                "comment": "on the NEMO file's own layout: halo columns and ghost row "
                "filled as lbc_lnk fills T points",
            },
        )
    }
    for name, (values, var_attrs) in (variables or {}).items():
        data_vars[name] = (("y", "x"), laid_out(name, values), var_attrs)
    own = {k: v for k, v in fields.attrs.items() if not is_result_attr(k)}
    ds = xr.Dataset(
        data_vars,
        coords=coords,
        attrs=file_attrs(own, attrs or {}, fields.steps, fields.periodic_x, fields.north_fold),
    )
    return atomic_to_netcdf(ds, path)
