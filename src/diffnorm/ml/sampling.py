"""Training windows drawn by how badly the network last did on them (prioritized replay).

A network that fits most cells of most windows still underfits the few windows that hold its
tails (one-cell inlets, dead ends, capes with a large D). Drawing windows uniformly spends
most steps where it already fits; :class:`PrioritySampler` draws window ``i`` with

    P(i) = (1 − p)/N + p · s_i / Σ_j s_j,

``s_i`` the training loss of window ``i`` the last time it was drawn and ``p`` the priority
share. A window not drawn yet scores ``UNSEEN`` (far above any loss of a trained network),
so the first draws visit every window before the scores take over.

Under DDP Lightning wraps the sampler and draws each epoch's list at its start, from the
scores as they stand then (every rank records every rank's windows, so their lists agree).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

UNSEEN = 1e6  # score of a window not drawn yet: above any loss a window can have
REDRAW = 64  # indices drawn per look at the scores (updated after every batch)


def check_share(share: float, name: str = "priority") -> float:
    """The priority share, refused outside [0, 1]."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be a share in [0, 1], got {share}")
    return float(share)


class PrioritySampler(Sampler[int]):
    """``len`` draws per epoch, with replacement, from the mixture above (seeded)."""

    def __init__(self, size: int, share: float, seed: int = 0):
        if size < 1:
            raise ValueError(f"a priority sampler needs at least one window, got {size}")
        self.size, self.share = size, check_share(share)
        self._scores = torch.full((size,), UNSEEN, dtype=torch.float64)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def scores(self) -> torch.Tensor:
        """Every window's last loss (the latest batch's included)."""
        self._apply_pending()
        return self._scores

    def __len__(self) -> int:
        return self.size

    def probabilities(self) -> torch.Tensor:
        """The mixture above, from the scores as of the batch before the latest (see
        :meth:`update`)."""
        s = self._scores.clamp_min(0.0)
        total = float(s.sum())
        prior = s / total if total > 0 else torch.full_like(s, 1.0 / self.size)
        return (1.0 - self.share) / self.size + self.share * prior

    def __iter__(self) -> Iterator[int]:
        left = self.size
        while left > 0:
            n = min(REDRAW, left)
            yield from torch.multinomial(
                self.probabilities(), n, replacement=True, generator=self.generator
            ).tolist()
            left -= n

    def update(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the loss of each window of a batch (the last one counts). Applied one batch
        late: reading a GPU's losses at once would wait for the step to finish before the
        host could queue the next one; by the next batch they are long computed."""
        self._apply_pending()
        self._pending = (indices.detach(), losses.detach())

    def _apply_pending(self) -> None:
        if self._pending is not None:
            indices, losses = self._pending
            self._pending = None
            self._scores[indices.long().cpu()] = losses.double().cpu()

    def state_dict(self) -> dict:
        return {"scores": self.scores.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        scores = torch.as_tensor(state["scores"], dtype=torch.float64)
        if scores.shape != self.scores.shape:
            raise ValueError(
                f"the checkpoint's priority scores are for {scores.numel()} windows, the "
                f"training set has {self.size}: resume on the data the run started with"
            )
        self._pending, self._scores = None, scores
        self.generator.set_state(state["generator"])
