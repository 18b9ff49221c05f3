"""Noise augmentation, score denoising, label dropout and classifier-free guidance (issue 15):
each checked against an independent reference (finite differences, the prior's closed form,
separate conditioner calls, binomial bounds)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from flowkit.cli import main
from flowkit.errors import ConfigError
from flowkit.guidance import drop_labels, guidance, guided_call
from flowkit.models import Glow
from flowkit.testing import perturb_parameters
from flowkit.training import TrainConfig, train
from flowkit.training.batches import training_input


def _model(class_context: bool, dtype: torch.dtype = torch.float64) -> Glow:
    """A small class-conditional Glow with every weight moved off its identity start."""
    torch.manual_seed(0)
    model = Glow(
        in_shape=(1, 8, 8), levels=2, steps=1, hidden=8, num_classes=3, class_context=class_context
    ).to(dtype)
    g = torch.Generator().manual_seed(1)
    model.initialize((torch.rand(16, 1, 8, 8, generator=g) - 0.5).to(dtype))
    perturb_parameters(model, 0.05, g)
    return model.eval()


def test_guided_call_is_the_extrapolated_mix_of_two_separate_calls() -> None:
    net = torch.nn.Bilinear(4, 3, 5).double()  # nonlinear in the pair, like a conditioner

    def conditioner(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.tanh(net(x, c))

    x = torch.randn(6, 4, dtype=torch.float64)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).double()
    conditional, unconditional = conditioner(x, c), conditioner(x, torch.zeros_like(c))
    expected = conditional + 1.5 * (conditional - unconditional)
    assert torch.allclose(guided_call(conditioner, x, c, 1.5), expected, atol=1e-12)


def test_guided_sampling_is_an_exact_inverse_of_the_guided_flow() -> None:
    """Guidance changes the conditioners, not invertibility: encoding a guided sample under the
    same guidance returns the latents it was decoded from."""
    model = _model(class_context=True)
    y = torch.tensor([0, 1, 2, 1])
    latents = model.sample_latents(4, y, 1.0, torch.Generator().manual_seed(3))
    with torch.no_grad(), guidance(2.0):
        x = model.decode(latents, y)
        back = model.encode(x, y)
    plain = model.decode(latents, y)
    for a, b in zip(latents, back, strict=True):
        assert torch.allclose(a, b, atol=1e-9)
    assert (plain - x).abs().max() > 1e-3  # and guidance really changed the sample


def test_guided_prior_mixes_class_and_null_means_and_log_scales() -> None:
    """With the class only in the prior, guided sampling decodes the top latent
    ``(1+w) mu_y + T exp((1+w) log_sigma_y) eps`` (the null prior is N(0, I))."""
    model = _model(class_context=False)
    with torch.no_grad():
        model.prior.mean.normal_(0, 0.5)
        model.prior.log_scale.normal_(0, 0.2)
    y, w, t = torch.tensor([2, 0, 1]), 0.75, 0.6
    sampled = model.sample(3, y, t, torch.Generator().manual_seed(5), guidance=w)
    # The same noise, drawn in the same order as sample_latents draws it.
    g = torch.Generator().manual_seed(5)
    level0 = t * torch.randn(3, *model.latent_shapes[0], generator=g, dtype=torch.float64)
    eps = torch.randn(3, math.prod(model.latent_shapes[-1]), generator=g, dtype=torch.float64)
    top = (1 + w) * model.prior.mean[y] + t * torch.exp((1 + w) * model.prior.log_scale[y]) * eps
    with torch.no_grad():
        expected = model.decode([level0, top.reshape(3, *model.latent_shapes[-1])], y)
    assert torch.allclose(sampled, expected, atol=1e-9)


def test_null_class_scores_with_the_standard_normal_prior() -> None:
    """A zero row of class weights is the null class: the top latent's prior is N(0, I)."""
    model = _model(class_context=False)
    with torch.no_grad():
        model.prior.mean.normal_(0, 0.5)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) - 0.5
    with torch.no_grad():
        z, logabsdet = model(x)
        latents = model.unflatten_latents(z)
        normal = torch.distributions.Normal(0.0, 1.0)
        expected = sum(normal.log_prob(t).flatten(1).sum(1) for t in latents) + logabsdet
        got = model.log_prob(x, torch.zeros(4, 3, dtype=torch.float64))
    assert torch.allclose(got, expected, atol=1e-9)


def test_drop_labels_replaces_about_the_rate_by_null_rows() -> None:
    labels = torch.randint(7, (20000,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    weights = drop_labels(labels, 8, 0.3)
    dropped = weights.sum(1) == 0
    kept = ~dropped
    # Binomial(20000, 0.3): std 64.8, so +-5 std is +-324.
    assert abs(int(dropped.sum()) - 6000) < 324
    assert torch.equal(weights[kept].argmax(1), labels[kept]) and torch.all(
        weights[kept].sum(1) == 1
    )


def test_score_matches_finite_differences_of_log_prob() -> None:
    model = _model(class_context=True)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) - 0.5
    y = torch.tensor([1, 2])
    score = model.score(x, y)
    h = 1e-6
    for index in [(0, 0, 3, 4), (1, 0, 7, 0), (0, 0, 0, 0)]:
        bump = torch.zeros_like(x)
        bump[index] = h
        with torch.no_grad():
            diff = (model.log_prob(x + bump, y) - model.log_prob(x - bump, y))[index[0]] / (2 * h)
        assert abs(float(diff) - float(score[index])) < 1e-5 * max(1.0, abs(float(diff)))


def test_denoised_samples_take_one_tweedie_step() -> None:
    model = _model(class_context=True)
    y = torch.tensor([0, 2])
    noisy = model.sample(2, y, 0.8, torch.Generator().manual_seed(7))
    clean = model.sample(2, y, 0.8, torch.Generator().manual_seed(7), denoise=0.1)
    with torch.enable_grad():
        v = noisy.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.log_prob(v, y).sum(), v)
    assert torch.allclose(clean, noisy + 0.01 * grad, atol=1e-10)


def test_noise_augmentation_adds_noise_of_the_given_std() -> None:
    images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    torch.manual_seed(0)
    plain = training_input(images, 5, False, torch.device("cpu"))
    torch.manual_seed(0)
    noisy = training_input(images, 5, False, torch.device("cpu"), noise_std=0.08)
    # The same dequantisation noise first, then N(0, 0.08^2): 16384 draws, std error ~0.6%.
    assert abs(float((noisy - plain).std()) - 0.08) < 0.08 * 0.03


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"noise_std": -0.1}, "noise_std must be in [0, 0.5]"),
        ({"noise_std": 0.9}, "noise_std must be in [0, 0.5]"),
        ({"label_dropout": 1.0}, "label_dropout must be in [0, 1)"),
        ({"guidance": -1.0}, "guidance must be a number >= 0"),
    ],
)
def test_bad_settings_are_one_line(changes: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        TrainConfig(**changes)


def test_guidance_on_an_unconditional_model_is_refused() -> None:
    model = Glow(in_shape=(1, 4, 4), levels=1, steps=1, hidden=4)
    with pytest.raises(ConfigError, match="class-conditional"):
        model.sample(2, guidance=1.0)


def test_a_noisy_run_reports_both_likelihoods_and_samples_with_guidance_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    config = TrainConfig(
        model="glow",
        model_kwargs={"levels": 1, "steps": 1, "hidden": 4, "class_context": True},
        image_size=16,
        synthetic_size=80,
        steps=4,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        quality_metrics=False,
        tensorboard=False,
        device="cpu",
        noise_std=0.05,
        label_dropout=0.5,
        guidance=1.0,
        denoise=True,
        out=str(out),
    )
    metrics = train(config, progress=False, log=lambda _m: None).metrics
    # Noisy faces are harder to predict than clean ones only by the added entropy; both finite.
    assert math.isfinite(metrics["test_bpd"]) and math.isfinite(metrics["test_bpd_noisy"])
    assert "noise" in metrics["test_bpd_noisy_means"]
    png = tmp_path / "s.png"
    args = ["sample", "--model", str(out), "-n", "2", "--guidance", "2", "--denoise"]
    assert main([*args, "--out", str(png)]) == 0
    assert png.stat().st_size > 0 and "guidance 2" in capsys.readouterr().out
    # A run trained without noise has nothing to denoise: one line, exit status 2.
    plain = tmp_path / "plain"
    train(config.replace(noise_std=0.0, out=str(plain)), progress=False)
    assert main(["sample", "--model", str(plain), "--denoise", "--out", str(png)]) == 2
    assert "trained without noise_std" in capsys.readouterr().err


def test_a_temperature_per_level_scales_each_level_alone() -> None:
    model = _model(class_context=False)
    y = torch.tensor([0, 1, 2])
    one = model.sample_latents(3, y, 0.5, torch.Generator().manual_seed(2))
    per_level = model.sample_latents(3, y, [0.0, 0.5], torch.Generator().manual_seed(2))
    assert torch.count_nonzero(per_level[0]) == 0  # level 0 at temperature 0: its mean, 0
    assert torch.equal(per_level[1], one[1])  # the same noise for the top level
    with pytest.raises(ConfigError, match="3 temperatures given for 2 latent levels"):
        model.sample(2, y=0, temperature=[0.5, 0.5, 0.5])


def test_resuming_a_run_saved_before_the_sampling_settings_keeps_how_it_trained(
    tmp_path: Path,
) -> None:
    """A run whose config.json predates noise_std, label_dropout, guidance and denoise resumes
    with the values it trained with (none of them), not with today's defaults."""
    import json

    from flowkit.cli.commands.train import train_config
    from flowkit.cli.parser import build_parser

    run = tmp_path / "old"
    run.mkdir()
    saved = TrainConfig(out=str(run)).to_dict()
    for key in ("noise_std", "label_dropout", "guidance", "denoise"):
        saved.pop(key)
    (run / "config.json").write_text(json.dumps(saved))
    args = build_parser().parse_args(["train", "--resume", "--out", str(run)])
    config = train_config(args)
    assert (config.noise_std, config.label_dropout, config.guidance, config.denoise) == (
        0.0,
        0.0,
        0.0,
        False,
    )
    assert TrainConfig().noise_std > 0  # while a new run gets the recipe
