"""The sample-quality report of a model (issue 15): it scores exactly the faces the model draws
with the run's settings, recomputed here from the classifier and the Fréchet formula, and
``flowkit eval --samples`` writes it, reusing the run's classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowkit.cli import main
from flowkit.data import train_test_sets
from flowkit.metrics import frechet_distance, train_expression_classifier
from flowkit.metrics.sample_report import (
    CLASSIFIER_FILE,
    FLOOR_GRID,
    draw_samples,
    headline,
    sample_report,
)
from flowkit.models import Glow
from flowkit.training import TrainConfig, train


@pytest.fixture(scope="module")
def faces():
    return train_test_sets(
        "synthetic", image_size=16, channels=1, test_fraction=0.25, seed=0, synthetic_size=240
    )


def test_the_report_scores_the_faces_the_model_draws(faces, tmp_path: Path) -> None:
    train_set, test_set = faces
    torch.manual_seed(0)
    model = Glow(in_shape=(1, 16, 16), levels=2, steps=1, hidden=8, num_classes=8).eval()
    model.initialize(torch.rand(32, 1, 16, 16) - 0.5)
    classifier = train_expression_classifier(train_set, epochs=1, seed=0)
    classes = [0, 3, 5]
    sampling = {"temperature": 0.6, "guidance": 0.0, "denoise": 0.0}
    report = sample_report(
        model,
        train_set,
        test_set,
        classes,
        classifier,
        n_bits=5,
        sampling=sampling,
        seed=4,
        per_class=20,
        out_dir=tmp_path,
    )
    labels = torch.tensor(classes).repeat_interleave(20)
    drawn = draw_samples(model, labels, 5, sampling, seed=4)
    assert drawn.shape == (60, 1, 16, 16) and drawn.dtype == np.uint8
    # Every face is on the 5-bit grid of the real faces' preprocessing.
    assert np.all(drawn % 8 == 0)
    predicted = classifier.predict(drawn).numpy()
    assert report["model"]["recognised_share"] == pytest.approx(
        np.mean(predicted == labels.numpy())
    )
    wanted = np.isin(test_set.labels, classes)
    real = test_set.images[wanted]
    assert report["model"]["frechet_distance"] == pytest.approx(
        frechet_distance(classifier, real, drawn), rel=1e-6
    )
    assert report["sampling"] == sampling
    assert (tmp_path / "sample_quality.json").is_file() and (
        tmp_path / "sample_quality.md"
    ).is_file()
    with Image.open(tmp_path / FLOOR_GRID) as grid:
        # One row of 16-pixel faces (drawn 2x) per expression, plus padding.
        assert 3 * 32 <= grid.height < 4 * 32
    numbers = headline(report)
    assert numbers["sample_frechet_ratio"] == pytest.approx(
        numbers["sample_frechet"] / numbers["sample_frechet_gaussian_floor"]
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step Glow run on synthetic faces, trained without the end-of-run report."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    config = TrainConfig(
        model="glow",
        model_kwargs={"levels": 1, "steps": 1, "hidden": 4},
        image_size=16,
        synthetic_size=120,
        steps=2,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        quality_metrics=False,
        tensorboard=False,
        device="cpu",
        temperature=0.5,
        out=str(out),
    )
    train(config, progress=False, log=lambda _m: None)
    return out


def test_eval_samples_writes_the_report_and_reuses_the_run_classifier(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny_run
    report_dir = tmp_path / "report"
    args = ["eval", "--model", str(out), "--samples", "--json", "--out", str(report_dir)]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    # The run's own settings: its temperature, and the default guidance and denoising.
    assert first["sampling"] == {"temperature": 0.5, "guidance": 2.0, "denoise": 0.05}
    assert first["model"]["n_generated"] == 8 * 128  # every synthetic expression
    judge = out / CLASSIFIER_FILE
    stamp = judge.stat().st_mtime_ns
    assert main([*args, "--temperature", "0.9"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert judge.stat().st_mtime_ns == stamp  # the same judge, not a new one
    assert second["sampling"]["temperature"] == 0.9
    assert second["model"]["real_accuracy"] == first["model"]["real_accuracy"]
    assert second["model"]["frechet_distance"] != first["model"]["frechet_distance"]
    assert (report_dir / "sample_quality.md").read_text().count("Gaussian floor") >= 1


def test_the_sweep_benchmark_prints_a_row_per_setting(tiny_run: Path) -> None:
    from benchmarks.sample_sweep import main as sweep

    result = sweep([str(tiny_run), "--settings", "0.5,0,0", "1.0,2,0", "--per-class", "8"])
    assert [row["sampling"]["guidance"] for row in result["rows"]] == [0.0, 2.0]
    assert result["table"].count("\n") == 3  # header, rule and two rows
    saved = json.loads((tiny_run / "sweep" / "sweep.json").read_text())
    assert saved["rows"][1]["sample_frechet"] == result["rows"][1]["sample_frechet"]
    assert (tiny_run / "sweep" / "T1_g2_d0" / "samples.png").is_file()
