"""Training windows that teach geometry: real coastlines and synthetic shapes on small grids.

A network trained on one global grid sees few closed basins, narrow channels or bends, and
fails there on any other grid. Each window here is its own closed domain (its edges are walls,
as the network's land-padded halo shows them), so exact γ on the window is the target for
exactly the input the network sees: no halo of the parent grid is needed.

Kinds (drawn with the weights of :data:`KINDS`):

- ``coast``: real coastlines (``global-land-mask``) at a random resolution between 2° and
  1/12°, random place, flips and quarter turns;
- ``basin``: a closed rectangle, sometimes with islands;
- ``channels``: basins joined by channels 1–3 cells wide, straight, bent or staircase-diagonal;
- ``islands``: open water with islands of one cell up to blobs, and capes from the walls;
- ``lakes``: open water with small isolated basins and one-cell dead ends.

:func:`polar_metrics` puts a window at the top of a global grid instead: east–west periodic,
with a T- or F-pivot north fold (ORCA's) or a closed edge, and cell areas that fall like cos φ
toward the pole, by up to ~40 % a row in the last rows, as on a latitude–longitude grid that
runs into a fold.
"""

from __future__ import annotations

import math

import numpy as np

KINDS: dict[str, float] = {
    "coast": 0.4,
    "basin": 0.15,
    "channels": 0.2,
    "islands": 0.15,
    "lakes": 0.1,
}
RESOLUTION_RANGE = (1.0 / 12.0, 2.0)  # degrees, log-uniform
POLAR_FOLDS = ("F", "T", "none")  # drawn with equal weights
POLAR_ROW_DEG = (0.1, 1.0)  # meridional spacing Δφ, log-uniform
POLAR_GAP_ROWS = (0.3, 6.0)  # the top edge sits this many Δφ short of the pole
OCEAN_FRACTION = (0.25, 0.97)


def window_mask(rng: np.random.Generator, ny: int, nx: int, kind: str | None = None) -> np.ndarray:
    """A boolean ocean mask of ``(ny, nx)`` cells of the given (or a random) kind, with at
    least one ocean cell."""
    if ny < 8 or nx < 8:
        raise ValueError(f"windows need at least 8×8 cells, got {ny}×{nx}")
    if kind is None:
        names = list(KINDS)
        p = np.array([KINDS[k] for k in names])
        kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    makers = {
        "coast": _coast,
        "basin": _basin,
        "channels": _channels,
        "islands": _islands,
        "lakes": _lakes,
    }
    if kind not in makers:
        raise ValueError(f"unknown window kind {kind!r}; choose one of {', '.join(makers)}")
    mask = makers[kind](rng, ny, nx)
    if not mask.any():
        mask[ny // 2, nx // 2] = True
    return mask


def _coast(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    from global_land_mask import globe

    lo, hi = np.log(RESOLUTION_RANGE)
    for _ in range(30):
        res = float(np.exp(rng.uniform(lo, hi)))
        lat0 = rng.uniform(-70.0, 75.0)
        lon0 = rng.uniform(-180.0, 180.0)
        # square-ish cells: the zonal step shrinks like cos φ, as on Mercator-like ocean grids
        dlon = res / max(math.cos(math.radians(lat0)), 0.2)
        lat = lat0 + res * (np.arange(ny) - ny / 2)
        lon = lon0 + dlon * (np.arange(nx) - nx / 2)
        la, lo_ = np.meshgrid(
            np.clip(lat, -89.9, 89.9), (lon + 180.0) % 360.0 - 180.0, indexing="ij"
        )
        ocean = ~globe.is_land(la, lo_)
        if OCEAN_FRACTION[0] <= ocean.mean() <= OCEAN_FRACTION[1]:
            return _symmetry(rng, ocean)
    return _islands(rng, ny, nx)


def _symmetry(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    if rng.random() < 0.5:
        mask = mask[::-1]
    if rng.random() < 0.5:
        mask = mask[:, ::-1]
    if mask.shape[0] == mask.shape[1] and rng.random() < 0.5:
        mask = mask.T
    return np.ascontiguousarray(mask)


def _rect(rng: np.random.Generator, ny: int, nx: int, hmin: int, hmax: int) -> tuple[slice, slice]:
    h = int(rng.integers(hmin, max(hmin + 1, min(hmax, ny) + 1)))
    w = int(rng.integers(hmin, max(hmin + 1, min(hmax, nx) + 1)))
    j = int(rng.integers(0, max(1, ny - h + 1)))
    i = int(rng.integers(0, max(1, nx - w + 1)))
    return slice(j, j + h), slice(i, i + w)


def _basin(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    mask = np.zeros((ny, nx), dtype=bool)
    mask[_rect(rng, ny, nx, 3, max(ny, nx))] = True
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            mask[_rect(rng, ny, nx, 1, 4)] = False
    return mask


def _path(
    rng: np.random.Generator, mask: np.ndarray, a: tuple[int, int], b: tuple[int, int], width: int
) -> None:
    """Carve a channel of ``width`` cells from ``a`` to ``b``: straight legs (an L) or a
    staircase (one-cell steps, the diagonal a 5-point stencil can follow)."""
    (j, i), (j1, i1) = a, b
    stair = rng.random() < 0.5
    while True:
        mask[j : j + width, i : i + width] = True
        if (j, i) == (j1, i1):
            return
        if stair:
            move_y = j != j1 and (i == i1 or rng.random() < 0.5)
        else:
            move_y = i == i1  # along x first, then y: an L
        if move_y:
            j += 1 if j1 > j else -1
        else:
            i += 1 if i1 > i else -1


def _channels(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    mask = np.zeros((ny, nx), dtype=bool)
    centres = []
    for _ in range(int(rng.integers(2, 4))):
        rows, cols = _rect(rng, ny, nx, 2, max(3, min(ny, nx) // 3))
        mask[rows, cols] = True
        centres.append(((rows.start + rows.stop) // 2, (cols.start + cols.stop) // 2))
    for a, b in zip(centres[:-1], centres[1:], strict=True):
        _path(rng, mask, a, b, int(rng.integers(1, 4)))
    if rng.random() < 0.5:  # a dead-end channel
        a = centres[0]
        b = (int(rng.integers(0, ny)), int(rng.integers(0, nx)))
        _path(rng, mask, a, b, int(rng.integers(1, 3)))
    return mask


def _islands(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    mask = np.ones((ny, nx), dtype=bool)
    for _ in range(int(rng.integers(1, 8))):
        if rng.random() < 0.4:  # one-cell island
            mask[int(rng.integers(0, ny)), int(rng.integers(0, nx))] = False
        else:
            mask[_rect(rng, ny, nx, 1, max(2, min(ny, nx) // 4))] = False
    for _ in range(int(rng.integers(0, 3))):  # capes from a wall
        length = int(rng.integers(2, max(3, min(ny, nx) // 2)))
        width = int(rng.integers(1, 4))
        at = int(rng.integers(0, max(1, min(ny, nx) - width)))
        side = int(rng.integers(0, 4))
        if side == 0:
            mask[:length, at : at + width] = False
        elif side == 1:
            mask[ny - length :, at : at + width] = False
        elif side == 2:
            mask[at : at + width, :length] = False
        else:
            mask[at : at + width, nx - length :] = False
    return mask


def _lakes(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    mask = _islands(rng, ny, nx)
    for _ in range(int(rng.integers(1, 5))):
        rows, cols = _rect(rng, ny, nx, 3, 7)
        mask[rows, cols] = False  # a land block, then a lake or a dead end inside it
        inner = mask[rows, cols]
        h, w = inner.shape
        if h >= 3 and w >= 3:
            inner[1 : h - 1, 1 : w - 1] = rng.random() < 0.5
            inner[h // 2, 1 : w - 1] = True  # a one-cell-wide lake or arm
            if rng.random() < 0.5:
                inner[h // 2, 0] = True  # open to the sea: a dead-end inlet
    return mask


def sharp_steps(
    rng: np.random.Generator, d1: np.ndarray, d2: np.ndarray, d_min: float, d_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply the length scales on one side of a random straight line by a factor in
    ``[1/2, 2]`` (fronts, shelf breaks), clipped to ``[d_min, d_max]``."""
    ny, nx = d1.shape
    jj, ii = np.mgrid[0:ny, 0:nx]
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(0.3, 0.7) * (ny * abs(np.sin(angle)) + nx * abs(np.cos(angle)))
    side = jj * np.sin(angle) + ii * np.cos(angle) > offset
    factor = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    scale = np.where(side, factor, 1.0)
    return np.clip(d1 * scale, d_min, d_max), np.clip(d2 * scale, d_min, d_max)


def stretched_metrics(rng: np.random.Generator, mask: np.ndarray, log_std: float, dx: float = 1e4):
    """A closed grid whose cell sizes vary smoothly, as on real grids: ``e1``, ``e2`` are
    ``dx·exp(z)`` with smooth random ``z`` of log-standard deviation ``log_std`` (correlation 16
    cells), and in half of the draws ``e1`` also shrinks like ``cos φ`` over a random band of
    latitudes (to 80°). Face metrics are the means of their two cells."""
    from scipy import ndimage

    from diffnorm.grid import GridMetrics

    ny, nx = mask.shape

    def smooth() -> np.ndarray:
        z = ndimage.gaussian_filter(rng.standard_normal((ny, nx)), 16.0, mode="reflect")
        return log_std * (z - z.mean()) / max(z.std(), 1e-12)

    e1, e2 = dx * np.exp(smooth()), dx * np.exp(smooth())
    if rng.random() < 0.5:
        south = rng.uniform(-80.0, 40.0)
        lat = np.linspace(south, min(south + rng.uniform(10.0, 60.0), 80.0), ny)
        e1 = e1 * np.cos(np.radians(lat))[:, None]

    def face(a: np.ndarray, axis: int) -> np.ndarray:
        nxt = np.concatenate(
            [np.take(a, range(1, a.shape[axis]), axis), np.take(a, [-1], axis)], axis
        )
        return 0.5 * (a + nxt)

    return GridMetrics(
        mask=mask,
        e1t=e1,
        e2t=e2,
        e1u=face(e1, 1),
        e2u=face(e2, 1),
        e1v=face(e1, 0),
        e2v=face(e2, 0),
        periodic_x=False,
        name=f"windows{ny}x{nx}",
    )


def polar_metrics(rng: np.random.Generator, mask: np.ndarray):
    """The top ``ny`` rows of an east–west periodic latitude–longitude grid, its north edge a
    T or F fold or closed (:data:`POLAR_FOLDS`): rows of Δφ (:data:`POLAR_ROW_DEG`) ending
    :data:`POLAR_GAP_ROWS` rows short of the pole, so that ``e1 ∝ cos φ`` and the cell areas
    fall toward the top, by ``cos(φ−Δφ)/cos φ`` a row. Metrics depend on the row only, so the
    fold's copies agree; ``mask``'s T-fold copies are made to agree (a copy of ``mask`` is
    changed)."""
    from diffnorm.grid import GridMetrics, latitude_rows
    from diffnorm.topology import Topology

    ny, nx = mask.shape
    fold = POLAR_FOLDS[int(rng.integers(len(POLAR_FOLDS)))]
    dphi = float(np.exp(rng.uniform(*np.log(POLAR_ROW_DEG))))
    top = 90.0 - rng.uniform(*POLAR_GAP_ROWS) * dphi
    edges = top - dphi * np.arange(ny, -1, -1)
    rep = Topology(ny, nx, True, fold).representative
    mask = np.asarray(mask, dtype=bool).ravel()[rep].reshape(ny, nx)
    # any Δλ: γ depends on the cell sizes only through their ratios
    return GridMetrics(
        mask=mask,
        **latitude_rows(edges, dphi, nx),
        periodic_x=True,
        north_fold=fold,
        name=f"polar{ny}x{nx}{fold}",
    )
