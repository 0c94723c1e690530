"""Training that ends at a moment: ``trainer.max_time`` as a wall-clock time, setup included.

A lent machine's call has a hard end, and reading and encoding the windows before the first
step takes a time nobody knows in advance; ``max_time`` counts from the first step.
:class:`Deadline` stops training at ``at`` (Unix seconds), and the cosine schedule of
:class:`~diffnorm.ml.lit.GammaModel` reads its ``share`` (training time spent over training
time available, as rank 0 sees it, broadcast so every rank anneals alike) to end at zero then.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Timer


class Deadline(Timer):
    """``--trainer.callbacks+=diffnorm.ml.deadline.Deadline --trainer.callbacks.at=<Unix s>``;
    ``final``: a checkpoint written when training ends, holding the weights the schedule
    annealed to (validation, and so ``best.ckpt``, may last have run many steps before);
    ``anneal=False``: stop at ``at`` but leave the schedule to the steps (a job of a run that
    several resubmitted jobs continue)."""

    def __init__(self, at: float, final: str | None = None, anneal: bool = True):
        super().__init__(duration=None)
        self.at, self.final, self.anneal, self.share = float(at), final, anneal, 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        # a resumed run's Timer counts the training time of the killed one (its offset)
        self._duration = max(self.at - time.time(), 0.0) + self._offset
        super().on_train_start(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        share = self.time_elapsed() / self._duration if self._duration else 1.0
        self.share = float(trainer.strategy.broadcast(min(share, 1.0)))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.final:
            trainer.save_checkpoint(self.final)
