"""Small deterministic grids shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffnorm.fields import Fields


def random_fields(
    ny: int = 14,
    nx: int = 17,
    steps: int = 6,
    periodic_x: bool = True,
    seed: int = 0,
    kappa: float = 0.8,
    anisotropy: float = 1.0,
    islands: bool = True,
) -> Fields:
    """Random positive metrics, a few islands and a lake, length scales of about 2–3 cells."""
    rng = np.random.default_rng(seed)
    mask = np.ones((ny, nx))
    if islands:
        mask[3:6, 4:7] = 0
        mask[ny - 4, nx - 5 :] = 0
        mask[ny - 2, 1] = 0
        mask[0, nx // 2] = 0
        # a one-cell lake cut off from the rest
        mask[8:11, 10:13] = 0
        mask[9, 11] = 1
    area = rng.uniform(0.6, 1.4, (ny, nx)) * 1e8
    ax = kappa * anisotropy * rng.uniform(0.5, 1.5, (ny, nx)) * 1e8
    ay = kappa / anisotropy * rng.uniform(0.5, 1.5, (ny, nx)) * 1e8
    return Fields(mask, area, ax, ay, steps, periodic_x)


def dense_variance(fields: Fields) -> np.ndarray:
    """``diag(S^M W⁻¹)`` by dense linear algebra, on the ocean cells."""
    from diffnorm.operator import system_matrix

    a = system_matrix(fields).toarray()
    w = fields.area.ravel()[np.flatnonzero(fields.mask.ravel())]
    s = np.linalg.solve(a, np.diag(w))
    return np.diag(np.linalg.matrix_power(s, fields.steps) / w[None, :])


@pytest.fixture
def small_fields() -> Fields:
    return random_fields()


# -- a tiny generated dataset and a briefly trained model, shared by the ML tests -------------
TINY = {
    "grid": {"name": "box", "ny": 16, "nx": 20, "periodic_x": True},
    "steps": 6,
    "parameters": {"d_min": 1.2, "d_max": 2.5, "correlation_cells": 4.0},
    "splits": {"train": 2, "val": 1},
    "method": "brute",
    "seed": 3,
}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    from diffnorm.data import generate
    from diffnorm.data.config import config_from_dict

    root = tmp_path_factory.mktemp("tiny")
    generate(config_from_dict(TINY), root, workers=1)
    return root


def small_model(**kw):
    from diffnorm.ml.lit import GammaModel

    return GammaModel(width=16, blocks=1, layers_per_block=2, lr=3e-3, **kw)


def trainer(tmp_path, **kw):
    import lightning

    return lightning.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        deterministic=True,
        **kw,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset, tmp_path_factory):
    """A small residual network fitted for 2 epochs on :func:`tiny_dataset` (last.ckpt)."""
    import lightning
    import torch

    from diffnorm.ml.data import TrainingDataModule

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt")
    model = small_model()
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=2)
    ckpt = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=out, save_last=True)
    trainer(out, max_epochs=2, callbacks=[ckpt]).fit(model, dm)
    return Path(ckpt.last_model_path)


# -- folded grids -------------------------------------------------------------------------------
def folded_fields(
    fold: str, ny: int = 9, nx: int = 12, steps: int = 6, seed: int = 0, kappa: float = 0.8
) -> Fields:
    """Random fields on a T- or F-folded grid, with the values the fold lists twice made to
    agree, and land on the fold row and next to it (so that the fold cuts coasts too)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((ny, nx))
    area = rng.uniform(0.6, 1.4, (ny, nx)) * 1e8
    ax = 1.5 * kappa * rng.uniform(0.5, 1.5, (ny, nx)) * 1e8
    ay = kappa / 1.5 * rng.uniform(0.5, 1.5, (ny, nx)) * 1e8
    mask[2:4, 3:5] = 0
    mask[ny - 1, 2] = mask[ny - 2, nx - 4] = 0
    half, cols = nx // 2, np.arange(nx // 2, nx)
    if fold == "T":
        dup = np.arange(half + 1, nx)
        mask[ny - 1, dup] = mask[ny - 1, nx - dup]
        area[ny - 1, dup] = area[ny - 1, nx - dup]
        ax[ny - 1, cols] = ax[ny - 1, nx - 1 - cols]
    else:
        ay[ny - 1, cols] = ay[ny - 1, nx - 1 - cols]
    return Fields(mask, area, ax, ay, steps, True, north_fold=fold)


def double_cover(fields: Fields) -> tuple[Fields, np.ndarray]:
    """The unfolded double cover of a folded grid, an ordinary closed and periodic grid built
    without any fold logic, and the flat cover index of each folded cell's mirror ``m(c)``
    (DESIGN §1: ``v(c) = G(c, c) + G(c, m(c))`` with ``G = S^M W⁻¹`` of the cover)."""
    from diffnorm.augment import Transform

    ny, nx = fields.shape
    mask, area = fields.mask.astype(float), fields.area
    ax, ay = fields.alpha_x, fields.alpha_y
    if fields.north_fold == "F":
        keep = ny  # the cover's top half is the whole grid turned by 180°
        shift = 0
    else:
        keep = ny - 1  # the fold row is its own mirror: turn the rows below it
        shift = 1
    below = Fields(mask[:keep], area[:keep], ax[:keep], ay[:keep], fields.steps, True)
    t = Transform(flip_x=True, flip_y=True, shift_x=shift)
    turned = t.fields(below)
    rx, ry = turned.alpha_x, turned.alpha_y.copy()
    ry[-1] = 0.0
    cover_ay = np.vstack([ay, ry])
    if fields.north_fold == "T":
        cover_ay[ny - 1] = ay[ny - 2, (nx - np.arange(nx)) % nx]
    cover = Fields(
        np.vstack([mask, turned.mask]),
        np.vstack([area, turned.area]),
        np.vstack([ax, rx]),
        cover_ay,
        fields.steps,
        True,
    )
    rows = cover.shape[0]
    j, i = np.divmod(np.arange(ny * nx), nx)
    mirror = (rows - 1 - j) * nx + (nx - 1 - i + shift) % nx
    return cover, mirror
