"""Run every method on every transfer of a held-out set and score it with independent judges.

    from flowkit.metrics.transfer import run_transfer_benchmark
    report = run_transfer_benchmark(model, train_set, test_set, n_bits=5)
    print(report.markdown())
    report.save("runs/ck/transfer")          # report.json, report.md, grid.png

The judges are trained here, on the training subjects only: a small expression CNN
(:func:`flowkit.metrics.train_expression_classifier`) and a Fisherfaces identifier
(:class:`flowkit.metrics.identity.IdentityEmbedding`); neither sees the judged flow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from flowkit.data import EmotionSet, preprocess
from flowkit.metrics.classifier import ExpressionClassifier, train_expression_classifier
from flowkit.metrics.identity import IdentityEmbedding
from flowkit.metrics.transfer.methods import TransferMethod, baseline_methods, flow_methods
from flowkit.metrics.transfer.report import TransferReport
from flowkit.metrics.transfer.scores import Judges, score_edits, score_real_targets
from flowkit.metrics.transfer.tasks import TransferTasks, transfer_tasks

__all__ = ["run_transfer_benchmark", "score_methods"]


def _faces(data: EmotionSet, n_bits: int) -> Tensor:
    return preprocess(data.images, n_bits, dequantize=False)


def score_methods(
    methods: Sequence[TransferMethod],
    tasks: TransferTasks,
    judges: Judges,
    references: Tensor,
    batch_size: int = 256,
    progress: Callable[[str], object] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Tensor]]:
    """Edit every transfer with every method; ``(scores per method, edited faces per method)``.

    ``references`` ``(T, C, H, W)``: the reference face of each transfer.
    """
    x = judges.faces[tasks.source]
    source = torch.from_numpy(tasks.source_label)
    target = torch.from_numpy(tasks.target_label)
    scores, edited = {}, {}
    for method in methods:
        if progress is not None:
            progress(f"transfer benchmark: {method.name} ({len(tasks)} edits)")
        out = torch.cat(
            [
                method.edit(
                    x[i : i + batch_size],
                    source[i : i + batch_size],
                    target[i : i + batch_size],
                    references[i : i + batch_size],
                ).float()
                for i in range(0, len(tasks), batch_size)
            ]
        )
        edited[method.name] = out
        scores[method.name] = score_edits(out, tasks, judges)
    return scores, edited


def run_transfer_benchmark(
    model: nn.Module | None,
    train_set: EmotionSet,
    test_set: EmotionSet,
    *,
    n_bits: int = 5,
    methods: Sequence[TransferMethod] | None = None,
    classifier: ExpressionClassifier | None = None,
    max_tasks: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    classifier_epochs: int = 20,
    progress: Callable[[str], object] | None = None,
) -> TransferReport:
    """Benchmark expression transfer on held-out subjects against the one-line baselines.

    Args:
        model: the flow to judge (None: baselines only); its methods come from
            :func:`~flowkit.metrics.transfer.methods.flow_methods` unless ``methods`` is given.
        train_set: the faces the model was trained on (baselines and judges are fitted on them).
        test_set: held-out subjects with ids (see :func:`transfer_tasks`).
        n_bits: the model's bit depth; every face is compared at it.
        methods: extra or replacement methods (the baselines are always added).
        classifier: the expression judge (default: trained here on ``train_set``).
        max_tasks: cap on the number of transfers (a seeded subset of whole faces).
        seed: references, subset, judge training and bootstrap.
        classifier_epochs: epochs of the judge when it is trained here.
        progress: called with a line per stage.
    """
    say = progress or (lambda line: None)
    tasks = transfer_tasks(test_set, train_set, seed=seed, max_tasks=max_tasks)
    train_faces, test_faces = _faces(train_set, n_bits), _faces(test_set, n_bits)
    train_labels = torch.as_tensor(np.asarray(train_set.labels, dtype=np.int64))
    if classifier is None:
        say(f"transfer benchmark: training the expression judge on {len(train_set)} faces")
        # The judge sees the faces at the bit depth of the model, as it will see the edits.
        classifier = train_expression_classifier(
            (train_faces, train_labels), epochs=classifier_epochs, seed=seed
        )
    say("transfer benchmark: fitting the identity judge (Fisherfaces)")
    judges = Judges(
        faces=test_faces,
        subjects=np.asarray(test_set.subjects).astype(str),
        labels=np.asarray(test_set.labels, dtype=np.int64),
        classifier=classifier,
        identity=IdentityEmbedding.fit(train_faces, np.asarray(train_set.subjects).astype(str)),
    )
    references = torch.stack(
        [test_faces[r] if r >= 0 else train_faces[-1 - r] for r in tasks.reference]
    )
    all_methods = list(baseline_methods(train_faces, train_labels))
    if methods is not None:
        all_methods += list(methods)
    elif model is not None:
        candidates = sorted(int(c) for c in np.unique(train_labels.numpy()))
        say("transfer benchmark: encoding the training faces")
        all_methods += flow_methods(model, train_faces, train_labels, candidates, batch_size)
    scores, edited = score_methods(all_methods, tasks, judges, references, progress=say)
    return TransferReport.build(
        methods=all_methods,
        scores=scores,
        real=score_real_targets(tasks, judges),
        tasks=tasks,
        edited=edited,
        faces=test_faces,
        references=references,
        n_bits=n_bits,
        seed=seed,
    )
