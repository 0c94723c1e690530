"""Prioritized replay of training windows (diffnorm.ml.sampling) and its place in training."""

from __future__ import annotations

import lightning
import numpy as np
import pytest
import torch

from conftest import small_model, trainer
from diffnorm.ml.data import TrainingDataModule
from diffnorm.ml.sampling import UNSEEN, PrioritySampler


def test_priority_draws_follow_the_mixture():
    s = PrioritySampler(10, share=0.8, seed=0)
    s.scores[:] = 0.0
    s.scores[3] = 1.0
    p = s.probabilities()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert p[3] == pytest.approx(0.2 / 10 + 0.8)
    draws = np.array([i for _ in range(50) for i in s])
    assert abs(np.mean(draws == 3) - float(p[3])) < 0.03  # 500 draws
    assert set(np.unique(draws)) == set(range(10))  # the uniform share reaches every window
    uniform = PrioritySampler(10, share=0.0, seed=0)
    uniform.scores[3] = 1e6
    torch.testing.assert_close(uniform.probabilities(), torch.full((10,), 0.1, dtype=torch.float64))


def test_unseen_windows_come_first_then_the_worst_ones():
    s = PrioritySampler(100, share=1.0, seed=1)
    seen = set()
    for i in s:  # every draw is scored at once with a trained network's loss
        seen.add(i)
        s.update(torch.tensor([i]), torch.tensor([1e-3 * (i == 7) + 1e-6]))
    assert len(seen) > 60  # without priorities 100 draws reach 63 % of the windows
    assert UNSEEN > 1e-3
    s.scores[:] = 1e-6
    s.scores[7] = 1e-3
    assert np.mean([i == 7 for i in s]) > 0.85  # 1e-3 / (1e-3 + 99e-6) = 0.91


def test_a_resumed_sampler_draws_what_the_original_would_have():
    a = PrioritySampler(20, share=0.5, seed=3)
    a.update(torch.arange(5), torch.linspace(0.1, 0.5, 5))
    b = PrioritySampler(20, share=0.5, seed=99)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b)
    with pytest.raises(ValueError, match="20 windows.*21"):
        PrioritySampler(21, share=0.5).load_state_dict(a.state_dict())
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="priority"):
            PrioritySampler(5, share=bad)


def test_per_window_losses_average_to_the_batch_loss(tiny_dataset):
    torch.manual_seed(0)
    model = small_model(tail_scale=0.1)
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=3)
    dm.setup()
    model.stats = dm.stats
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        total, per = model._window_losses(model(batch["x"]), batch)
    counts = batch["mask"].sum((1, 2)).double()
    torch.testing.assert_close(
        total.double(), (per * counts).sum() / counts.sum(), rtol=1e-6, atol=0
    )
    assert per.shape == (len(batch["x"]),) and len(set(per.tolist())) == len(per) > 1


def test_training_scores_windows_and_resumes_with_their_scores(tiny_dataset, tmp_path):
    lightning.seed_everything(0, verbose=False)
    model = small_model(tail_scale=0.1)
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=2, priority=0.7)
    ckpt = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(tmp_path, max_epochs=2, callbacks=[ckpt]).fit(model, dm)
    scores = dm.priority_sampler.scores
    assert (scores < UNSEEN).any() and torch.isfinite(scores).all()
    resumed = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=2, priority=0.7)
    trainer(tmp_path, max_epochs=2).fit(
        small_model(tail_scale=0.1), resumed, ckpt_path=ckpt.last_model_path
    )
    torch.testing.assert_close(resumed.priority_sampler.scores, scores)  # nothing left to train
    with pytest.raises(ValueError, match="data.priority"):
        TrainingDataModule(str(tiny_dataset), halo=4, priority=2.0)


def test_land_outputs_never_reach_the_loss_or_its_gradient(tiny_dataset):
    model = small_model(tail_scale=0.1, target="log_images")
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=2, target="log_images")
    dm.setup()
    model.stats = dm.stats
    batch = next(iter(dm.train_dataloader()))
    batch["mask"] = batch["mask"].clone()
    batch["mask"][:, :3] = False  # land: no target there
    pred = model(batch["x"]).detach()
    wild = torch.where(batch["mask"], pred, 1e4).requires_grad_()  # ε² overflows on land
    loss = model._loss(wild, batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(wild.grad).all()
    assert (wild.grad[~batch["mask"]] == 0).all() and (wild.grad[batch["mask"]] != 0).any()
    torch.testing.assert_close(loss, model._loss(pred, batch))
