"""Per-transfer scores of edited faces, each from a judge that never saw the edited model:

* ``ssim``: mean SSIM to the same person's real faces of the target expression;
* ``recognised``: an expression classifier trained on the training subjects calls it the target;
* ``identity``: the Fisherfaces identifier (fitted on training subjects) finds its nearest
  held-out face among the *same* person's other faces (never the frames it was made from);
* ``artifacts``: it has at least one isolated saturated pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from flowkit.metrics.artifacts import isolated_saturated_pixels
from flowkit.metrics.classifier import ExpressionClassifier
from flowkit.metrics.identity import IdentityEmbedding
from flowkit.metrics.image import ssim_per_image
from flowkit.metrics.transfer.tasks import TransferTasks

__all__ = ["SCORES", "Judges", "score_edits", "score_real_targets"]

SCORES = ("ssim", "recognised", "identity", "artifacts")
"""Score names, in report order (higher is better for all but ``artifacts``)."""


@dataclass
class Judges:
    """What scores an edit: the held-out faces (preprocessed), their subjects and labels, an
    expression classifier and an identity embedding (both fitted on training subjects)."""

    faces: Tensor
    subjects: np.ndarray
    labels: np.ndarray
    classifier: ExpressionClassifier
    identity: IdentityEmbedding

    def excluded_matches(self, tasks: TransferTasks) -> np.ndarray:
        """``(T, N)``: the faces a transfer may not be identified by, the frames of its source
        sequence (same person, same expression: near duplicates of the source)."""
        same_person = self.subjects[None, :] == tasks.subject[:, None]
        same_expression = self.labels[None, :] == tasks.source_label[:, None]
        return same_person & same_expression


def score_edits(edited: Tensor, tasks: TransferTasks, judges: Judges) -> dict[str, np.ndarray]:
    """``{score: (T,) float64}`` for edited faces ``(T, C, H, W)`` (preprocessed floats)."""
    pairs = np.concatenate([np.full(len(t), i) for i, t in enumerate(tasks.targets)])
    answers = np.concatenate(tasks.targets)
    per_pair = ssim_per_image(edited[pairs], judges.faces[answers])
    ssim = np.bincount(pairs, weights=per_pair, minlength=len(tasks)) / np.bincount(
        pairs, minlength=len(tasks)
    )
    predicted = judges.classifier.predict(edited).cpu().numpy()
    nearest = judges.identity.nearest(edited, judges.faces, judges.excluded_matches(tasks))
    return {
        "ssim": ssim,
        "recognised": (predicted == tasks.target_label).astype(np.float64),
        "identity": (judges.subjects[nearest] == tasks.subject).astype(np.float64),
        "artifacts": (isolated_saturated_pixels(edited) > 0).astype(np.float64),
    }


def score_real_targets(tasks: TransferTasks, judges: Judges) -> dict[str, np.ndarray]:
    """The ceiling row: the judges on the real target faces themselves (recognition and
    artifacts, averaged over each transfer's targets)."""
    predicted = judges.classifier.predict(judges.faces).cpu().numpy()
    artifacts = isolated_saturated_pixels(judges.faces) > 0
    recognised = np.array(
        [np.mean(predicted[t] == tasks.target_label[i]) for i, t in enumerate(tasks.targets)]
    )
    return {
        "recognised": recognised,
        "artifacts": np.array([np.mean(artifacts[t]) for t in tasks.targets], dtype=np.float64),
    }
