"""Fields every benchmark starts from: a built-in grid with random length scales in cells."""

from __future__ import annotations

import numpy as np

from diffnorm.fields import Fields
from diffnorm.grid import built_in_grid, fields_from_cell_length_scales
from diffnorm.lengthscales import random_cell_length_scales


def benchmark_fields(
    grid: str = "orca1",
    *,
    d_min: float = 1.5,
    d_max: float = 4.0,
    steps: int = 10,
    seed: int = 0,
    quick: bool = False,
) -> Fields:
    """``grid`` (the 4° lat-lon grid when ``quick``) with smooth random ``D₁, D₂`` in
    ``[d_min, d_max]`` cells, seeded."""
    metrics = built_in_grid("latlon", resolution=4.0) if quick else built_in_grid(grid)
    return random_fields_on(metrics, d_min=d_min, d_max=d_max, steps=steps, seed=seed)


def random_fields_on(
    metrics, *, d_min: float = 1.5, d_max: float = 4.0, steps: int = 10, seed: int = 0
) -> Fields:
    """Fields on any grid's metrics with smooth random ``D₁, D₂`` in ``[d_min, d_max]`` cells."""
    rng = np.random.default_rng(seed)
    d1, d2 = random_cell_length_scales(
        metrics.mask.shape, rng, d_min=d_min, d_max=d_max, topology=metrics.topology
    )
    return fields_from_cell_length_scales(metrics, d1, d2, steps)


def exact_above_values(text: str) -> dict[str, float | str]:
    """``--exact-above``'s comma-separated list, by its text: ``auto`` (the model's calibrated τ,
    ``GammaNetwork.exact_above``) or |ε| values."""
    from diffnorm.methods.cnn import exact_above_value

    items = [t.strip() for t in text.split(",") if t.strip()]
    return {t: exact_above_value(t, "--exact-above") for t in items}
