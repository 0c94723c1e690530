"""Networks with M as an input: the channel, extending a single-M network, serving a range."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import folded_fields, random_fields, small_model
from diffnorm.ml.features import (
    STEPS_REFERENCE,
    channel_kinds,
    channel_names,
    land_features,
    raw_features,
)
from diffnorm.ml.modelfile import GammaNetwork, ModelFileError, closest_shipped
from diffnorm.ml.networks import first_conv


@pytest.fixture(scope="module")
def network(tiny_checkpoint):
    return GammaNetwork.from_checkpoint(tiny_checkpoint, name="tiny")


def with_steps_input(net: GammaNetwork, step_range=(4, 8), weight: float = 0.0) -> GammaNetwork:
    """``net`` with an M channel whose first-layer weights are ``weight`` (0: it ignores M)."""
    arch = dict(net.arch, in_channels=net.arch["in_channels"] + 1)
    from diffnorm.ml.networks import build_network

    extended = build_network(**arch)
    state = net.net.state_dict()
    key = next(n for n, p in extended.named_parameters() if p is first_conv(extended).weight)
    w = torch.full_like(first_conv(extended).weight, weight)
    w[:, :-1] = state[key]
    extended.load_state_dict({**state, key: w})
    return GammaNetwork(
        net=extended,
        arch=arch,
        encoding=replace(net.encoding, steps_input=True),
        stats=net.stats.with_channels(len(net.stats.mean) + 1),
        steps=step_range[0],
        data=net.data,
        name="several-m",
        step_range=step_range,
    )


def test_the_m_channel_is_log_m_on_ocean_cells_and_last():
    f = random_fields(steps=6)
    names = channel_names("manhattan", "local", steps_input=True)
    assert names[-1] == "log_steps" and names[:-1] == channel_names("manhattan", "local")
    raw = raw_features(f, "manhattan", "local", steps_input=True)
    np.testing.assert_array_equal(raw[:-1], raw_features(f, "manhattan", "local"))
    np.testing.assert_allclose(raw[-1][f.mask], math.log(6 / STEPS_REFERENCE))
    assert np.all(raw[-1][~f.mask] == 0.0)
    assert len(channel_kinds("manhattan", True)) == len(names)
    assert land_features("manhattan", True).shape == (len(names),)


def test_a_single_m_network_extended_with_m_starts_as_it_was(network, tmp_path):
    source = tmp_path / "source.pt"
    network.save(source)
    model = small_model(steps_input=True, init_from=str(source))
    x = torch.randn(2, network.arch["in_channels"] + 1, 14, 15)
    with torch.no_grad():
        np.testing.assert_array_equal(
            model.net.eval()(x).numpy(), network.net.eval()(x[:, :-1]).numpy()
        )
    with pytest.raises(ValueError, match="not this model's"):
        small_model(steps_input=True, init_from=str(source), distance="none")


def test_a_network_for_several_m_serves_its_range_only(network, tmp_path):
    several = with_steps_input(network)
    f6 = random_fields(steps=6)
    # zero weights on the M channel: the extended network predicts what the source does
    np.testing.assert_allclose(several.predict(f6, "cpu"), network.predict(f6, "cpu"), rtol=1e-6)
    assert several.serves(4) and several.serves(8) and not several.serves(10)
    assert not several.serves(5)  # no operator has an odd M (an exported graph took it)
    assert several.steps_label == "4–8 (even)" and network.steps_label == "6"
    with pytest.raises(ModelFileError, match=r"trained for M=4–8 \(even\)"):
        several.check_fields(random_fields(steps=10))
    # the file keeps the range and the channel
    several.save(tmp_path / "s.pt")
    loaded = GammaNetwork.load(tmp_path / "s.pt")
    assert loaded.step_range == (4, 8) and loaded.encoding.steps_input
    with pytest.raises(ModelFileError, match="range of M"):
        replace(several, step_range=None)
    # the shipped choice: a model trained for the fields' M, else one serving a range; even
    # where the range model was trained on this very grid (and the other not)
    general = copy.copy(network)
    general.name = "general"
    several.data = {**network.data, "shapes": ["14x17"]}
    general.data = {**network.data, "shapes": ["64x64"]}
    assert closest_shipped(f6, [several, general], "general") is general
    assert closest_shipped(f6, [several, general]) is general
    assert closest_shipped(random_fields(steps=8), [several, general], "general") is several
    with pytest.raises(ModelFileError, match="smallest"):
        replace(several, step_range=(8, 4))
    with pytest.raises(ModelFileError, match=r"shipped: M=4–8 \(even\), 6"):
        closest_shipped(random_fields(steps=12), [several, general], "general")


@pytest.mark.parametrize("fold", ["none", "T"])
def test_the_fields_graph_of_a_network_for_several_m_is_built_for_one(network, fold, tmp_path):
    from diffnorm.ml.export import export
    from diffnorm.ml.pipeline import FieldsToGamma

    several = with_steps_input(network, weight=0.05)  # M now changes the prediction
    make = (
        (lambda m: random_fields(ny=20, nx=26, steps=m, islands=False))
        if fold == "none"
        else (lambda m: folded_fields(fold, ny=20, nx=26, steps=m, seed=3))
    )
    preds = {}
    for m in (4, 8):
        f = make(m)
        arrays = [f.mask.astype(np.float64), f.area, f.alpha_x, f.alpha_y]
        inputs = tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in arrays)
        want = several.predict(f, "cpu")
        graph = FieldsToGamma(several, f.periodic_x, f.north_fold, steps=m).eval()
        with torch.no_grad():
            got = graph(*inputs)[0].numpy()
        np.testing.assert_allclose(got[f.mask], want[f.mask], rtol=1e-5)
        ts, card = export(
            several,
            tmp_path / "f.ts",
            "torchscript",
            f.periodic_x,
            north_fold=f.north_fold,
            steps=m,
        )
        traced = torch.jit.load(str(ts))(*inputs)[0].detach().numpy()
        np.testing.assert_allclose(traced[f.mask], want[f.mask], rtol=1e-5)
        assert f'"steps": {m}' in card.read_text()
        with pytest.raises(ValueError, match="fields graph only"):
            export(several, tmp_path / "g.ts", "torchscript", graph="features", steps=m)
        preds[m] = np.where(f.mask, want, 0.0)
    assert not np.allclose(preds[4], preds[8])
    with pytest.raises(ModelFileError, match="give it"):
        FieldsToGamma(several, True)
    with pytest.raises(ModelFileError, match="not M=10"):
        FieldsToGamma(several, True, steps=10)


def test_training_on_several_m_needs_the_m_input_and_records_the_range(tmp_path):
    import lightning

    from conftest import trainer
    from diffnorm.data import generate
    from diffnorm.data.config import config_from_dict
    from diffnorm.ml.data import TrainingDataModule

    config = {
        "grid": {"name": "box", "ny": 12, "nx": 14, "periodic_x": False},
        "steps": [4, 8],
        "parameters": {"d_min": 1.2, "d_max": 2.5, "correlation_cells": 4.0},
        "splits": {"train": 4, "val": 1},
        "method": "brute",
        "seed": 5,
    }
    generate(config_from_dict(config), tmp_path / "data", workers=1)
    without = small_model()
    dm = TrainingDataModule(str(tmp_path / "data"), halo=without.halo, batch_size=2)
    with pytest.raises(ValueError, match="steps_input"):
        trainer(tmp_path, max_epochs=1).fit(without, dm)
    torch.manual_seed(0)
    model = small_model(steps_input=True)
    dm = TrainingDataModule(str(tmp_path / "data"), halo=model.halo, batch_size=2, steps_input=True)
    ckpt = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    trainer(tmp_path, max_epochs=1, callbacks=[ckpt]).fit(model, dm)
    net = GammaNetwork.from_checkpoint(ckpt.last_model_path)
    assert net.step_range == (4, 8) and net.serves(6) and net.encoding.steps_input
    assert net.to_dict()["format_version"] == 2
