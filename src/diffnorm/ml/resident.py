"""Training windows held on the training device, batches drawn there (``data.resident``).

A GPU step on a batch of 64×64 windows takes a few milliseconds, while a loader process
encodes an augmented window in ~16 ms: loaders cannot keep a GPU busy, and the network's
coastal tails need hundreds of passes per window. So each window is encoded ``K`` times once
(as it is, then ``K − 1`` random grid symmetries, :mod:`diffnorm.augment`), the copies are
stacked copy-major (row ``c·N + i`` is copy ``c`` of window ``i``) and moved to the device, and
a batch is an ``index_select`` there. A draw takes a transformed copy with probability
``augment``, else the window as it is; windows are drawn as a shuffle or by their last loss
(:class:`~diffnorm.ml.sampling.PrioritySampler`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch

from diffnorm.augment import random_transform
from diffnorm.data.dataset import Sample, parallel_map
from diffnorm.ml.encoding import Encoding
from diffnorm.ml.features import Standardizer
from diffnorm.ml.sampling import PrioritySampler


def encode_copies(
    samples: list[Sample],
    enc: Encoding,
    stats: Standardizer,
    copies: int,
    seed: int,
    workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Every sample encoded ``copies`` times, stacked copy-major. Copy 0 is the sample as it
    is; copy ``c ≥ 1`` a symmetry drawn from ``default_rng([seed, i])`` for window ``i``, so
    the copies depend on the seed alone, not on the number of ``workers``."""
    if copies < 1:
        raise ValueError(f"data.resident must be >= 1 copies per window, got {copies}")
    shapes = {s.fields.shape for s in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"data.resident stacks the training windows, which must share one shape; got "
            f"{sorted(shapes)}: train on one window size, or set data.resident 0"
        )

    def encode(i: int) -> list[dict[str, torch.Tensor]]:
        s = samples[i]
        rng = np.random.default_rng([seed, i])
        out = [enc.encode(s, stats)]
        for _ in range(copies - 1):
            fields, gamma = random_transform(rng, s.fields.topology).sample(s.fields, s.gamma)
            out.append(enc.encode(Sample(fields, gamma, s.name), stats))
        return out

    encoded = parallel_map(encode, list(range(len(samples))), workers)
    keys = list(encoded[0][0])
    return {k: torch.stack([e[c][k] for c in range(copies) for e in encoded]) for k in keys}


class ResidentBatches:
    """One epoch of training batches (``ceil(N / batch_size)`` of them, ``N`` windows) drawn
    from stacked copies (:func:`encode_copies`) held on ``device``."""

    def __init__(
        self,
        data: dict[str, torch.Tensor],
        windows: int,
        batch_size: int,
        augment: float,
        generator: torch.Generator,
        sampler: PrioritySampler | None = None,
    ):
        self.data, self.windows, self.batch_size = data, windows, batch_size
        self.copies = len(data["x"]) // windows
        self.augment, self.generator, self.sampler = augment, generator, sampler

    def to(self, device: torch.device | str) -> ResidentBatches:
        """The copies moved to ``device`` (once: later calls on that device cost nothing)."""
        self.data = {k: v.to(device) for k, v in self.data.items()}
        return self

    def __len__(self) -> int:
        return -(-self.windows // self.batch_size)

    def _order(self) -> Iterator[int]:
        if self.sampler is not None:  # drawn lazily: each batch sees the scores of the last
            return iter(self.sampler)
        return iter(torch.randperm(self.windows, generator=self.generator).tolist())

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order, device = self._order(), self.data["x"].device
        for _ in range(len(self)):
            index = torch.tensor(list(itertools.islice(order, self.batch_size)))
            copy = torch.zeros_like(index)
            if self.copies > 1 and self.augment > 0:
                turned = torch.rand(len(index), generator=self.generator) < self.augment
                other = torch.randint(1, self.copies, (len(index),), generator=self.generator)
                copy = torch.where(turned, other, copy)
            rows = (copy * self.windows + index).to(device)
            batch = {k: v.index_select(0, rows) for k, v in self.data.items()}
            yield {**batch, "index": index.to(device)}
