"""``benchmarks/equal_time.py``: zoo image models trained for equal CPU time (the transformer
suite of issue #16: TarFlow and Jet against BPLF and Glow), its smoke mode end to end and the
width matching that makes the comparison one of equal size."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import equal_time

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def test_matching_width_is_the_brute_force_closest_multiple_of_the_head_count():
    cfg = equal_time.Config(suite="transformers", image_size=16, quick=True)
    args = equal_time.model_arguments(cfg)["jet"]
    target = equal_time.count(equal_time.build("tarflow", args | {"levels": 3}, cfg, 12))
    hidden, params = equal_time.matching_hidden("jet", args, cfg, target)
    heads = args["heads"]
    assert hidden % heads == 0
    brute = {
        h: equal_time.count(equal_time.build("jet", args, cfg, h)) for h in range(heads, 41, heads)
    }
    best = min(brute, key=lambda h: abs(brute[h] - target))
    assert (hidden, params) == (best, brute[best])


def test_a_suite_argument_the_model_does_not_take_is_one_clear_line():
    cfg = equal_time.Config(image_size=16)
    with pytest.raises(SystemExit, match="glow takes no argument.*patch_size"):
        equal_time.build("glow", {"patch_size": 4, "levels": 2, "steps": 1}, cfg, 8)


@pytest.mark.slow
def test_transformer_suite_quick_run_compares_four_models_at_equal_time(tmp_path):
    out = tmp_path / "eq.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.equal_time", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads(out.read_text())
    rows = {r["model"]: r for r in results["rows"]}
    assert list(rows) == ["tarflow", "jet", "bplf", "glow"]
    budget = results["config"]["minutes"] * 60
    reference = rows["tarflow"]["parameters"]
    for name, row in rows.items():
        assert 0 < row["test_bpd"] < 8 and math.isfinite(row["test_bpd_se"]), name
        assert row["steps_trained"] > 0 and row["train_s"] >= budget, name
        # Equal size: every width matched to the reference's parameter count (tiny models:
        # one width step moves the count by up to ~15%).
        assert abs(row["parameters"] - reference) / reference < 0.25, name
        # The curve starts at the initialised model and follows the model's own clock.
        seconds = [p["seconds"] for p in row["curve"]]
        assert row["curve"][0]["steps"] == 0 and seconds == sorted(seconds), name
        assert row["curve"][-1]["steps"] == row["steps_trained"], name
        assert (tmp_path / f"eq-{name}.png").read_bytes()[:8] == PNG
        assert f"| {name} |" in proc.stdout
        if name != "bplf":
            assert math.isfinite(row["bpd_minus_bplf"]), name
    assert (tmp_path / "eq-curves.png").read_bytes()[:8] == PNG
    assert "![curves](eq-curves.png)" in out.with_suffix(".md").read_text()


def test_a_subset_of_models_keeps_the_reference_and_each_may_have_its_own_rate():
    cfg = equal_time.Config(suite="transformers", models="tarflow, bplf", model_lr="tarflow=3e-4")
    names = list(equal_time.model_arguments(cfg))
    assert names == ["tarflow", "bplf"]
    assert equal_time.learning_rates(cfg, names) == {"tarflow": 3e-4, "bplf": cfg.lr}
    with pytest.raises(SystemExit, match="keep the reference tarflow"):
        equal_time.model_arguments(equal_time.Config(suite="transformers", models="bplf,glow"))
    with pytest.raises(SystemExit, match="--model-lr: 'jet' is not one of tarflow, bplf"):
        equal_time.learning_rates(equal_time.Config(model_lr="jet=1e-4"), names)
