"""``benchmarks/time_to_bpd.py`` (issue #18): the time until a test bits/dim is reached, for
flowkit's Glow with the trainer's default precision against the nflows build and a FrEIA-style
soft-clamped coupling. Its crossing rule, the contestants' densities and its smoke mode."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import time_to_bpd

ROOT = Path(__file__).resolve().parents[1]


def _curve(*points: tuple[float, float]) -> list[dict[str, float]]:
    return [dict(seconds=s, steps=i, test_bpd=b) for i, (s, b) in enumerate(points)]


def test_time_to_a_threshold_interpolates_the_first_crossing():
    curve = _curve((0, 5.0), (10, 4.0), (20, 3.0), (30, 3.5), (40, 2.0))
    # 3.5 is crossed between 10 s (4.0) and 20 s (3.0): halfway.
    assert time_to_bpd.time_to(curve, 3.5) == pytest.approx(15.0)
    assert time_to_bpd.time_to(curve, 3.0) == pytest.approx(20.0)
    assert time_to_bpd.time_to(curve, 2.5) == pytest.approx(30 + 10 * (3.5 - 2.5) / 1.5)
    assert time_to_bpd.time_to(curve, 6.0) == 0.0  # reached before training
    assert time_to_bpd.time_to(curve, 1.0) is None
    assert time_to_bpd.bpd_at_step(curve, 2) == 3.0


def test_freia_soft_clamp_is_its_closed_form():
    h = torch.tensor([-1e6, -2.0, 0.0, 1.0, 1e6], dtype=torch.float64)
    expected = [math.exp(2 * 0.636 * math.atan(v / 2)) for v in (-1e6, -2.0, 0.0, 1.0, 1e6)]
    assert time_to_bpd.soft_clamp(h).tolist() == pytest.approx(expected, rel=1e-12)
    # Bounded like FrEIA's e^(±0.636·c·π/2) with c = 2.
    assert float(time_to_bpd.soft_clamp(h)[-1]) == pytest.approx(
        math.exp(0.636 * math.pi), rel=1e-5
    )


def test_the_softclamp_contestant_starts_as_a_volume_preserving_map():
    """With its zero-initialised conditioners FrEIA's scale is exactly 1 (nflows' own is
    sigmoid(2) + 1e-3), and the rest of the untrained build (squeezes, identity ActNorms in
    eval mode, orthogonal 1x1 convolutions) preserves volume and the standard normal: its
    density is the standard normal's of the image itself, a closed form."""
    cfg = time_to_bpd.Config(image_size=8, levels=2, steps=1, hidden=4)
    plain, soft = time_to_bpd.build("nflows", cfg), time_to_bpd.build("freia-softclamp", cfg)
    plain.eval(), soft.eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    log_normal = -0.5 * (x.double() ** 2).flatten(1).sum(1) - 32 * math.log(2 * math.pi)
    expected = -log_normal / (64 * math.log(2)) + 5
    with torch.no_grad():
        torch.testing.assert_close(soft.bits_per_dim(x, 5).double(), expected, rtol=0, atol=1e-5)
        # nflows' own scale contracts at the start: another density.
        assert (plain.bits_per_dim(x, 5).double() - expected).abs().min() > 1e-2


@pytest.mark.slow
def test_quick_run_reports_each_contestants_time_as_a_ratio(tmp_path):
    out = tmp_path / "t.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.time_to_bpd", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads(out.read_text())
    rows = {r["contestant"]: r for r in results["rows"]}
    assert list(rows) == list(time_to_bpd.CONTESTANTS)
    threshold = results["threshold_bpd"]
    reference = rows["nflows"]
    assert reference["ratio_to_nflows"] == pytest.approx(1.0)
    assert time_to_bpd.bpd_at_step(reference["curve"], results["config"]["reference_steps"]) == (
        threshold
    )
    for name, row in rows.items():
        assert row["curve"][0]["steps"] == 0 and 0 < row["curve"][-1]["test_bpd"] < 8, name
        if row["seconds_to_threshold"] is not None:
            assert row["ratio_to_nflows"] == pytest.approx(
                row["seconds_to_threshold"] / reference["seconds_to_threshold"]
            )
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| flowkit |" in out.with_suffix(".md").read_text()
