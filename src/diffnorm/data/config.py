"""The dataset configuration (YAML): grid, M, parameter distribution, splits, exact method."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPLITS: tuple[str, ...] = ("train", "val", "test")
GRID_NAMES = ("toy", "orca1", "latlon", "mesh", "box", "windows")


class ConfigError(ValueError):
    """A dataset configuration that cannot be used; the message names the key."""


@dataclass(frozen=True)
class GridSpec:
    name: str = "latlon"
    resolution: float | None = None  # latlon: degrees
    polar_cap: float | None = None  # latlon: land poleward of ±this latitude
    mesh: str | None = None  # mesh: path to a NEMO mesh_mask.nc
    ny: int | None = None  # box, windows
    nx: int | None = None  # box, windows
    periodic_x: bool = True  # box
    drop_halo: bool | None = None  # mesh: None drops a detected cyclic halo; False keeps it
    north_fold: str | None = None  # mesh: none, T or F overriding what the file says


@dataclass(frozen=True)
class ParameterSpec:
    """Smooth random length scales in grid cells (see ``random_cell_length_scales``)."""

    d_min: float = 1.5
    d_max: float = 6.0
    anisotropy: tuple[float, float] = (1 / 3, 3.0)
    correlation_cells: float = 10.0
    lat_amplitude: float = 0.0
    sharp_fraction: float = 0.0  # share of samples with a sharp step in D (data.windows)
    metric_std: float = 0.0  # windows: log-std of smooth random cell sizes (stretched grids)
    polar_fraction: float = 0.0  # windows: share drawn as the top of a folded global grid
    metre_fraction: float = 0.0  # share whose length scale is set in metres, not in cells
    periodic_fraction: float = 0.0  # windows on uniform grids: share made east–west periodic


@dataclass(frozen=True)
class DataConfig:
    grid: GridSpec = field(default_factory=GridSpec)
    # M, or a list of M each sample draws one of (uniformly): a network for several M
    steps: int | tuple[int, ...] = 10
    parameters: ParameterSpec = field(default_factory=ParameterSpec)
    splits: dict[str, int] = field(default_factory=lambda: {"train": 40, "val": 8, "test": 8})
    method: str = "selinv"
    tolerance: float = 1e-6
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("drop_halo", "north_fold"):
            if d["grid"][name] is None:
                del d["grid"][name]  # the default: digests of older configs stay valid
        for name in (
            "sharp_fraction",
            "metric_std",
            "polar_fraction",
            "metre_fraction",
            "periodic_fraction",
        ):
            if d["parameters"][name] == 0.0:
                del d["parameters"][name]  # likewise
        d["parameters"]["anisotropy"] = list(d["parameters"]["anisotropy"])
        if not isinstance(self.steps, int):
            d["steps"] = list(self.steps)
        return d

    @property
    def step_choices(self) -> tuple[int, ...]:
        """The M a sample can have (one value unless ``steps`` is a list)."""
        return (self.steps,) if isinstance(self.steps, int) else tuple(self.steps)

    def digest(self) -> str:
        """Hash of everything that determines the samples (provenance and resume check).

        Split sizes are left out: sample ``k`` of a split depends only on the seed, the split
        and ``k``, so a dataset can grow (or shrink) and keep every sample it has."""
        d = self.to_dict()
        d.pop("splits")
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def sample_count(self) -> int:
        return sum(self.splits.values())


def _section(raw: dict, key: str, cls: type, where: str):
    value = raw.get(key, {}) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key} must be a mapping, got {value!r}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(
            f"{where}{key}: unknown key(s) {', '.join(unknown)}; known: {sorted(known)}"
        )
    return cls(**value)


def config_from_dict(raw: dict[str, Any], where: str = "") -> DataConfig:
    """Validated config from a mapping (a parsed YAML file)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}the config must be a mapping, got {type(raw).__name__}")
    known = set(DataConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}unknown key(s) {', '.join(unknown)}; known: {sorted(known)}")
    grid = _section(raw, "grid", GridSpec, where)
    params = _section(raw, "parameters", ParameterSpec, where)
    params = ParameterSpec(**{**asdict(params), "anisotropy": tuple(params.anisotropy)})
    splits = raw.get("splits", {"train": 40, "val": 8, "test": 8})
    if not isinstance(splits, dict) or set(splits) - set(SPLITS):
        raise ConfigError(f"{where}splits must map some of {SPLITS} to counts, got {splits!r}")
    for name, count in splits.items():
        if not isinstance(count, int) or count < 0:
            raise ConfigError(f"{where}splits.{name} must be a count >= 0, got {count!r}")
    steps = raw.get("steps", 10)
    if isinstance(steps, list | tuple):
        steps = tuple(steps) if len(steps) != 1 else steps[0]
    cfg = DataConfig(
        grid=grid,
        steps=steps,
        parameters=params,
        splits={s: int(splits[s]) for s in SPLITS if s in splits},
        method=raw.get("method", "selinv"),
        tolerance=float(raw.get("tolerance", 1e-6)),
        seed=raw.get("seed", 0),
    )
    _check(cfg, where)
    return cfg


def _check(cfg: DataConfig, where: str) -> None:
    g, p = cfg.grid, cfg.parameters
    if g.name not in GRID_NAMES:
        raise ConfigError(f"{where}grid.name must be one of {GRID_NAMES}, got {g.name!r}")
    if g.north_fold is not None:
        if g.name != "mesh":
            raise ConfigError(f"{where}grid.north_fold goes with grid 'mesh' (others know theirs)")
        from diffnorm.topology import TopologyError, parse_north_fold

        try:
            parse_north_fold(g.north_fold)
        except TopologyError as exc:
            raise ConfigError(f"{where}grid.{exc}") from None
    latlon_only = [k for k in ("resolution", "polar_cap") if getattr(g, k) is not None]
    if latlon_only and g.name != "latlon":
        raise ConfigError(
            f"{where}grid.{latlon_only[0]} goes with grid 'latlon', not {g.name!r}; remove it"
        )
    if g.name == "mesh" and not g.mesh:
        raise ConfigError(f"{where}grid.mesh must give the path of a mesh_mask.nc for grid 'mesh'")
    if g.name == "box" and not (g.ny and g.nx and g.ny > 1 and g.nx > 1):
        raise ConfigError(f"{where}grid.ny and grid.nx (> 1) are needed for grid 'box'")
    if g.name == "windows" and not (g.ny and g.nx and g.ny >= 8 and g.nx >= 8):
        raise ConfigError(f"{where}grid.ny and grid.nx (>= 8) are needed for grid 'windows'")
    if p.metric_std < 0 or (p.metric_std and g.name != "windows"):
        raise ConfigError(
            f"{where}parameters.metric_std must be >= 0 and goes with grid 'windows', got "
            f"{p.metric_std} on {g.name!r}"
        )
    if not 0.0 <= p.polar_fraction <= 1.0 or (p.polar_fraction and g.name != "windows"):
        raise ConfigError(
            f"{where}parameters.polar_fraction must be in [0, 1] and goes with grid 'windows', "
            f"got {p.polar_fraction} on {g.name!r}"
        )
    if not 0.0 <= p.periodic_fraction <= 1.0 or (
        p.periodic_fraction and (g.name != "windows" or p.metric_std)
    ):
        raise ConfigError(
            f"{where}parameters.periodic_fraction must be in [0, 1] and goes with grid "
            f"'windows' on uniform cells (metric_std 0), got {p.periodic_fraction} on "
            f"{g.name!r} with metric_std {p.metric_std}"
        )
    if not 0.0 <= p.metre_fraction <= 1.0:
        raise ConfigError(
            f"{where}parameters.metre_fraction must be in [0, 1], got {p.metre_fraction}"
        )
    if not 0.0 <= p.sharp_fraction <= 1.0:
        raise ConfigError(
            f"{where}parameters.sharp_fraction must be in [0, 1], got {p.sharp_fraction}"
        )
    choices = cfg.steps if isinstance(cfg.steps, tuple) else (cfg.steps,)
    bad = [m for m in choices if isinstance(m, bool) or not isinstance(m, int) or m < 4 or m % 2]
    if bad or not choices or len(set(choices)) != len(choices):
        raise ConfigError(
            f"{where}steps must be an even integer >= 4, or a list of distinct ones (each "
            f"sample draws one), got {cfg.steps!r}"
        )
    if not 0 < p.d_min <= p.d_max:
        raise ConfigError(f"{where}parameters: need 0 < d_min <= d_max, got {p.d_min}, {p.d_max}")
    if len(p.anisotropy) != 2 or not 0 < p.anisotropy[0] <= p.anisotropy[1]:
        raise ConfigError(f"{where}parameters.anisotropy must be [low, high], got {p.anisotropy}")
    if cfg.method not in ("selinv", "probing", "brute"):
        raise ConfigError(
            f"{where}method must be an exact one (selinv, probing or brute), got {cfg.method!r}"
        )
    if not 0 < cfg.tolerance < 1:
        raise ConfigError(f"{where}tolerance must be in (0, 1), got {cfg.tolerance}")
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"{where}seed must be an integer >= 0, got {cfg.seed!r}")
    if cfg.sample_count() == 0:
        raise ConfigError(f"{where}splits ask for no sample at all")


def load_config(path: str | Path) -> DataConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return config_from_dict(raw or {}, where=f"{path}: ")
