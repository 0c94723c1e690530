"""Grids (metrics and masks) and their diffusion fields.

NEMO conventions: ``e1`` is the zonal (x) length of a cell, ``e2`` the meridional (y) length;
``u`` points sit on the east face of cell ``(j, i)`` and ``v`` points on its north face. From
diffusivities ``κ₁₁, κ₂₂`` at cell centres the face values are the mean of the two adjacent
cells and

    alpha_x = κ₁₁ᵘ · e2u / e1u,    alpha_y = κ₂₂ᵛ · e1v / e2v,    area = e1t · e2t.

A Daley length scale ``D`` and ``M`` steps give ``κ = D² / (2M − 4)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffnorm.coast import land_mask, remove_small_basins
from diffnorm.fields import Fields, FieldsError, check_steps
from diffnorm.topology import EAST, NORTH, Topology, TopologyError

EARTH_RADIUS = 6378.137e3  # m, as in the seed study
BUILT_IN_GRIDS = ("toy", "orca1", "latlon")


@dataclass
class GridMetrics:
    """A grid's mask and NEMO-style metrics (metres), all ``(ny, nx)``."""

    mask: np.ndarray
    e1t: np.ndarray
    e2t: np.ndarray
    e1u: np.ndarray
    e2u: np.ndarray
    e1v: np.ndarray
    e2v: np.ndarray
    periodic_x: bool
    name: str
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    north_fold: str = "none"

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        shape = self.mask.shape
        try:
            self.topology = Topology(shape[0], shape[1], self.periodic_x, self.north_fold)
        except TopologyError as exc:
            raise FieldsError(str(exc)) from exc
        self.north_fold = self.topology.north_fold
        open_x, open_y = self.topology.open_faces(self.mask)
        where = {"e1t": self.mask, "e2t": self.mask, "e1u": open_x, "e2u": open_x}
        where.update({"e1v": open_y, "e2v": open_y})
        for name in ("e1t", "e2t", "e1u", "e2u", "e1v", "e2v"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise FieldsError(f"{name} has shape {value.shape}, but the mask has {shape}")
            bad = where[name] & ~(np.isfinite(value) & (value > 0))
            if bad.any():
                j, i = np.argwhere(bad)[0]
                place = "ocean cell" if name.endswith("t") else "open face"
                raise FieldsError(
                    f"{name}: {int(bad.sum())} {place}(s) have a zero, negative or missing "
                    f"length (first at j={j}, i={i}, value {float(value[j, i]):g}); metrics must "
                    "be > 0 m wherever the mask has ocean (fix the mesh, or mask the cell as land)"
                )
            setattr(self, name, value)

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]

    @property
    def area(self) -> np.ndarray:
        return self.e1t * self.e2t


def kappa_from_length_scale(length: np.ndarray | float, steps: int) -> np.ndarray | float:
    """``κ = D² / (2M − 4)`` (m²) for a Daley length scale ``D`` (m)."""
    return np.square(length) / (2 * steps - 4)


def length_scale_from_kappa(kappa: np.ndarray | float, steps: int) -> np.ndarray | float:
    """``D = √(κ (2M − 4))``."""
    return np.sqrt(np.asarray(kappa) * (2 * steps - 4))


def _face_mean(values: np.ndarray, topology: Topology, slot: int) -> np.ndarray:
    """Mean of the two cells of each cell's east or north face (the cell's own value where
    the face leads off the grid)."""
    nbr = topology.neighbours[slot].reshape(topology.shape)
    flat = values.ravel()
    return 0.5 * (values + np.where(nbr >= 0, flat[np.maximum(nbr, 0)], values))


def on_grid(value: np.ndarray | float, name: str, shape: tuple[int, int]) -> np.ndarray:
    """``value`` (a number or an array) as a float array of the grid's ``shape``."""
    value = np.asarray(value, dtype=np.float64)
    try:
        return np.broadcast_to(value, shape)
    except ValueError:
        raise FieldsError(
            f"{name} has shape {value.shape}; give one number or an array of the grid's shape "
            f"{shape}"
        ) from None


def fields_from_metrics(
    metrics: GridMetrics,
    kappa11: np.ndarray | float,
    kappa22: np.ndarray | float,
    steps: int,
    attrs: dict[str, Any] | None = None,
) -> Fields:
    """Fields from cell-centre diffusivities ``κ₁₁`` (along x) and ``κ₂₂`` (along y), m²."""
    shape = metrics.shape
    topo = metrics.topology
    steps = check_steps(steps)
    # a T-fold copy takes its cell's value, so that the fold's two listings agree
    copy_of = topo.representative
    k11 = on_grid(kappa11, "kappa11", shape).ravel()[copy_of]
    k22 = on_grid(kappa22, "kappa22", shape).ravel()[copy_of]
    k11, k22 = k11.reshape(shape), k22.reshape(shape)
    for name, k in (("kappa11", k11), ("kappa22", k22)):
        bad = metrics.mask & ~(np.isfinite(k) & (k > 0))
        if bad.any():
            raise FieldsError(f"{name} must be finite and > 0 on ocean cells ({bad.sum()} are not)")
    k11u = _face_mean(np.where(metrics.mask, k11, 0.0), topo, EAST)
    k22v = _face_mean(np.where(metrics.mask, k22, 0.0), topo, NORTH)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha_x = k11u * metrics.e2u / metrics.e1u
        alpha_y = k22v * metrics.e1v / metrics.e2v
    all_attrs = {"grid": metrics.name, **metrics.attrs, **(attrs or {})}
    fields = Fields(
        mask=metrics.mask.astype(np.int8),
        area=metrics.area,
        alpha_x=np.nan_to_num(alpha_x),
        alpha_y=np.nan_to_num(alpha_y),
        steps=steps,
        periodic_x=metrics.periodic_x,
        lat=metrics.lat,
        lon=metrics.lon,
        attrs=all_attrs,
        north_fold=metrics.north_fold,
    )
    return fields


def fields_from_length_scales(
    metrics: GridMetrics, d1: np.ndarray | float, d2: np.ndarray | float, steps: int
) -> Fields:
    """Fields from Daley length scales ``D₁`` (along x) and ``D₂`` (along y) in metres."""
    steps = check_steps(steps)
    for name, d in (("D1", d1), ("D2", d2)):
        d = on_grid(d, name, metrics.shape)
        bad = metrics.mask & ~(np.isfinite(d) & (d > 0))
        if bad.any():
            raise FieldsError(
                f"length scale {name} must be finite and > 0 on ocean cells ({bad.sum()} are not)"
            )
    return fields_from_metrics(
        metrics, kappa_from_length_scale(d1, steps), kappa_from_length_scale(d2, steps), steps
    )


def fields_from_cell_length_scales(
    metrics: GridMetrics, d1: np.ndarray | float, d2: np.ndarray | float, steps: int
) -> Fields:
    """Fields from length scales in grid cells: ``D₁ = d₁·e1t``, ``D₂ = d₂·e2t``.

    In grid units the diffusivity is then ``d²/(2M − 4)`` whatever the cell size.
    """
    d1, d2 = on_grid(d1, "d1", metrics.shape), on_grid(d2, "d2", metrics.shape)
    return fields_from_length_scales(metrics, d1 * metrics.e1t, d2 * metrics.e2t, steps)


# ---------------------------------------------------------------------------------------------
# spherical grids


def spherical_grid(
    lat_edges: np.ndarray,
    resolution_lon: float,
    name: str,
    polar_cap: float | None = None,
    min_basin: int = 4,
    north_fold: str = "none",
) -> GridMetrics:
    """A grid of ``360/Δλ`` columns and rows between ``lat_edges`` (degrees), east–west
    periodic, with real coastlines. Cell centres sit half-way between edges."""
    lat_edges = np.asarray(lat_edges, dtype=np.float64)
    nx = int(round(360.0 / resolution_lon))
    if not math.isclose(nx * resolution_lon, 360.0):
        raise ValueError(f"resolution {resolution_lon}° must divide 360°")
    rows = latitude_rows(lat_edges, resolution_lon, nx)
    lat2 = rows["lat"]
    lon_c = -180.0 + resolution_lon * (np.arange(nx) + 0.5)
    lon2 = np.broadcast_to(lon_c[None, :], lat2.shape).copy()
    ny = lat2.shape[0]
    land = land_mask(
        lat2,
        lon2,
        np.broadcast_to(np.diff(lat_edges)[:, None], (ny, nx)),
        np.full((ny, nx), resolution_lon),
    )
    ocean = ~land
    if polar_cap is not None:
        ocean &= np.abs(lat2) < polar_cap
    ocean = remove_small_basins(ocean, min_basin, Topology(ny, nx, True, north_fold))
    return GridMetrics(
        mask=ocean,
        **{k: v for k, v in rows.items() if k != "lat"},
        periodic_x=True,
        name=name,
        lat=lat2,
        lon=lon2,
        north_fold=north_fold,
        attrs={"resolution_lon_deg": resolution_lon},
    )


def latitude_rows(lat_edges: np.ndarray, resolution_lon: float, nx: int) -> dict[str, np.ndarray]:
    """The metrics of ``nx`` columns of Δλ (degrees) between the rows' ``lat_edges``: ``e1 =
    R cos φ Δλ`` (at the centres, and at the northern edges for v points), ``e2 = R Δφ``, v
    points' ``e2`` the distance between centres; u points like t points; and ``lat``."""
    lat_edges = np.asarray(lat_edges, dtype=np.float64)
    dlam = math.radians(resolution_lon)
    lat_c = 0.5 * (lat_edges[1:] + lat_edges[:-1])
    dphi = np.radians(np.diff(lat_edges))
    ny = lat_c.size
    lat2 = np.broadcast_to(lat_c[:, None], (ny, nx)).copy()
    e1t = EARTH_RADIUS * np.cos(np.radians(lat2)) * dlam
    e2t = np.broadcast_to((EARTH_RADIUS * dphi)[:, None], (ny, nx)).copy()
    e1v = np.broadcast_to(
        (EARTH_RADIUS * np.cos(np.radians(lat_edges[1:])) * dlam)[:, None], (ny, nx)
    )
    dist_v = np.append(np.diff(lat_c), np.diff(lat_c)[-1:] if ny > 1 else dphi[-1:])
    e2v = np.broadcast_to((EARTH_RADIUS * np.radians(dist_v))[:, None], (ny, nx))
    return {
        "e1t": e1t,
        "e2t": e2t,
        "e1u": e1t,
        "e2u": e2t,
        "e1v": np.maximum(e1v, 1e-3 * e1t.max()),
        "e2v": e2v,
        "lat": lat2,
    }


def latlon_grid(
    resolution: float = 1.0,
    lat_min: float = -90.0,
    lat_max: float = 90.0,
    polar_cap: float | None = 80.0,
) -> GridMetrics:
    """Regular latitude–longitude grid; cell area ``R² cosφ Δφ Δλ`` (R = 6378.137 km).

    Land poleward of ±``polar_cap`` (default 80°): the cells that meet at a pole are
    degenerate (zero-length faces); ``polar_cap=None`` keeps them.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0 degrees, got {resolution}")
    ny = int(round((lat_max - lat_min) / resolution))
    edges = lat_min + resolution * np.arange(ny + 1)
    return spherical_grid(edges, resolution, f"latlon{resolution:g}", polar_cap)


def toy_grid() -> GridMetrics:
    """The seed study's toy grid: 1°, 180×360, land poleward of ±70° plus real coastlines."""
    metrics = latlon_grid(1.0, polar_cap=70.0)
    metrics.name = "toy"
    return metrics


def orca1_latitudes(rows: int = 292, south: float = -78.0, north: float = 89.5) -> np.ndarray:
    """Row edges of an ORCA1-like grid: Mercator-like ``Δφ ∝ cosφ`` at low and middle
    latitudes, refined to about ⅓° at the equator, no finer than a quarter of the zonal
    spacing at high latitudes; scaled so that ``rows`` rows span ``[south, north]``."""

    def spacing(phi: float) -> float:
        refine = 1.0 - (2.0 / 3.0) * math.exp(-((phi / 10.0) ** 2))
        return max(math.cos(math.radians(phi)) * refine, 0.25)

    def march(scale: float) -> np.ndarray:
        edges = [south]
        for _ in range(rows):
            phi = edges[-1]
            mid = phi + 0.5 * scale * spacing(phi)
            edges.append(phi + scale * spacing(mid))
        return np.array(edges)

    lo, hi = 0.1, 3.0
    for _ in range(80):
        scale = 0.5 * (lo + hi)
        if march(scale)[-1] > north:
            hi = scale
        else:
            lo = scale
    edges = march(0.5 * (lo + hi))
    edges[-1] = north
    return edges


def orca1_like_grid() -> GridMetrics:
    """ORCA1-like 292×360 global grid: 1° in longitude, refined rows near the equator,
    east–west periodic, real coastlines, and ORCA1's F-pivot north fold: the last row's
    north faces join column ``i`` to ``nx−1−i`` (on this latitude–longitude grid the pairing
    is topological, as on ORCA1, though not geometric)."""
    metrics = spherical_grid(orca1_latitudes(), 1.0, "orca1", north_fold="F")
    return metrics


def box_grid(
    ny: int,
    nx: int,
    dx: float = 1.0e4,
    dy: float = 1.0e4,
    periodic_x: bool = False,
    mask: np.ndarray | None = None,
) -> GridMetrics:
    """A uniform Cartesian grid (no coastline package): for tests and idealized studies."""
    if min(ny, nx) < 1:
        raise ValueError(f"box_grid needs ny, nx >= 1 cells, got ny={ny}, nx={nx}")
    full = np.ones((ny, nx))
    return GridMetrics(
        mask=np.ones((ny, nx), dtype=bool) if mask is None else mask,
        e1t=dx * full,
        e2t=dy * full,
        e1u=dx * full,
        e2u=dy * full,
        e1v=dx * full,
        e2v=dy * full,
        periodic_x=periodic_x,
        name=f"box{ny}x{nx}",
    )


def built_in_grid(name: str, **kw: Any) -> GridMetrics:
    """``toy``, ``orca1`` or ``latlon`` (keywords ``resolution``, ``polar_cap``)."""
    given = sorted(k for k, v in kw.items() if v is not None)
    if name in ("toy", "orca1") and given:
        raise ValueError(
            f"grid {name!r} is fixed; option(s) {', '.join(given)} go with grid 'latlon' only"
        )
    if name == "toy":
        return toy_grid()
    if name == "orca1":
        return orca1_like_grid()
    if name == "latlon":
        kw = {k: v for k, v in kw.items() if v is not None}
        return latlon_grid(**kw)
    raise ValueError(f"unknown grid {name!r}; built-in grids are {', '.join(BUILT_IN_GRIDS)}")
