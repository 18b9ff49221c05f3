"""The expression-transfer benchmark: its task list checked by brute force on a hand-built set,
and end-to-end runs on synthetic faces (baselines only, and a tiny class-conditional flow)
whose summary numbers are recomputed independently where that is cheap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from flowkit.data import EmotionSet, preprocess
from flowkit.data.synthetic import synthetic_emotion_set
from flowkit.errors import ConfigError
from flowkit.metrics.bootstrap import Interval
from flowkit.metrics.classifier import train_expression_classifier
from flowkit.metrics.transfer import run_transfer_benchmark, transfer_tasks
from flowkit.models import BPLF

N_BITS = 5

# --------------------------------------------------------------------------- tasks

# (subject, label) of each held-out row: A shows 0, 1, 2 (0 twice); B shows 1 and 3 (no other
# held-out person shows 3); C shows 0 and 2 (2 twice); D and E show one expression each; one
# row has no subject.
HELD_OUT = [
    ("A", 0),
    ("A", 0),
    ("A", 1),
    ("A", 2),
    ("B", 1),
    ("B", 3),
    ("C", 0),
    ("C", 2),
    ("C", 2),
    ("D", 5),
    ("", 1),
    ("E", 6),
]


def _set(rows, seed=0) -> EmotionSet:
    rng = np.random.default_rng(seed)
    n = len(rows)
    return EmotionSet(
        images=rng.integers(0, 256, size=(n, 1, 4, 4)).astype(np.uint8),
        labels=np.array([label for _, label in rows]),
        subjects=np.array([subject for subject, _ in rows]),
    )


@pytest.fixture(scope="module")
def held_out() -> EmotionSet:
    return _set(HELD_OUT)


@pytest.fixture(scope="module")
def training() -> EmotionSet:
    return _set([(f"T{i % 4}", i % 8) for i in range(16)], seed=1)


def _brute_force_pairs(data: EmotionSet) -> set[tuple[int, int]]:
    pairs = set()
    for i in range(len(data)):
        person = data.subjects[i]
        if not person:
            continue
        shown = {int(data.labels[j]) for j in range(len(data)) if data.subjects[j] == person}
        pairs |= {(i, t) for t in shown if t != data.labels[i]}
    return pairs


def _rows(tasks) -> list[tuple]:
    return [
        (int(tasks.source[k]), int(tasks.target_label[k]), int(tasks.reference[k]))
        for k in range(len(tasks))
    ]


def test_tasks_are_every_face_to_every_other_expression_of_its_subject(held_out, training):
    tasks = transfer_tasks(held_out, training, seed=0)
    pairs = list(zip(tasks.source.tolist(), tasks.target_label.tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) == len(tasks)
    expected = _brute_force_pairs(held_out)
    assert set(pairs) == expected
    assert len(expected) == 13  # by hand: A 2+2+2+2, B 1+1, C 1+1+1
    for k, (i, t) in enumerate(pairs):
        assert tasks.source_label[k] == held_out.labels[i]
        assert tasks.subject[k] == held_out.subjects[i]
        same = [
            j
            for j in range(len(held_out))
            if held_out.subjects[j] == held_out.subjects[i] and held_out.labels[j] == t
        ]
        assert sorted(tasks.targets[k].tolist()) == same


def test_references_are_another_persons_face_of_the_target(held_out, training):
    for seed in range(4):
        tasks = transfer_tasks(held_out, training, seed=seed)
        for k in range(len(tasks)):
            i, t, ref = int(tasks.source[k]), int(tasks.target_label[k]), int(tasks.reference[k])
            person = held_out.subjects[i]
            others = [
                j
                for j in range(len(held_out))
                if held_out.labels[j] == t and held_out.subjects[j] not in ("", person)
            ]
            if others:
                assert ref in others
            else:
                assert ref < 0 and training.labels[-1 - ref] == t
    # By hand: only A shows 1 besides B (the subject-less row does not count), and nobody but
    # B shows 3, so B's face of 3 gets A's row 2 and B's face of 1 a training face of 3.
    tasks = transfer_tasks(held_out, training, seed=0)
    as_dict = {(s, t): r for s, t, r in _rows(tasks)}
    assert as_dict[(5, 1)] == 2
    assert as_dict[(4, 3)] < 0 and training.labels[-1 - as_dict[(4, 3)]] == 3


def test_without_training_faces_every_reference_is_held_out(held_out, training):
    tasks = transfer_tasks(held_out, None, seed=0)
    assert (tasks.reference >= 0).all()
    pairs = set(zip(tasks.source.tolist(), tasks.target_label.tolist(), strict=True))
    # Nobody else shows 3: B's face of 1 has no reference and no transfer.
    assert pairs == _brute_force_pairs(held_out) - {(4, 3)}


def test_tasks_need_subject_ids_and_two_expressions(held_out):
    no_ids = EmotionSet(images=held_out.images, labels=held_out.labels)
    assert no_ids.subjects is None
    with pytest.raises(ConfigError):
        transfer_tasks(no_ids)
    one_each = _set([("A", 0), ("B", 1), ("C", 0), ("C", 0)])
    with pytest.raises(ConfigError):
        transfer_tasks(one_each)


def test_max_tasks_keeps_whole_faces(held_out, training):
    full = transfer_tasks(held_out, training, seed=3)
    by_face: dict[int, set] = {}
    for s, t, r in _rows(full):
        by_face.setdefault(s, set()).add((t, r))
    assert max(len(v) for v in by_face.values()) == 2
    assert transfer_tasks(held_out, training, seed=3, max_tasks=100).source.tolist() == (
        full.source.tolist()
    )
    for max_tasks in range(2, len(full)):
        subset = transfer_tasks(held_out, training, seed=3, max_tasks=max_tasks)
        assert 0 < len(subset) <= max_tasks
        kept: dict[int, set] = {}
        for s, t, r in _rows(subset):
            kept.setdefault(s, set()).add((t, r))
        for face, transfers in kept.items():
            assert transfers == by_face[face]  # all of a kept face's transfers, same references
        answers = {
            (s, t): a.tolist()
            for s, t, a in zip(full.source, full.target_label, full.targets, strict=True)
        }
        for s, t, a in zip(subset.source, subset.target_label, subset.targets, strict=True):
            assert a.tolist() == answers[(s, t)]


def test_max_tasks_below_one_face_takes_part_of_a_face(held_out, training):
    full = transfer_tasks(held_out, training, seed=3)
    one = transfer_tasks(held_out, training, seed=3, max_tasks=1)
    assert len(one) == 1
    assert (int(one.source[0]), int(one.target_label[0])) in set(
        zip(full.source.tolist(), full.target_label.tolist(), strict=True)
    )
    with pytest.raises(ConfigError):
        transfer_tasks(held_out, training, seed=3, max_tasks=0)


def test_max_tasks_fills_up_with_faces_that_still_fit(faces):
    train, test = faces
    full = transfer_tasks(test, train, seed=0)
    per_face = np.bincount(full.source)
    size = int(per_face[per_face > 0].min())
    # Room for exactly two faces: the greedy pass must not stop at the first face that
    # does not fit, so it always finds two whole faces.
    subset = transfer_tasks(test, train, seed=0, max_tasks=2 * size)
    assert len(np.unique(subset.source)) == 2
    assert len(subset) == 2 * size


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def faces():
    data = synthetic_emotion_set(n_identities=8, size=16, seed=0)
    train, test = data.split(test_fraction=0.3, seed=0)
    assert len(set(train.subjects) & set(test.subjects)) == 0
    return train, test


@pytest.fixture(scope="module")
def baseline_report(faces):
    train, test = faces
    return run_transfer_benchmark(None, train, test, n_bits=N_BITS, classifier_epochs=2)


def _unit(images: np.ndarray) -> np.ndarray:
    """uint8 faces at ``N_BITS`` bits, bin centres, in ``[0, 1)`` (the benchmark's view)."""
    step = 2 ** (8 - N_BITS)
    return ((images // step).astype(np.float64) + 0.5) / 2**N_BITS


def _mean_ssim_by_hand(edited_unit: np.ndarray, test: EmotionSet) -> float:
    """Mean over all (face, other expression of its subject) of the mean SSIM to the subject's
    real faces of that expression; ``edited_unit[i][t]`` the edit of face i to t."""
    real = _unit(test.images)
    per_task = []
    for i, t in sorted(_brute_force_pairs(test)):
        answers = np.flatnonzero((test.subjects == test.subjects[i]) & (test.labels == t))
        per_task.append(
            np.mean(
                [
                    structural_similarity(
                        edited_unit(i, t)[0], real[j, 0], data_range=1.0, win_size=7
                    )
                    for j in answers
                ]
            )
        )
    return float(np.mean(per_task))


def test_baseline_report_summary(baseline_report, faces):
    train, test = faces
    report = baseline_report
    pca_name = next(name for name in report.summary if name.startswith("PCA("))
    assert set(report.summary) == {"unedited source", "pixel mean shift", pca_name}
    assert report.info["transfers"] == len(transfer_tasks(test, train, seed=0))
    assert report.info["transfers"] == len(_brute_force_pairs(test))
    assert report.info["subjects"] == len(np.unique(test.subjects))
    assert report.info["faces"] == len(test)
    assert report.comparisons == {}  # only baselines: nothing to compare
    for name, scores in report.summary.items():
        assert set(scores) == {"ssim", "recognised", "identity", "artifacts"}
        for score, interval in scores.items():
            assert isinstance(interval, Interval)
            assert interval.low - 1e-12 <= interval.mean <= interval.high + 1e-12
            low = -1.0 if score == "ssim" else 0.0
            assert low <= interval.low and interval.high <= 1.0, (name, score)
    for interval in report.real_targets.values():
        assert 0.0 <= interval.low <= interval.high <= 1.0

    real = _unit(test.images)
    ssim_unedited = _mean_ssim_by_hand(lambda i, t: real[i], test)
    assert report.summary["unedited source"]["ssim"].mean == pytest.approx(ssim_unedited, abs=1e-9)
    # The pixel mean shift, by hand: face + mean training face of t - mean training face of s.
    train_unit = _unit(train.images)
    means = {t: train_unit[train.labels == t].mean(0) for t in np.unique(train.labels)}

    def shifted(i, t):
        moved = real[i] + means[t] - means[int(test.labels[i])]
        return np.clip(moved, 0.0, 1.0 - 1e-6)

    ssim_pixel = _mean_ssim_by_hand(shifted, test)
    assert report.summary["pixel mean shift"]["ssim"].mean == pytest.approx(ssim_pixel, abs=1e-5)


def test_baseline_report_files(baseline_report, tmp_path):
    report = baseline_report
    paths = report.save(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["info"]["transfers"] == report.info["transfers"]
    for name, scores in report.summary.items():
        for score, interval in scores.items():
            assert data["summary"][name][score] == pytest.approx(interval.as_dict())
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| method | kind | SSIM to real target |" in markdown
    assert all(f"| {name} |" in markdown for name in report.summary)

    # Columns: source, the two edits (the unedited source is the source column), real target.
    assert report.grid_columns == ["source", "pixel", "PCA", "real target"]
    rows = len(report.grid_rows)
    assert 1 <= rows <= 8
    h, w = report.grid_images.shape[2:]
    with Image.open(paths["grid"]) as grid:
        size = grid.size
    assert size == report.grid(scale=3).size
    # The labels' margins do not depend on the scale; each extra unit of scale adds one tile
    # width per column and one tile height per row.
    small, large = report.grid(scale=1).size, report.grid(scale=2).size
    assert large[0] - small[0] == len(report.grid_columns) * w
    assert large[1] - small[1] == rows * h


def test_class_conditional_flow_is_benchmarked_against_the_baselines(faces):
    train, test = faces
    torch.manual_seed(0)
    model = BPLF(
        in_shape=train.shape, levels=2, steps=1, hidden=8, num_classes=8, class_context=True
    )
    model.initialize(preprocess(train.images, N_BITS), torch.as_tensor(train.labels))
    judge = train_expression_classifier(
        (preprocess(train.images, N_BITS, dequantize=False), torch.as_tensor(train.labels)),
        epochs=1,
    )
    report = run_transfer_benchmark(
        model, train, test, n_bits=N_BITS, classifier=judge, max_tasks=20
    )
    assert 0 < report.info["transfers"] <= 20
    conditional = {"label_transfer condition", "reference_transfer condition"}
    assert conditional <= set(report.summary)
    # The latent methods run too, under the uniform class mixture.
    latent = {"label_transfer mean_shift", "reference_transfer lda"}
    assert latent <= set(report.summary)
    assert set(report.comparisons) == conditional | latent
    for name in conditional:
        assert "pixel mean shift" in report.comparisons[name]
        for score, diff in report.comparisons[name]["pixel mean shift"].items():
            # The paired difference's mean is the difference of the two means.
            expected = (
                report.summary[name][score].mean - report.summary["pixel mean shift"][score].mean
            )
            assert diff.mean == pytest.approx(expected, abs=1e-9)
    assert report.info["kinds"]["reference_transfer condition"] == "reference"
    assert report.grid_columns[-1] == "reference"
