"""The NSF / MAF benchmarks of issue #19: ``benchmarks/density2d.py`` (flowkit, nflows and zuko
on 2-D densities) and ``benchmarks/spline_images.py`` (nsf_glow against glow at equal CPU
time), their smoke modes end to end, and the pieces whose mistakes a table would not show
(the true densities, the "same size" of the libraries' models)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import density2d

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
HAS_ZUKO = importlib.util.find_spec("zuko") is not None


def _run(module: str, out: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def test_checkerboard_true_density_is_uniform_on_its_squares():
    x = density2d.sample_checkerboard(2000, seed=0)
    assert x.shape == (2000, 2) and np.abs(x).max() <= 4
    log_p = density2d.true_log_density("checkerboard", x)
    assert np.allclose(log_p, -math.log(32.0))  # every sample on a square of density 1/32
    # The other colour of the board, and outside it, have no mass.
    off = np.array([[-3.0, -1.0], [1.0, -1.0], [4.5, 0.0]])
    assert np.isneginf(density2d.true_log_density("checkerboard", off)).all()
    # The 8 squares are equally likely.
    squares = np.floor(x / 2).astype(int)
    _, counts = np.unique(squares, axis=0, return_counts=True)
    assert len(counts) == 8 and counts.min() > 180


def test_true_nll_moves_to_standardised_coordinates():
    data = density2d.make_dataset("moons", 1000, 1000, seed=0)
    assert abs(float(data.train.mean())) < 1e-5 and torch.allclose(
        data.train.std(0), torch.ones(2), atol=1e-3
    )
    # examples/two_moons.py's floor is 0.29 nats in make_moons' coordinates.
    raw = -density2d.true_log_density("moons", density2d.sample_moons(1000, 10_000)).mean()
    assert 0.2 < raw < 0.4
    assert data.true_nll == pytest.approx(raw - np.log(data.std).sum(), abs=1e-9)


@pytest.mark.parametrize("flow", ["maf", "maf_spline"])
def test_autoregressive_models_have_the_same_size_in_every_library(flow):
    cfg = density2d.Config(**density2d.QUICK)
    counts = {}
    for library in ["flowkit", "nflows"] + (["zuko"] if HAS_ZUKO else []):
        built = density2d.BUILDERS[library](flow, cfg, 2)
        counts[library] = density2d.parameters(built.module)
        x = torch.randn(5, 2)
        assert built.log_prob(x).shape == (5,)
    # flowkit's recipe adds one ActNorm per transform (2 x 2 values in 2-D); the MADEs are
    # the same size (nflows and zuko both count the weights their masks zero).
    assert counts["flowkit"] - counts["nflows"] == 4 * cfg.transforms
    if HAS_ZUKO:
        assert counts["zuko"] == counts["nflows"]


def test_density2d_without_zuko_skips_its_rows_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zuko", None)  # `import zuko` now raises ImportError
    threads = torch.get_num_threads()
    out = tmp_path / "d.json"
    try:
        args = ["--quick", "--datasets", "moons", "--flows", "maf", "--out", str(out)]
        assert density2d.main(args) == 0
    finally:
        torch.set_num_threads(threads)  # main() sets the benchmark's own thread count
    results = json.loads(out.read_text())
    rows = {r["library"]: r for r in results["summary"]}
    assert rows["zuko"]["note"] == "zuko is not installed: its rows are skipped"
    assert math.isfinite(rows["nflows"]["test_nll"]) and math.isfinite(rows["flowkit"]["test_nll"])
    assert "zuko is not installed" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_density2d_quick_run_reports_every_library(tmp_path):
    out = tmp_path / "density2d.json"
    proc = _run("benchmarks.density2d", out)
    results = json.loads(out.read_text())
    libraries = ["flowkit", "nflows", "zuko"]
    summary = {(r["dataset"], r["flow"], r["library"]): r for r in results["summary"]}
    assert set(summary) == {
        (d, f, lib) for d in density2d.DATASETS for f in density2d.FLOWS for lib in libraries
    }
    for (dataset, flow, library), row in summary.items():
        if library == "zuko" and not HAS_ZUKO:
            assert "not installed" in row["note"]
            continue
        assert "note" not in row, f"{dataset} {flow} {library}: {row.get('note')}"
        for key in ("test_nll", "test_nll_se", "train_s", "time_x_flowkit", "true_nll"):
            assert math.isfinite(row[key]), (dataset, flow, library, key, row[key])
        assert row["parameters"] > 0 and row["train_s"] > 0
        # No model beats the true density beyond noise: a wrong log-det or a test set drawn
        # from the training points would.
        assert row["test_nll"] > row["true_nll"] - 5 * row["test_nll_se"] - 0.05
        if library == "flowkit":
            assert row["time_x_flowkit"] == 1.0 and row["nll_minus_flowkit"] == 0.0
        else:
            assert math.isfinite(row["nll_minus_flowkit"])
    # The printed table and the Markdown one show every library and dataset.
    markdown = out.with_suffix(".md").read_text()
    for text in (proc.stdout, markdown):
        for name in [*libraries, *density2d.DATASETS, "true density"]:
            assert f"| {name} |" in text
    assert "![learned densities](density2d.png)" in markdown
    assert out.with_suffix(".png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_spline_images_quick_run_compares_at_equal_time(tmp_path):
    out = tmp_path / "spline.json"
    proc = _run("benchmarks.spline_images", out)
    results = json.loads(out.read_text())
    rows = {r["model"]: r for r in results["rows"]}
    assert set(rows) == {"nsf_glow", "glow"}
    budget = results["config"]["minutes"] * 60
    for name, row in rows.items():
        assert math.isfinite(row["test_bpd"]) and math.isfinite(row["test_bpd_se"]), name
        # 5-bit images: a model at least as good as uniform noise (5 bits/dim) after a few
        # steps, and never below zero.
        assert 0 < row["test_bpd"] < 8, name
        assert row["steps_trained"] > 0 and row["train_s"] >= budget
    # The glow's width was chosen to match nsf_glow's parameter count.
    nsf, glow = rows["nsf_glow"]["parameters"], rows["glow"]["parameters"]
    assert abs(nsf - glow) / nsf < 0.1
    assert math.isfinite(rows["nsf_glow"]["bpd_minus_glow"])
    for name in rows:
        assert (tmp_path / f"spline-{name}.png").read_bytes()[:8] == PNG
        assert f"| {name} |" in proc.stdout
