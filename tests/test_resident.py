"""Training windows held on the training device (diffnorm.ml.resident, data.resident)."""

from __future__ import annotations

import math
import time
import types

import lightning
import pytest
import torch

from conftest import small_model, trainer
from diffnorm.data.dataset import pooled_split
from diffnorm.ml.data import TrainingDataModule
from diffnorm.ml.resident import encode_copies
from diffnorm.ml.sampling import UNSEEN


def test_copies_are_the_windows_then_their_symmetries_whatever_the_workers(tiny_dataset):
    lightning.seed_everything(0, verbose=False)
    dm = TrainingDataModule(str(tiny_dataset), halo=4, batch_size=2)
    dm.setup()
    train = pooled_split(str(tiny_dataset), "train")
    n = len(train)
    one = encode_copies(train, dm.enc, dm.stats, 3, seed=5)
    two = encode_copies(train, dm.enc, dm.stats, 3, seed=5, workers=2)
    assert one["x"].shape[0] == 3 * n
    for k in one:
        torch.testing.assert_close(one[k], two[k])
    for i in range(n):  # copy 0 is the window as the DataLoader path encodes it
        torch.testing.assert_close(one["x"][i], dm.sets["train"].items[i]["x"])
    turned = [
        not torch.equal(one["target"][c * n + i], one["target"][i])
        for c in (1, 2)
        for i in range(n)
    ]
    assert any(turned)  # some drawn symmetries move the target
    other = encode_copies(train, dm.enc, dm.stats, 3, seed=6)
    assert not torch.equal(other["target"], one["target"])
    with pytest.raises(ValueError, match="data.resident"):
        encode_copies(train, dm.enc, dm.stats, 0, seed=5)


def test_resident_batches_draw_every_window_once_an_epoch(tiny_dataset):
    lightning.seed_everything(0, verbose=False)
    dm = TrainingDataModule(str(tiny_dataset), halo=4, batch_size=2, resident=2, augment=0.5)
    dm.setup()
    batches = dm.train_dataloader()
    n = batches.windows
    drawn = [b for b in batches]
    assert len(drawn) == len(batches) == -(-n // 2)
    index = torch.cat([b["index"] for b in drawn])
    assert sorted(index.tolist()) == list(range(n))
    data = batches.data
    for b in drawn:  # each row is copy 0 or copy 1 of the window it names
        for row, i in enumerate(b["index"].tolist()):
            assert any(torch.equal(b["x"][row], data["x"][c * n + i]) for c in (0, 1))
    assert "train" not in dm.sets and "val" in dm.sets and dm.eval_workers == 0
    with pytest.raises(ValueError, match="data.resident"):
        TrainingDataModule(str(tiny_dataset), resident=2, crop=8)
    with pytest.raises(ValueError, match="data.resident 1 holds no transformed copy"):
        TrainingDataModule(str(tiny_dataset), resident=1, augment=0.5)
    several = TrainingDataModule("no/such/folder", resident=2)
    several.trainer = types.SimpleNamespace(world_size=2)  # DDP: refused before any reading
    with pytest.raises(ValueError, match="data.resident holds the training windows on one"):
        several.setup("fit")


def test_resident_training_scores_windows_and_is_seeded(tiny_dataset, tmp_path):
    def fit(seed):
        lightning.seed_everything(seed, verbose=False)
        model = small_model(tail_scale=0.1)
        dm = TrainingDataModule(
            str(tiny_dataset),
            halo=model.halo,
            batch_size=2,
            priority=0.7,
            resident=2,
            augment=0.5,
        )
        # under max_time the cosine also reads the clock; 30 min leaves it to the steps
        trainer(tmp_path, max_epochs=2, max_time="00:00:30:00").fit(model, dm)
        return model, dm

    a, dm = fit(0)
    assert (dm.priority_sampler.scores < UNSEEN).all()  # every window drawn, scored
    b, _ = fit(0)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_the_cosine_anneals_by_the_deadline_when_that_ends_first():
    from diffnorm.ml.deadline import Deadline
    from diffnorm.ml.lit import _cosine

    clock = Deadline(at=0.0)
    clock.share = 0.25  # a quarter of the time to the deadline spent training
    assert _cosine(1000, clock, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert _cosine(1000, clock, 500) == pytest.approx(0.5)  # the steps are further on
    assert _cosine(10, None, 5) == pytest.approx(0.5)
    assert _cosine(10, clock, 20) == 0.0


def test_a_deadline_stops_training_at_its_moment_and_keeps_the_last_weights(tiny_dataset, tmp_path):
    from diffnorm.ml.deadline import Deadline

    lightning.seed_everything(0, verbose=False)
    model = small_model()
    dm = TrainingDataModule(str(tiny_dataset), halo=model.halo, batch_size=2, resident=2)
    final = tmp_path / "final.ckpt"
    run = trainer(tmp_path, max_epochs=5, callbacks=[Deadline(time.time() - 1.0, str(final))])
    run.fit(model, dm)
    assert run.global_step == 1  # past its moment: one step, then the stop
    sched = run.lr_scheduler_configs[0].scheduler
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # annealed by the clock
    state = torch.load(final, weights_only=False)
    assert state["global_step"] == 1 and "resident" in state["datamodule_hyper_parameters"]
    assert "resident" in state["TrainingDataModule"]  # its generator, for a faithful resume
    # resumed with the same moment ahead: the killed run's training time counts against it
    again = Deadline(time.time() + 100.0)
    again._offset = 99.0
    again.on_train_start(run, model)
    assert again.time_remaining() == pytest.approx(100.0, abs=1.0)


def test_checkpoints_of_the_former_cosine_schedule_resume(tiny_dataset, tmp_path):
    lightning.seed_everything(0, verbose=False)
    dm = TrainingDataModule(str(tiny_dataset), halo=4, batch_size=2)
    model = small_model()
    run = trainer(tmp_path, max_epochs=1, enable_checkpointing=True)
    run.fit(model, dm)
    path = tmp_path / "old.ckpt"
    run.save_checkpoint(path)
    state = torch.load(path, weights_only=False)
    old = state["lr_schedulers"][0]
    old.pop("lr_lambdas")  # what a CosineAnnealingLR saved
    old |= {"T_max": 6, "eta_min": 0.0}
    torch.save(state, path)
    resumed = trainer(tmp_path, max_epochs=2)
    resumed.fit(
        small_model(), TrainingDataModule(str(tiny_dataset), halo=4, batch_size=2), ckpt_path=path
    )
    assert resumed.global_step > run.global_step
