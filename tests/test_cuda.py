"""The CUDA path: a training step with bf16 autocast conditioners, sampling and the inverse on a
GPU. Every test skips where torch sees no CUDA GPU (CI never has one); ``benchmarks/gpu.sh``
is also run here, where it must say that no GPU is present and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowkit import performance, zoo
from flowkit.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
MODELS = [
    ("glow", dict()),
    ("bplf", dict(num_classes=3)),
    ("bplf", dict(num_classes=3, class_context=True, conditioner="inception_b")),
]
# bf16 conditioners around the stream Settings choose for them (float64: exactly invertible),
# and around the float32 stream of the trainer's steps (which never invert).
BF16 = performance.Settings("bf16", channels_last=True)
BF16_TRAINING = performance.Settings("bf16", channels_last=True, stream=None)


def _model(name: str, kwargs: dict) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]:
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = zoo.build("model", name, in_shape=(1, 16, 16), levels=2, steps=2, hidden=32, **kwargs)
    model = model.to(device)
    x = torch.rand(16, 1, 16, 16, device=device) - 0.5
    y = torch.arange(16, device=device) % 3 if kwargs.get("num_classes") else None
    model.initialize(x, y)
    return model, x, y


@needs_cuda
@pytest.mark.parametrize("name, kwargs", MODELS)
def test_cuda_training_step_with_bf16_conditioners(name: str, kwargs: dict) -> None:
    model, x, y = _model(name, kwargs)
    performance.prepare(model, BF16_TRAINING)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    with performance.mode(BF16_TRAINING):
        loss = -model.log_prob(x, y).mean()
    assert loss.dtype == torch.float32 and loss.device.type == "cuda"
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@needs_cuda
@pytest.mark.parametrize("name, kwargs", MODELS)
def test_cuda_inverse_error_with_bf16_conditioners(name: str, kwargs: dict) -> None:
    model, x, y = _model(name, kwargs)
    model.eval()
    performance.prepare(model, BF16)
    with torch.no_grad(), performance.mode(BF16):
        z, logabsdet = model(x, y)
        x_back, inverse_logabsdet = model.inverse(z, y)
    assert z.device.type == "cuda" and z.dtype == torch.float64
    assert (x_back - x).abs().max() <= 1e-4
    torch.testing.assert_close(inverse_logabsdet, -logabsdet, rtol=1e-5, atol=1e-3)


@needs_cuda
def test_cuda_sampling() -> None:
    model, _x, _y = _model("bplf", dict(num_classes=3))
    performance.prepare(model, BF16)
    samples = performance.sample(model, 8, y=1, preset=BF16)
    assert samples.shape == (8, 1, 16, 16) and samples.device.type == "cuda"
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()


@needs_cuda
def test_cuda_training_run_chooses_and_records_a_precision(tmp_path: Path) -> None:
    config = TrainConfig(
        model="bplf",
        model_kwargs={"levels": 2, "steps": 1, "hidden": 32},
        image_size=16,
        synthetic_size=96,
        steps=3,
        batch_size=16,
        warmup_steps=1,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        eval_batches=1,
        samples_per_class=1,
        quality_metrics=False,
        tensorboard=False,
        device="cuda",
        out=str(tmp_path / "run"),
    )
    result = train(config, progress=False, log=lambda _m: None)
    assert result.metrics["device"].startswith("cuda")
    assert result.metrics["precision"] in ("fp32", "bf16")


def test_gpu_benchmark_script_says_so_without_a_gpu() -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU visible to torch" in done.stdout
