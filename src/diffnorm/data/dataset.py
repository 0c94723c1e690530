"""A generated dataset in memory: splits of samples as arrays, a PyTorch ``Dataset`` and a
Lightning ``DataModule`` (features and targets are built by the model pipeline, not here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from diffnorm.data.config import SPLITS
from diffnorm.data.generate import MANIFEST_FILE
from diffnorm.fields import Fields, read_fields


class DatasetFolderError(ValueError):
    """A folder that is not a generated dataset (or lacks the requested split)."""


@dataclass
class Sample:
    """One sample: its fields and exact γ (NaN on land)."""

    fields: Fields
    gamma: np.ndarray
    name: str


def sample_files(root: str | Path, split: str) -> list[Path]:
    """The split's files, from the manifest when there is one."""
    root = Path(root)
    if split not in SPLITS:
        raise DatasetFolderError(f"split must be one of {SPLITS}, got {split!r}")
    if not root.is_dir():
        raise DatasetFolderError(f"{root}: no such dataset folder; `diffnorm generate` makes one")
    manifest = root / MANIFEST_FILE
    if manifest.exists():
        records = json.loads(manifest.read_text())["samples"]
        files = [root / r["file"] for r in records if r["split"] == split]
    else:
        files = sorted((root / split).glob(f"{split}_*.nc"))
    return files


class _Mapped(Dataset):
    """``fn`` over ``items``, one item at a time (what :func:`parallel_map`'s workers run)."""

    def __init__(self, fn, items):
        self.fn, self.items = fn, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        return _by_value(self.fn(self.items[k]))


class _Tensor:
    """A CPU tensor's values as a NumPy array, on its way from a worker (:func:`_by_value`)."""

    def __init__(self, tensor: torch.Tensor):
        self.array = tensor.detach().numpy()


def _leaves(result, fn):
    """``result`` with ``fn`` applied to every leaf of its dicts, lists and tuples."""
    if isinstance(result, dict):
        return {k: _leaves(v, fn) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return type(result)(_leaves(v, fn) for v in result)
    return fn(result)


def _send(leaf):
    # NumPy holds no bfloat16, and a CUDA tensor has no NumPy view: those go as tensors
    if (
        isinstance(leaf, torch.Tensor)
        and leaf.device.type == "cpu"
        and leaf.dtype != torch.bfloat16
    ):
        return _Tensor(leaf)
    return leaf


def _receive(leaf):
    if isinstance(leaf, _Tensor):
        return torch.from_numpy(leaf.array)
    if isinstance(leaf, torch.Tensor):  # shared: copied out, or each would hold a descriptor
        return leaf.clone()
    return leaf


def _by_value(result):
    """``result`` with its tensors sent by value. A torch tensor crosses processes through
    shared memory, and the receiver fetches each one's file descriptor from the sender over a
    socket: ~2 ms a tensor, all in the receiving process, which capped encoding the training
    windows at ~40 windows/s however many workers ran (2 480 windows with two copies each took
    58 s on 2 workers, as long as on none)."""
    return _leaves(result, _send)


def _as_is(item):
    return item


def _own(result):
    """``result`` with the tensors :func:`_by_value` sent made tensors again."""
    return _leaves(result, _receive)


def parallel_map(fn, items: list, workers: int = 0) -> list:
    """``[fn(x) for x in items]``, in order, in ``workers`` processes (0 or 1: this one).
    Torch's DataLoader workers, forked, so ``fn`` needs no pickling, only its results do, and
    seeded from their own generator: the global one, which shuffles training, is left as it
    was. The heap is trimmed every 512 results either way."""
    out = []
    if workers > 1 and len(items) > 1:
        loader = DataLoader(
            _Mapped(fn, items),
            batch_size=None,
            num_workers=min(workers, len(items)),
            collate_fn=_as_is,
            prefetch_factor=8,
            multiprocessing_context="fork",
            generator=torch.Generator(),
        )
        results = (_own(r) for r in loader)
    else:
        results = (fn(x) for x in items)
    for k, result in enumerate(results):
        out.append(result)
        if k % 512 == 511:
            release_free_memory()
    return out


def _read_sample(path: Path) -> Sample:
    fields, gamma = read_fields(path)
    if gamma is None:
        raise DatasetFolderError(f"{path}: sample without gamma; regenerate it")
    return Sample(fields, gamma, path.stem)


def load_split(root: str | Path, split: str, workers: int = 0) -> list[Sample]:
    """Every sample of a split, read into memory (datasets are small), by ``workers``
    processes (:func:`parallel_map`; samples of one shape share their topology either way)."""
    return parallel_map(_read_sample, sample_files(root, split), workers)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). Loading and encoding thousands of samples leaves their temporaries' holes in
    the heap: measured on 800 windows of 64×64, 1.46 MB held per sample before, 0.40 after."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def dataset_roots(root: str) -> list[str]:
    """``root``: one dataset folder, or several joined by commas whose samples are pooled."""
    roots = [r.strip() for r in str(root).split(",") if r.strip()]
    if not roots:
        raise DatasetFolderError(
            f"{root!r} names no dataset folder: give one, or several joined by commas"
        )
    return roots


def pooled_split(root: str, split: str, workers: int = 0) -> list[Sample]:
    """The ``split`` samples of every folder of ``root`` (:func:`dataset_roots`), in order."""
    return [s for folder in dataset_roots(root) for s in load_split(folder, split, workers)]


class GammaDataset(Dataset):
    """Samples as tensors: ``fields`` ``(4, ny, nx)`` = mask, area, alpha_x, alpha_y and
    ``gamma`` ``(ny, nx)`` (0 on land), float64; ``transform`` maps a sample dict to another."""

    def __init__(self, samples: list[Sample], transform=None):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        f = s.fields
        item = {
            "fields": torch.from_numpy(
                np.stack([f.mask.astype(np.float64), f.area, f.alpha_x, f.alpha_y])
            ),
            "gamma": torch.from_numpy(np.where(f.mask, s.gamma, 0.0)),
            "steps": torch.tensor(f.steps),
            "periodic_x": torch.tensor(f.periodic_x),
        }
        return self.transform(item) if self.transform else item


class SplitLoaders:
    """``train/val/test_dataloader`` over ``self.sets`` (a dict of datasets by split)."""

    sets: dict[str, Dataset]
    root: str
    batch_size: int
    eval_batch_size: int
    num_workers: int

    def _loader(self, split: str, shuffle: bool, sampler=None) -> DataLoader:
        """``sampler``: draws the items instead of ``shuffle`` (prioritized replay)."""
        if split not in self.sets:
            raise DatasetFolderError(f"{self.root} has no {split!r} samples")
        return DataLoader(
            self.sets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers if split == "train" else self.eval_workers,
        )

    @property
    def eval_workers(self) -> int:
        """Loader processes for the validation and test splits."""
        return self.num_workers

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def _lightning_base():
    try:
        import lightning

        return lightning.LightningDataModule
    except ImportError:  # pragma: no cover - lightning is a dependency; keep import errors clear
        return object


class GammaDataModule(SplitLoaders, _lightning_base()):
    """Lightning ``DataModule`` over a dataset folder: train/val/test loaders."""

    def __init__(
        self,
        root: str,
        batch_size: int = 4,
        num_workers: int = 0,
        transform=None,
    ):
        super().__init__()
        self.root = root
        self.batch_size = self.eval_batch_size = batch_size
        self.num_workers = num_workers
        self.transform = transform
        self.sets: dict[str, GammaDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.sets and sample_files(self.root, split):
                self.sets[split] = GammaDataset(load_split(self.root, split), self.transform)
