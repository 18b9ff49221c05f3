"""The speed benchmark (benchmarks/run.py): its conditioner-only replay and its smoke mode."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.run import Runner, conditioner_calls, conditioner_work, data_batch, replay

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(model="glow", shape=[1, 8, 8], levels=2, steps=2, hidden=8)


@pytest.mark.parametrize("variant", ["nflows", "strict", "fast"])
def test_conditioner_replay_sees_every_coupling_and_reproduces_its_output(variant):
    torch.manual_seed(0)
    runner = Runner(variant, SPEC, data_batch(4, (1, 8, 8)))
    runner.train_step()  # move the zero-initialised output layers off zero
    outputs = []
    hooks = []
    for module in runner.model.modules():
        for attr in ("conditioner", "transform_net"):
            net = getattr(module, attr, None)
            if isinstance(net, torch.nn.Module):
                hooks.append(net.register_forward_hook(lambda m, a, out: outputs.append(out)))
    calls = conditioner_calls(runner)
    for h in hooks:
        h.remove()
    couplings = 2 * 2  # levels x steps; flowkit adds its learned split prior's conditioner
    assert len(calls) == couplings + (variant != "nflows")
    assert len(outputs) == len(calls)
    with torch.no_grad():
        for (net, args), expected in zip(calls, outputs, strict=True):
            again = replay(runner, net, args)
            assert torch.equal(again, expected.float())
            assert again.abs().max() > 0


def test_conditioner_work_runs_forward_and_backward():
    runner = Runner("fast", SPEC, data_batch(4, (1, 8, 8)))
    work = conditioner_work(runner)
    params = [
        p
        for m in runner.model.modules()
        if hasattr(m, "conditioner")
        for p in m.conditioner.parameters()
    ]
    seen = []
    for p in params:
        p.register_hook(lambda g: seen.append(g.abs().sum()))
    work["forward"]()
    assert not seen  # forward only: no gradients
    work["train"]()
    assert len(seen) == len(params) and any(s > 0 for s in seen)
    # ... and none left behind on the model, whose own training step is timed next to it.
    assert all(p.grad is None for p in params)


@pytest.mark.slow
def test_quick_benchmark_writes_a_report(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--models",
            "glow",
            "--no-memory",
            "--out",
            str(out),
            "--markdown",
            str(tmp_path / "report.md"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    variants = results["timing"]["glow 1x8x8"]["variants"]
    for name in ("nflows", "strict", "fast"):
        res = variants[name]
        for key in ("train_step_s", "sample_images_per_s", "conditioners_train_s"):
            assert math.isfinite(res[key]) and res[key] > 0
        # The forward replay is part of the forward+backward replay.
        assert res["conditioners_forward_s"] < res["conditioners_train_s"]
    assert "ceiling from the bf16 conditioners alone" in proc.stdout
    # The trainer's defaults are timed too: a tiny 8x8 Glow is below the size where "auto"
    # chooses bf16, so the trainer keeps fp32 for it.
    default = variants["train-default"]
    assert math.isfinite(default["train_step_s"]) and default["precision_choice"] == "fp32"
    assert "`flowkit train` defaults (fp32) vs nflows: training" in proc.stdout
    # The Markdown report shows its chart, written beside it.
    assert "![Speed-ups over nflows](report.png)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
