"""Real coastlines from the ``global-land-mask`` package, computed once per grid and cached.

Importing that package loads a global 1-km mask (about a gigabyte in memory at peak), so it
is imported lazily, only when a mask is not in the in-memory or on-disk cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from diffnorm.fields import atomic_output
from diffnorm.topology import Topology

_MEMORY: dict[str, np.ndarray] = {}


def cache_dir() -> Path:
    """``$DIFFNORM_CACHE``, else ``$XDG_CACHE_HOME/diffnorm``, else ``~/.cache/diffnorm``."""
    if os.environ.get("DIFFNORM_CACHE"):
        return Path(os.environ["DIFFNORM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "diffnorm"


def _key(*arrays: np.ndarray) -> str:
    h = hashlib.sha1(b"land-mask-v1")
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:20]


def land_mask(
    lat: np.ndarray, lon: np.ndarray, dlat: np.ndarray, dlon: np.ndarray, sub: int = 3
) -> np.ndarray:
    """Land (True) where most of ``sub × sub`` points spread over each cell are land.

    ``lat, lon`` are cell centres and ``dlat, dlon`` cell sizes, in degrees (2-D arrays).
    """
    lat, lon, dlat, dlon = (np.asarray(a, dtype=np.float64) for a in (lat, lon, dlat, dlon))
    key = _key(lat, lon, dlat, dlon, np.array([sub]))
    if key in _MEMORY:
        return _MEMORY[key].copy()
    path = cache_dir() / f"land_{key}.npy"
    if path.exists():
        try:
            mask = np.load(path)
            if mask.shape == lat.shape:
                _MEMORY[key] = mask
                return mask.copy()
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed below
    from global_land_mask import globe  # expensive import: only on a cache miss

    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    votes = np.zeros(lat.shape, dtype=np.int32)
    for oy in offsets:
        for ox in offsets:
            la = np.clip(lat + oy * dlat, -89.999, 89.999)
            lo = (lon + ox * dlon + 180.0) % 360.0 - 180.0
            votes += globe.is_land(la, lo)
    mask = votes * 2 > sub * sub
    _MEMORY[key] = mask
    _save(path, mask)
    return mask.copy()


def _save(path: Path, mask: np.ndarray) -> None:
    """Atomic write; an unwritable cache only costs recomputation."""
    try:
        with atomic_output(path, path.name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, mask)
    except OSError:
        pass


def remove_small_basins(ocean: np.ndarray, min_cells: int, topology: Topology) -> np.ndarray:
    """Ocean mask without connected basins (across every face of ``topology``) under
    ``min_cells`` cells."""
    labels = topology.basin_labels(ocean)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_cells
    keep[0] = False
    return keep[labels]
