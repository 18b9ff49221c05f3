"""The pair-consistency term of training (flowkit.training.pairs): which pairs, drawn how, and
what the objective adds, against brute force and a hand-written loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from flowkit.data import EmotionSet, preprocess
from flowkit.data.synthetic import synthetic_emotion_set
from flowkit.errors import ConfigError
from flowkit.models import BPLF
from flowkit.training import TrainConfig, train
from flowkit.training.config import load_config
from flowkit.training.pairs import PairBatches, same_person_pairs
from flowkit.training.step import Objective


def _set(subjects, labels) -> EmotionSet:
    n = len(labels)
    images = np.arange(n, dtype=np.uint8).repeat(16).reshape(n, 1, 4, 4)
    return EmotionSet(images=images, labels=np.asarray(labels), subjects=np.asarray(subjects))


def test_pairs_are_same_person_different_expression():
    subjects = ["a", "a", "a", "b", "b", "c", "", ""]
    labels = [0, 0, 3, 1, 1, 2, 0, 4]
    expected = {
        (i, j)
        for i, j in itertools.combinations(range(len(labels)), 2)
        if subjects[i] and subjects[i] == subjects[j] and labels[i] != labels[j]
    }
    got = {tuple(p) for p in same_person_pairs(np.asarray(subjects), np.asarray(labels))}
    assert got == expected == {(0, 2), (1, 2)}
    assert same_person_pairs(None, np.asarray(labels)).shape == (0, 2)


def test_pair_batches_are_deterministic_and_match_their_labels():
    data = _set(["a", "a", "b", "b", "b"], [0, 3, 1, 2, 2])
    batches = PairBatches(data, pair_batch=6, seed=1)
    images, labels = batches.get(5)
    again, _ = PairBatches(data, pair_batch=6, seed=1).get(5)
    assert torch.equal(images, again)
    assert not torch.equal(images, batches.get(6)[0])
    rows = images[:, 0, 0, 0].long()  # each image's value is its row
    assert torch.equal(labels, torch.as_tensor(data.labels)[rows])
    a, b = rows[:6], rows[6:]
    subjects = np.asarray(data.subjects)
    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        assert subjects[i] == subjects[j] and data.labels[i] != data.labels[j]


def test_pair_batches_need_pairs():
    with pytest.raises(ConfigError, match="subject"):
        PairBatches(_set(["a", "b"], [0, 1]), pair_batch=2, seed=0)


def test_objective_adds_the_weighted_squared_latent_difference():
    torch.manual_seed(0)
    model = BPLF(in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, num_classes=3, class_context=True)
    x = torch.rand(6, 1, 8, 8) - 0.5
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    model.initialize(x, y)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pair_x, pair_y = torch.rand(4, 1, 8, 8) - 0.5, torch.tensor([0, 1, 2, 2])
    objective = Objective(model, n_bits=5, pair_weight=0.7)
    got = objective(x, y, pair_x, pair_y)
    # By hand: bits/dim over all eight faces, then standardised latents of the pairs.
    bpd = model.bits_per_dim(torch.cat([x, pair_x]), torch.cat([y, pair_y]), n_bits=5).mean()
    z, _ = model(pair_x, pair_y)
    levels = model.unflatten_latents(z)
    top = levels[-1].reshape(4, -1)
    mean, log_scale = model.prior.mean[pair_y], model.prior.log_scale[pair_y]
    levels[-1] = ((top - mean) * torch.exp(-log_scale)).reshape(levels[-1].shape)
    eps = model.flatten_latents(levels)
    expected = bpd + 0.7 * (eps[:2] - eps[2:]).pow(2).mean()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    plain = Objective(model, n_bits=5)(x, y)
    torch.testing.assert_close(plain, model.bits_per_dim(x, y, n_bits=5).mean())


def test_config_validates_pair_settings():
    with pytest.raises(ConfigError, match="pair_weight"):
        TrainConfig(pair_weight=-1.0)
    with pytest.raises(ConfigError, match="pair_weight"):
        TrainConfig(pair_weight=float("inf"))
    with pytest.raises(ConfigError, match="pair_batch"):
        TrainConfig(pair_batch=0)


def test_pair_training_pulls_same_person_latents_together():
    """A few steps with a large pair weight shrink the pair term on training pairs (and a run
    without it does not): the term reaches the gradients."""
    faces = synthetic_emotion_set(n_identities=6, size=16, seed=0)

    def pair_distance(weight: float) -> float:
        config = TrainConfig(
            model_kwargs=dict(levels=2, steps=1, hidden=8, class_context=True),
            image_size=16,
            steps=15,
            batch_size=16,
            lr=3e-3,
            warmup_steps=0,
            pair_weight=weight,
            pair_batch=8,
            out=None,
            quality_metrics=False,
            tensorboard=False,
            eval_every=0,
            sample_every=0,
            checkpoint_every=0,
        )
        result = train(config, train_set=faces, test_set=faces, progress=False)
        # The final reconstruction check runs under the labels (every block sees the class).
        assert result.metrics["reconstruction_max_abs_error"] < 1e-3
        model = result.model.eval()
        pairs = same_person_pairs(faces.subjects, faces.labels)
        x = preprocess(faces.images, 5, dequantize=False)
        y = torch.as_tensor(faces.labels)
        with torch.no_grad():
            z, _ = model(x, y)
            eps = model.standardize_latents(z, y)
        return float((eps[pairs[:, 0]] - eps[pairs[:, 1]]).pow(2).mean())

    assert pair_distance(20.0) < 0.8 * pair_distance(0.0)


def test_the_transfer_recipe_is_a_valid_pair_trained_class_context_config():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "examples" / "configs" / "transfer_ckplus.toml"
    config = load_config(recipe)
    assert config.pair_weight > 0 and config.model_kwargs["class_context"] is True
    assert config.test_fraction == 0.2 and config.data.endswith("ckplus48.npz")
