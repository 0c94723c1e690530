"""Samples turned into network-ready tensors (features with halo, targets, masks)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from diffnorm.augment import random_transform
from diffnorm.data.dataset import (
    MANIFEST_FILE,
    DatasetFolderError,
    Sample,
    SplitLoaders,
    dataset_roots,
    parallel_map,
    pooled_split,
    release_free_memory,
)
from diffnorm.ml.encoding import Encoding
from diffnorm.ml.features import Standardizer, raw_features, raw_target
from diffnorm.ml.resident import ResidentBatches, encode_copies
from diffnorm.ml.sampling import PrioritySampler, check_share


def fit_standardizer(samples: list[Sample], enc: Encoding, workers: int = 0) -> Standardizer:
    def raw(s: Sample) -> tuple[np.ndarray, np.ndarray]:
        f = s.fields
        target = raw_target(f, np.where(f.mask, s.gamma, 1.0), enc.target)[f.mask]
        return raw_features(f, enc.distance, enc.area, enc.steps_input), target

    pairs = parallel_map(raw, samples, workers)
    return Standardizer.fit([p[0] for p in pairs], [p[1] for p in pairs])


def _describe(sample: Sample) -> tuple[np.ndarray, ...]:
    """One sample's D in cells, cell sizes, anisotropies, stretchings and open-face counts."""
    from diffnorm.ml.domain import cell_descriptors

    f = sample.fields
    kx, ky = f.grid_diffusivity()
    k = np.concatenate([kx[f.open_x], ky[f.open_y]])
    cells = cell_descriptors(f)
    return (
        np.sqrt(k * (2 * f.steps - 4)),
        np.sqrt(f.area[f.mask]),
        cells["anisotropy"][np.isfinite(cells["anisotropy"])],
        np.abs(cells["stretching"][f.mask]),
        np.unique(cells["open_faces"][f.mask]),
    )


def data_info(samples: list[Sample], root: str, workers: int = 0) -> dict:
    """What a model trained on ``samples`` has seen: M, length scales D in cells (from the
    grid diffusivities, ``D² = κ(2M − 4)``), cell sizes, grid shapes; stored with the model so
    that predictions outside that range can warn. ``workers``: :func:`parallel_map`."""
    steps = sorted({s.fields.steps for s in samples})
    d_cells, sizes, ratios, stretch, faces = zip(
        *parallel_map(_describe, samples, workers), strict=True
    )
    faces = set(np.concatenate(faces).tolist())
    d, dx = np.concatenate(d_cells), np.concatenate(sizes)
    ratio = np.concatenate(ratios)
    digests = []
    for folder in dataset_roots(root):
        manifest = Path(folder) / MANIFEST_FILE
        found = json.loads(manifest.read_text()) if manifest.exists() else {}
        digests.append(found.get("config_digest"))
    digest = digests[0] if len(digests) == 1 else digests
    return {
        "steps": steps,
        "d_cells": [float(np.quantile(d, 0.001)), float(np.quantile(d, 0.999))],
        "cell_size_km": [float(dx.min() / 1e3), float(dx.max() / 1e3)],
        "anisotropy": [float(np.quantile(ratio, 0.001)), float(np.quantile(ratio, 0.999))]
        if ratio.size
        else [1.0, 1.0],
        "stretching_max": float(np.quantile(np.concatenate(stretch), 0.999)),
        "open_faces_seen": sorted(int(n) for n in faces),
        "shapes": sorted({"{}x{}".format(*s.fields.shape) for s in samples}),
        "periodic_x": sorted({bool(s.fields.periodic_x) for s in samples}),
        "north_fold": sorted({s.fields.north_fold for s in samples}),
        "train_samples": len(samples),
        "dataset": str(root),
        "dataset_config_digest": digest,
    }


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    """Log ``data: <what> in <s> s`` when the block ends: where a run's setup time goes
    (on a lent GPU machine, minutes of a 10-minute call)."""
    from lightning.pytorch.utilities import rank_zero_info

    start = time.perf_counter()
    yield
    rank_zero_info(f"data: {what} in {time.perf_counter() - start:.1f} s")


def augment_probability(augment: bool | float) -> float:
    """The fraction of training draws to transform: ``True`` is 1, ``False`` 0."""
    p = float(augment)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augment must be a probability in [0, 1] or a bool, got {augment}")
    return p


class EncodedDataset(Dataset):
    """Encoded samples, computed once (datasets are small); with ``augment`` (a probability,
    ``True`` = 1), an item is, that often, a random symmetry of its sample (flips, rotations
    of square grids, x shifts of periodic ones), encoded on the fly and drawn from torch's
    seeded generator."""

    def __init__(
        self,
        samples: list[Sample],
        enc: Encoding,
        stats: Standardizer,
        augment: bool | float = False,
        crop: int | None = None,
        workers: int = 0,
    ):
        """``workers``: encode in that many processes (:func:`parallel_map`)."""
        self.augment = augment_probability(augment)
        self.samples, self.enc, self.stats, self.crop = samples, enc, stats, crop
        always = self.augment == 1.0
        self.items = (
            None if always else parallel_map(lambda s: enc.encode(s, stats), samples, workers)
        )
        self.names = [s.name for s in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, ())))
        if self.items is not None and not (self.augment and rng.random() < self.augment):
            item = self.items[i]
        else:
            s = self.samples[i]
            t = random_transform(rng, s.fields.topology)
            fields, gamma = t.sample(s.fields, s.gamma)
            item = self.enc.encode(Sample(fields, gamma, s.name), self.stats)
        item = random_crop(item, self.crop, self.enc.halo, rng) if self.crop else item
        return {**item, "index": torch.tensor(i)}  # which window: its priority score


def random_crop(item: dict, size: int, halo: int, rng: np.random.Generator) -> dict:
    """A ``size × size`` window of an encoded sample (its inputs keep their halo), holding at
    least one ocean cell: with valid convolutions (``arch="residual"``) the network's output
    there is exactly its output on the whole grid, so large grids train on crops at a fraction
    of the cost. Not so for the U-Net: it pads inside and reads up to ``7·2^L − 5`` cells
    (51 at 3 levels; :func:`~diffnorm.ml.networks.unet_extent`), beyond its halo (16 in the
    shipped ones), which a crop fills with zeros.
    Fine-tuning the shipped U-Net on 32-cell crops of its training windows took its whole-window
    validation loss from 1.74e-3 to 3.6e-3 in one epoch (2.6e-3 with the crops placed at the
    cells where its baseline is worst, batch norms frozen; 1.9e-3 on whole windows)."""
    ny, nx = item["mask"].shape
    if size >= ny and size >= nx:
        return item
    h, w = min(size, ny), min(size, nx)
    for _ in range(20):
        j, i = int(rng.integers(ny - h + 1)), int(rng.integers(nx - w + 1))
        if item["mask"][j : j + h, i : i + w].any():
            break
    out = {k: v[j : j + h, i : i + w] for k, v in item.items() if k != "x"}
    out["x"] = item["x"][:, j : j + h + 2 * halo, i : i + w + 2 * halo]
    return out


def _datamodule_base():
    import lightning

    return lightning.LightningDataModule


class TrainingDataModule(SplitLoaders, _datamodule_base()):
    """A dataset folder for training: the standardizer is fitted on the training split only."""

    def __init__(
        self,
        root: str,
        distance: str = "manhattan",
        target: str = "log_ratio",
        halo: int = 10,
        batch_size: int = 4,
        num_workers: int = 0,
        augment: bool | float = False,
        crop: int | None = None,
        stats_from: str | None = None,
        area: str = "global",
        steps_input: bool = False,
        priority: float = 0.0,
        resident: int = 0,
    ):
        """``root``: a dataset folder, or several joined by commas (their samples pooled);
        ``augment``: random grid symmetries of the training samples (see
        :mod:`diffnorm.augment`), all of them (``True``) or that fraction of the draws;
        ``crop``: train on random ``crop × crop`` windows (large grids on small machines).
        Validation and test samples are never transformed. ``stats_from``: take the
        standardization statistics of this model file, checkpoint or shipped model
        (fine-tuning) instead of fitting them on the training split. ``priority``: the share
        of training draws made by each window's last loss instead of uniformly
        (:class:`~diffnorm.ml.sampling.PrioritySampler`; 0 shuffles as usual).
        ``resident``: hold the training split on the training device as that many encoded
        copies of each window (the window, then random symmetries drawn once;
        :mod:`diffnorm.ml.resident`) and draw batches there, ``augment`` being the share of
        draws that take a transformed copy: for a GPU, which loader processes cannot keep
        busy (0: a DataLoader, as usual; windows of one shape, one device)."""
        augment_probability(augment)  # fail before the Trainer is built
        if batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}"
            )
        if resident < 0 or (resident and crop):
            raise ValueError(
                f"data.resident must be >= 0 copies per window and is not taken with "
                f"data.crop, got resident={resident}, crop={crop}"
            )
        if resident == 1 and float(augment) > 0:
            raise ValueError(
                f"data.resident 1 holds no transformed copy for data.augment {augment} to "
                "draw: set data.resident >= 2, or data.augment 0"
            )
        check_share(priority, "data.priority")
        super().__init__()
        self.save_hyperparameters()
        self.root, self.batch_size, self.num_workers = root, batch_size, num_workers
        self.eval_batch_size = 1  # metrics are per sample
        self.enc = Encoding(distance, target, halo, area, steps_input=steps_input)
        self.stats: Standardizer | None = None
        self.info: dict = {}
        self.sets: dict[str, EncodedDataset] = {}
        self.priority_sampler: PrioritySampler | None = None
        self.resident: ResidentBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        workers = self.num_workers  # the loaders' processes read and encode too
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.check_devices(trainer.world_size)  # before any window is read
        if self.stats is None:
            with timed("read the training windows"):
                train = pooled_split(self.hparams.root, "train", workers)
            if not train:
                raise DatasetFolderError(f"{self.hparams.root} has no training samples")
            if self.hparams.stats_from:
                from diffnorm.ml.modelfile import resolve_model

                # a network extended with inputs (the M channel) keeps its source's statistics
                stats = resolve_model(self.hparams.stats_from).stats
                self.stats = stats.with_channels(len(self.enc.channels))
            else:
                with timed("fitted the standardization"):
                    self.stats = fit_standardizer(train, self.enc, workers)
            with timed(f"described {len(train)} training windows"):
                self.info = data_info(train, self.hparams.root, workers)
            if self.hparams.priority > 0:
                seed = int(torch.randint(2**31 - 1, ()))  # from the run's seed_everything
                self.priority_sampler = PrioritySampler(len(train), self.hparams.priority, seed)
            if self.hparams.resident:
                seed = int(torch.randint(2**31 - 1, ()))
                with timed(f"encoded {self.hparams.resident} copies of each window"):
                    copies = encode_copies(
                        train, self.enc, self.stats, self.hparams.resident, seed, workers
                    )
                self.resident = ResidentBatches(
                    copies,
                    len(train),
                    self.batch_size,
                    augment_probability(self.hparams.augment),
                    torch.Generator().manual_seed(seed),
                    self.priority_sampler,
                )
            else:
                with timed("encoded the training windows"):
                    self.sets["train"] = EncodedDataset(
                        train,
                        self.enc,
                        self.stats,
                        self.hparams.augment,
                        self.hparams.crop,
                        workers,
                    )
            del train
        for split in ("val", "test"):
            samples = [] if split in self.sets else pooled_split(self.hparams.root, split, workers)
            if samples:
                with timed(f"encoded {len(samples)} {split} windows"):
                    self.sets[split] = EncodedDataset(
                        samples, self.enc, self.stats, workers=workers
                    )
        release_free_memory()

    def check_devices(self, world_size: int) -> None:
        """Refuse ``data.resident`` with several devices (it holds the windows on one)."""
        if self.hparams.resident and world_size > 1:
            raise ValueError(
                "data.resident holds the training windows on one device; with several "
                "devices set data.resident 0"
            )

    def train_dataloader(self):
        if self.resident is None:
            return self._loader("train", True, self.priority_sampler)
        trainer = getattr(self, "trainer", None)
        return self.resident.to(trainer.strategy.root_device if trainer is not None else "cpu")

    @property
    def eval_workers(self) -> int:
        # val and test items are encoded at setup: loader processes would only look them up,
        # at the cost of starting at every validation
        return 0

    def state_dict(self) -> dict:
        """Saved in checkpoints: the windows' scores and the sampler's generator, so a run
        resumed from an end-of-epoch checkpoint (the default ones) draws as the killed one
        would have; from a mid-epoch one, with the scores it had then. With ``resident``, the
        generator of its shuffles and copy choices too."""
        state = {"priority": self.priority_sampler.state_dict()} if self.priority_sampler else {}
        if self.resident is not None:
            state["resident"] = self.resident.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Lightning calls it after :meth:`setup`, so the sampler exists if the run has one."""
        if self.priority_sampler is not None and "priority" in state:
            self.priority_sampler.load_state_dict(state["priority"])
        if self.resident is not None and "resident" in state:
            self.resident.generator.set_state(state["resident"])
