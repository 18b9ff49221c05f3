r"""Sample quality of a generative model, every number beside a floor.

All measures live in the feature space of flowkit's expression classifier
(:class:`~flowkit.metrics.ExpressionClassifier`, pooled features ``phi(x)`` in ``R^F``),
trained on real faces. Each image set is embedded once (:func:`embed`: features and predicted
labels); the metric arithmetic is float64 NumPy.

Measures (``R`` = real test faces, ``N`` of them; ``G`` = generated faces, ``M`` of them):

``frechet_distance``
    ``|mu_R - mu_G|² + tr(S_R) + tr(S_G) - 2 tr((S_R^{1/2} S_G S_R^{1/2})^{1/2})`` between
    Gaussian fits of the two feature sets (Heusel et al., NeurIPS 2017; see
    :mod:`flowkit.metrics.frechet`). FID-like, comparable only between runs judged by the same
    classifier, and biased upwards for small ``N``, ``M``: compare numbers at equal counts.
``recognised_share``
    ``(1/M) sum_j 1[classifier(g_j) == requested label of g_j]``: how often a class-conditional
    sample shows the expression it was asked for.
``real_accuracy``
    ``(1/N) sum_i 1[classifier(r_i) == label of r_i]``: the same classifier on real test faces,
    the ceiling the share is read against.
``recognised_ratio``
    ``recognised_share / real_accuracy`` (1 = samples recognised as often as real faces).
``precision``, ``recall``
    Kynkäänniemi, Karras, Laine, Lehtinen & Aila, "Improved precision and recall metric for
    assessing generative models", NeurIPS 2019. Each point's radius is the distance to its
    ``k``-th nearest neighbour within its own set (``NND_k``, default ``k = 3``); the union of
    those balls estimates the set's manifold::

        precision = (1/M) sum_j 1[ exists i: |g_j - r_i| <= NND_k(r_i) ]   (samples on real)
        recall    = (1/N) sum_i 1[ exists j: |r_i - g_j| <= NND_k(g_j) ]   (reals on samples)

    Precision is the share of samples that look real (fidelity), recall the share of real
    faces the samples can produce (diversity). ``<=`` as in the authors' implementation.
``density``, ``coverage``
    Naeem, Oh, Uh, Choi & Yoo, "Reliable fidelity and diversity metrics for generative
    models", ICML 2020; balls around real points only, so outlying samples cannot inflate them::

        density  = 1/(k M) sum_j sum_i 1[ |g_j - r_i| <= NND_k(r_i) ]   (about 1 for a match)
        coverage = (1/N)   sum_i 1[ exists j: |g_j - r_i| <= NND_k(r_i) ]

    (Their code uses ``<``; the two differ only at exact ties.)

All four k-NN measures depend on ``N``, ``M`` and ``k``; the papers use ``N = M``.

Intervals are 95 % percentile bootstrap intervals (Efron & Tibshirani 1993): generated images
are resampled with replacement, and real test images too (by subject when ``real_groups`` is
given, as in :func:`flowkit.metrics.bootstrap.group_bootstrap`). The Fréchet distance and the
ratio of two of them are biased upwards in small samples, and a bootstrap draw (which repeats
images) more so: their intervals are shifted by the bootstrap bias estimate ``mean(FD*) - FD``
(Efron & Tibshirani 1993, ch. 10) and clipped at 0. They show the sampling spread; they do not
remove the bias of the point value itself. Precision, recall, density and coverage
get no interval (their radii would have to be recomputed per replicate).

:func:`compare_with_floor` computes everything for the model's samples and for as many samples,
with the same labels, of a full-covariance Gaussian fitted to the training faces
(:class:`~flowkit.metrics.GaussianSampler`), plus ``frechet_ratio = FD_model / FD_floor``;
:func:`quality_table` renders it as markdown and :func:`save_quality_report` writes both.

Example::

    from flowkit.metrics import compare_with_floor, quality_table, train_expression_classifier

    clf = train_expression_classifier(train_set, epochs=12, test_set=test_set)
    report = compare_with_floor(
        clf, test_set.images, test_set.labels, samples_u8, requested_labels,
        train_images=train_set.images, train_labels=train_set.labels, n_bits=5,
    )
    print(quality_table(report))          # metric | model | Gaussian floor | model vs floor
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from flowkit.data.labels import EMOTIONS, LabelLike, as_labels
from flowkit.metrics.bootstrap import Interval
from flowkit.metrics.classifier import ExpressionClassifier
from flowkit.metrics.frechet import frechet_distance_from_features, frechet_distance_from_stats
from flowkit.metrics.gaussian_sampler import GaussianSampler
from flowkit.modes import eval_mode

__all__ = [
    "Embedding",
    "FeatureClassifier",
    "compare_with_floor",
    "embed",
    "knn_radii",
    "precision_recall",
    "quality_table",
    "sample_quality",
    "save_quality_report",
]

ImagesLike = np.ndarray | Tensor
"""Images ``(N, C, H, W)``: uint8 (0..255) or preprocessed floats, as the classifier takes."""

#: The issue's targets: FD at most half the floor's; share at least 0.7 x real accuracy.
FRECHET_RATIO_TARGET = 0.5
RECOGNISED_RATIO_TARGET = 0.7


@runtime_checkable
class FeatureClassifier(Protocol):
    """What the report needs of a classifier (duck-typed; :class:`ExpressionClassifier` fits).

    ``features(images, batch_size=...)`` -> ``(N, F)`` features; ``predict(images,
    batch_size=...)`` -> ``(N,)`` integer labels (indices into :data:`flowkit.data.EMOTIONS`).
    """

    def features(self, x: Any, batch_size: int = 256) -> Tensor | np.ndarray: ...

    def predict(self, x: Any, batch_size: int = 256) -> Tensor | np.ndarray: ...


@dataclass
class Embedding:
    """An image set seen by the classifier once: float64 features and predicted labels.

    ``knn_radii(k)`` (the ``NND_k`` of each point in its own set) is computed on first use and
    cached, so the real test set's radii serve the model and the floor alike.
    """

    features: np.ndarray
    predictions: np.ndarray
    _radii: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float64)
        self.predictions = np.asarray(self.predictions, dtype=np.int64).reshape(-1)
        if self.features.ndim != 2 or len(self.features) != len(self.predictions):
            raise ValueError(
                f"features (N, F) and predictions (N,) must agree, got "
                f"{self.features.shape} and {self.predictions.shape}"
            )

    def __len__(self) -> int:
        return len(self.features)

    def knn_radii(self, k: int) -> np.ndarray:
        """``(N,)`` distance of each point to its ``k``-th nearest other point of the set."""
        if k not in self._radii:
            self._radii[k] = knn_radii(self.features, k)
        return self._radii[k]


def _numpy(a: Tensor | np.ndarray) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def embed(
    classifier: FeatureClassifier, images: ImagesLike | Embedding, batch_size: int = 256
) -> Embedding:
    """Features and predictions of ``images`` (an :class:`Embedding` is returned unchanged).

    For an :class:`ExpressionClassifier` one pass gives both (``predict`` is ``head`` applied to
    the pooled ``features``); any other classifier is called twice (``features``, ``predict``).
    """
    if isinstance(images, Embedding):
        return images
    if isinstance(classifier, ExpressionClassifier):
        feats = classifier.features(images, batch_size=batch_size)
        device = next(classifier.parameters()).device
        preds = []
        with eval_mode(classifier), torch.no_grad():
            for start in range(0, len(feats), batch_size):
                logits = classifier.head(feats[start : start + batch_size].to(device))
                preds.append(logits.argmax(dim=1).cpu())
        pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)
        return Embedding(_numpy(feats), _numpy(pred))
    feats = classifier.features(images, batch_size=batch_size)
    pred = classifier.predict(images, batch_size=batch_size)
    return Embedding(_numpy(feats), _numpy(pred))


# --------------------------------------------------------------------------------------------
# k-NN manifolds: precision, recall, density, coverage
# --------------------------------------------------------------------------------------------

_CHUNK = 1024


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(len(a), len(b))`` via ``|a|² + |b|² - 2 a.b`` (float64)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.clip(sq, 0.0, None))


def knn_radii(features: np.ndarray, k: int = 3) -> np.ndarray:
    """``NND_k``: distance of each row of ``features`` ``(N, F)`` to its ``k``-th nearest
    other row (the point itself, at distance 0, is not counted; duplicates are)."""
    f = np.asarray(features, dtype=np.float64)
    if not 1 <= k < len(f):
        raise ValueError(f"k must be in 1..N-1 = 1..{len(f) - 1}, got {k}")
    out = np.empty(len(f))
    for start in range(0, len(f), _CHUNK):
        d = _distances(f[start : start + _CHUNK], f)
        # Sorted row: index 0 is the point itself (distance 0), index k its k-th neighbour.
        out[start : start + _CHUNK] = np.partition(d, k, axis=1)[:, k]
    return out


def _balls(
    query: np.ndarray, centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query point, in how many balls ``B(centre_i, radii_i)`` it lies ``(Q,)``; for
    each centre, whether any query point lies in its ball ``(C,)``."""
    counts = np.zeros(len(query), dtype=np.int64)
    hit = np.zeros(len(centres), dtype=bool)
    for start in range(0, len(query), _CHUNK):
        inside = _distances(query[start : start + _CHUNK], centres) <= radii[None, :]
        counts[start : start + _CHUNK] = inside.sum(1)
        hit |= inside.any(0)
    return counts, hit


def _as_embedding(x: np.ndarray | Tensor | Embedding) -> Embedding:
    """Features without predictions (labels -1) as an :class:`Embedding`, for its radii cache."""
    if isinstance(x, Embedding):
        return x
    f = np.asarray(_numpy(x), dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"need features (N, F), got shape {f.shape}")
    return Embedding(f, np.full(len(f), -1, dtype=np.int64))


def precision_recall(
    real_features: np.ndarray | Tensor | Embedding,
    generated_features: np.ndarray | Tensor | Embedding,
    k: int = 3,
) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al.
    2020) of generated features ``(M, F)`` against real features ``(N, F)``.

    Formulas in the module docstring. Returns ``{"precision", "recall", "density",
    "coverage"}``, each in ``[0, 1]`` except density (``[0, N/k]``, about 1 when the two sets
    come from the same distribution).
    """
    real, gen = _as_embedding(real_features), _as_embedding(generated_features)
    r, g = real.features, gen.features
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"need features (N, F) and (M, F), got {r.shape} and {g.shape}")
    r_radii, g_radii = real.knn_radii(k), gen.knn_radii(k)
    in_real, covered = _balls(g, r, r_radii)
    in_gen, _ = _balls(r, g, g_radii)
    return {
        "precision": float((in_real > 0).mean()),
        "recall": float((in_gen > 0).mean()),
        "density": float(in_real.sum() / (k * len(g))),
        "coverage": float(covered.mean()),
    }


# --------------------------------------------------------------------------------------------
# Bootstrap helpers
# --------------------------------------------------------------------------------------------


class _Resampler:
    """Index draws with replacement: of items, or of whole groups (all their items pooled)."""

    def __init__(self, n: int, groups: np.ndarray | None):
        self.n = n
        self.members: list[np.ndarray] | None = None
        if groups is not None:
            groups = np.asarray(groups).reshape(-1)
            if len(groups) != n:
                raise ValueError(f"{len(groups)} groups for {n} items")
            _, inverse = np.unique(groups, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.cumsum(np.bincount(inverse))
            self.members = np.split(order, bounds[:-1])

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        if self.members is None:
            return rng.integers(self.n, size=self.n)
        picks = rng.integers(len(self.members), size=len(self.members))
        return np.concatenate([self.members[p] for p in picks])


def _interval(
    point: float | None, replicates: list[float], confidence: float, debias: bool = False
) -> Interval | None:
    """Percentile interval of the finite ``replicates`` around ``point``.

    ``debias``: shift the interval by the bootstrap bias estimate ``mean(replicates) - point``
    (Efron & Tibshirani 1993, ch. 10) and clip it at 0. For the Fréchet distance, a draw with
    replacement repeats images, which inflates its small-sample bias: the plain percentile
    interval of a near-zero FD lies wholly above the point value.
    """
    reps = np.asarray([v for v in replicates if np.isfinite(v)], dtype=np.float64)
    if point is None or not np.isfinite(point) or reps.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(reps, [tail, 1.0 - tail])
    if debias:
        bias = float(reps.mean()) - point
        low, high = max(low - bias, 0.0), max(high - bias, 0.0)
    return Interval(float(point), float(low), float(high))


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a / b


def _fd(r: np.ndarray, g: np.ndarray) -> float:
    return frechet_distance_from_features(r, g)


def _fd_subset(r: np.ndarray, g: np.ndarray) -> float:
    """FD of a bootstrap draw (float64 statistics; a degenerate draw gives NaN)."""
    if len(r) < 2 or len(g) < 2:
        return float("nan")
    return frechet_distance_from_stats(
        r.mean(0), np.cov(r, rowvar=False), g.mean(0), np.cov(g, rowvar=False)
    )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _name(label: int) -> str:
    return EMOTIONS[label] if 0 <= label < len(EMOTIONS) else str(label)


def _labels(labels: LabelLike | None, n: int) -> np.ndarray | None:
    return None if labels is None else as_labels(labels, n).numpy()


def sample_quality(
    classifier: FeatureClassifier,
    real_test_images: ImagesLike | Embedding,
    real_test_labels: LabelLike,
    generated: ImagesLike | Embedding,
    generated_labels: LabelLike | None = None,
    *,
    k: int = 3,
    density_coverage: bool = True,
    n_resamples: int = 1000,
    fd_resamples: int = 200,
    confidence: float = 0.95,
    real_groups: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Fréchet distance, recognised share, precision/recall (and density/coverage) of
    generated faces against real test faces, in ``classifier``'s feature space.

    Args:
        classifier: anything with ``features`` and ``predict`` (:class:`FeatureClassifier`),
            normally the :class:`ExpressionClassifier` trained on the run's training faces.
        real_test_images: uint8 test faces ``(N, C, H, W)``, or their :class:`Embedding`.
        real_test_labels: ``(N,)`` their expressions.
        generated: uint8 generated faces ``(M, C, H, W)`` (e.g. ``postprocess(samples,
            n_bits)``), or their :class:`Embedding`.
        generated_labels: the expression each sample was asked for (one or ``(M,)``);
            ``None`` for an unconditional model (no recognised share then).
        k: neighbourhood size of the k-NN manifolds (Kynkäänniemi et al. use 3).
        density_coverage: also compute Naeem et al.'s density and coverage (same distances).
        n_resamples: bootstrap replicates for the share and accuracy intervals (0: none).
        fd_resamples: bootstrap replicates for the Fréchet interval (0: none).
        confidence: interval coverage.
        real_groups: ``(N,)`` subject of each real face: resample subjects, not faces.
        seed: makes the bootstrap reproducible.
        batch_size: classifier batch size.

    Returns:
        A JSON-able dict: ``n_real``, ``n_generated``, ``k``, ``frechet_distance``,
        ``recognised_share`` (``None`` without labels), ``real_accuracy``,
        ``recognised_ratio`` (share / accuracy, ``None`` when undefined), ``precision``,
        ``recall``, ``density`` and ``coverage`` (when ``density_coverage``), ``intervals``
        (``{metric: {"mean", "low", "high"}}`` for ``frechet_distance``, ``recognised_share``,
        ``real_accuracy``, ``recognised_ratio`` where computed; ``mean`` is the point value),
        and ``per_class`` (``{emotion: {"generated", "recognised_share", "real",
        "real_accuracy"}}``).
    """
    real = embed(classifier, real_test_images, batch_size)
    gen = embed(classifier, generated, batch_size)
    n, m = len(real), len(gen)
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 real and 2 generated faces, got {n} and {m}")
    y_real = _labels(real_test_labels, n)
    y_gen = _labels(generated_labels, m)
    assert y_real is not None
    real_ok = (real.predictions == y_real).astype(np.float64)
    gen_ok = None if y_gen is None else (gen.predictions == y_gen).astype(np.float64)

    accuracy = float(real_ok.mean())
    share = None if gen_ok is None else float(gen_ok.mean())
    fd = _fd(real.features, gen.features)
    out: dict[str, Any] = {
        "n_real": n,
        "n_generated": m,
        "k": int(k),
        "frechet_distance": fd,
        "recognised_share": share,
        "real_accuracy": accuracy,
        "recognised_ratio": _ratio(share, accuracy),
    }
    prdc = precision_recall(real, gen, k)
    out["precision"], out["recall"] = prdc["precision"], prdc["recall"]
    if density_coverage:
        out["density"], out["coverage"] = prdc["density"], prdc["coverage"]

    rng = np.random.default_rng(seed)
    real_draw = _Resampler(n, real_groups)
    gen_draw = _Resampler(m, None)
    intervals: dict[str, dict[str, float]] = {}
    if n_resamples > 0:
        acc_r, share_r, ratio_r = [], [], []
        for _ in range(n_resamples):
            a = float(real_ok[real_draw.draw(rng)].mean())
            acc_r.append(a)
            if gen_ok is not None:
                s = float(gen_ok[gen_draw.draw(rng)].mean())
                share_r.append(s)
                ratio_r.append(s / a if a > 0 else float("nan"))
        for key, point, reps in (
            ("real_accuracy", accuracy, acc_r),
            ("recognised_share", share, share_r),
            ("recognised_ratio", out["recognised_ratio"], ratio_r),
        ):
            iv = _interval(point, reps, confidence)
            if iv is not None:
                intervals[key] = iv.as_dict()
    if fd_resamples > 0:
        fd_r = [
            _fd_subset(real.features[real_draw.draw(rng)], gen.features[gen_draw.draw(rng)])
            for _ in range(fd_resamples)
        ]
        iv = _interval(fd, fd_r, confidence, debias=True)
        if iv is not None:
            intervals["frechet_distance"] = iv.as_dict()
    out["intervals"] = intervals

    per_class: dict[str, dict[str, Any]] = {}
    classes = np.unique(y_real if y_gen is None else np.concatenate([y_real, y_gen]))
    for c in classes.tolist():
        row: dict[str, Any] = {"real": int((y_real == c).sum())}
        row["real_accuracy"] = float(real_ok[y_real == c].mean()) if row["real"] else None
        if y_gen is not None and gen_ok is not None:
            row["generated"] = int((y_gen == c).sum())
            row["recognised_share"] = float(gen_ok[y_gen == c].mean()) if row["generated"] else None
        per_class[_name(int(c))] = row
    out["per_class"] = per_class
    return out


def compare_with_floor(
    classifier: FeatureClassifier,
    real_test_images: ImagesLike | Embedding,
    real_test_labels: LabelLike,
    generated: ImagesLike | Embedding,
    generated_labels: LabelLike | None = None,
    *,
    floor: GaussianSampler | None = None,
    train_images: ImagesLike | None = None,
    train_labels: LabelLike | None = None,
    n_bits: int = 8,
    k: int = 3,
    density_coverage: bool = True,
    n_resamples: int = 1000,
    fd_resamples: int = 200,
    confidence: float = 0.95,
    real_groups: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """:func:`sample_quality` of the model's samples and of the Gaussian floor's, side by side.

    The floor draws as many faces as ``generated`` holds, with the same requested labels
    (``floor.sample(M, generated_labels, seed, n_bits)``), so counts, class mix and precision
    are equal. The real test set is embedded once and its k-NN radii are shared.

    Args:
        floor: a fitted :class:`GaussianSampler`; when ``None`` one is fitted to
            ``train_images`` (per class on ``train_labels`` when the samples have labels).
        train_images, train_labels: the model's training faces (uint8), to fit the floor.
        n_bits: the model's bits; the floor's samples are reduced to as many levels.
        other arguments: as :func:`sample_quality` (same ``seed`` for both columns).

    Returns:
        A JSON-able dict: ``model`` and ``gaussian_floor`` (each a :func:`sample_quality`
        dict), ``frechet_ratio`` (``FD_model / FD_floor``; below 1 the model beats the floor),
        ``frechet_ratio_interval`` (paired bootstrap: one draw of real faces per replicate,
        the same draw of sample positions for both samplers, which also gives each column's
        Fréchet interval; ``None`` when not computed),
        ``floor_sampler`` (:meth:`GaussianSampler.describe`), ``targets`` (the issue's
        ``frechet_ratio_max`` 0.5 / ``recognised_ratio_min`` 0.7 and whether the model meets
        them, ``None`` when undefined) and ``settings``.
    """
    real = embed(classifier, real_test_images, batch_size)
    gen = embed(classifier, generated, batch_size)
    m = len(gen)
    y_gen = _labels(generated_labels, m)
    if floor is None:
        if train_images is None:
            raise ValueError("give a fitted `floor` sampler or `train_images` to fit one")
        fit_labels = train_labels if y_gen is not None else None
        floor = GaussianSampler.fit(train_images, fit_labels)
    floor_images = floor.sample(
        m, labels=y_gen if floor.conditional else None, seed=seed, n_bits=n_bits
    )
    floor_emb = embed(classifier, floor_images, batch_size)
    common: dict[str, Any] = {
        "k": k,
        "density_coverage": density_coverage,
        "n_resamples": n_resamples,
        "fd_resamples": fd_resamples,
        "confidence": confidence,
        "real_groups": real_groups,
        "seed": seed,
        "batch_size": batch_size,
    }
    # The Fréchet intervals of both columns and of their ratio come from one joint loop below
    # (shared draws: a third of the covariance work of three separate bootstraps).
    common["fd_resamples"] = 0
    model_q = sample_quality(classifier, real, real_test_labels, gen, y_gen, **common)
    floor_q = sample_quality(classifier, real, real_test_labels, floor_emb, y_gen, **common)
    ratio = _ratio(model_q["frechet_distance"], floor_q["frechet_distance"])
    ratio_iv = None
    if fd_resamples > 0:
        rng = np.random.default_rng(seed + 1)
        real_draw, gen_draw = _Resampler(len(real), real_groups), _Resampler(m, None)
        fd_m, fd_f, reps = [], [], []
        for _ in range(fd_resamples):
            r = real.features[real_draw.draw(rng)]
            idx = gen_draw.draw(rng)
            fd_m.append(_fd_subset(r, gen.features[idx]))
            fd_f.append(_fd_subset(r, floor_emb.features[idx]))
            reps.append(fd_m[-1] / fd_f[-1] if fd_f[-1] > 0 else float("nan"))
        for q, draws in ((model_q, fd_m), (floor_q, fd_f)):
            iv = _interval(q["frechet_distance"], draws, confidence, debias=True)
            if iv is not None:
                q["intervals"]["frechet_distance"] = iv.as_dict()
        iv = _interval(ratio, reps, confidence, debias=True)
        ratio_iv = None if iv is None else iv.as_dict()
    rec = model_q["recognised_ratio"]
    return {
        "model": model_q,
        "gaussian_floor": floor_q,
        "frechet_ratio": ratio,
        "frechet_ratio_interval": ratio_iv,
        "floor_sampler": floor.describe(),
        "targets": {
            "frechet_ratio_max": FRECHET_RATIO_TARGET,
            "frechet_ratio_met": None if ratio is None else bool(ratio <= FRECHET_RATIO_TARGET),
            "recognised_ratio_min": RECOGNISED_RATIO_TARGET,
            "recognised_ratio_met": None if rec is None else bool(rec >= RECOGNISED_RATIO_TARGET),
        },
        "settings": {
            "k": int(k),
            "n_bits": int(n_bits),
            "seed": int(seed),
            "n_resamples": int(n_resamples),
            "fd_resamples": int(fd_resamples),
            "confidence": float(confidence),
            "grouped_real_bootstrap": real_groups is not None,
        },
    }


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_ROWS: tuple[tuple[str, str, str], ...] = (
    # key, label, how model and floor are compared ("ratio" or "diff")
    ("frechet_distance", "Fréchet distance, classifier features (lower is better)", "ratio"),
    ("recognised_share", "samples recognised as the requested expression", "diff"),
    ("real_accuracy", "classifier accuracy on real test faces", "diff"),
    ("recognised_ratio", "recognised share / real accuracy", "diff"),
    ("precision", "precision (Kynkäänniemi et al. 2019)", "diff"),
    ("recall", "recall (Kynkäänniemi et al. 2019)", "diff"),
    ("density", "density (Naeem et al. 2020)", "diff"),
    ("coverage", "coverage (Naeem et al. 2020)", "diff"),
)


#: Fréchet distances span orders of magnitude (significant digits); shares get 3 decimals.
_SPEC = {"frechet_distance": ".4g"}


def _fmt(
    value: float | None, interval: Mapping[str, float] | None = None, spec: str = ".3f"
) -> str:
    if value is None:
        return "—"
    text = format(value, spec)
    if interval is not None:
        text += f" [{format(interval['low'], spec)}, {format(interval['high'], spec)}]"
    return text


def quality_table(report: Mapping[str, Any]) -> str:
    """Markdown table of a :func:`compare_with_floor` report (``metric | model | Gaussian floor
    | model vs floor``) or of one :func:`sample_quality` dict (``metric | value``).

    Intervals are shown in brackets; the last column is the ratio ``model / floor`` for the
    Fréchet distance (with its paired interval and the 0.5 target) and the difference
    ``model - floor`` otherwise.
    """
    if "model" not in report:
        lines = ["| metric | value |", "|---|---|"]
        for key, label, _ in _ROWS:
            if key in report:
                value = _fmt(report[key], report["intervals"].get(key), _SPEC.get(key, ".3f"))
                lines.append(f"| {label} | {value} |")
        return "\n".join(lines) + "\n"
    model, floor = report["model"], report["gaussian_floor"]
    lines = [
        f"| metric (k = {model['k']}; {model['n_generated']} samples each, "
        f"{model['n_real']} real test faces) | model | Gaussian floor | model vs floor |",
        "|---|---|---|---|",
    ]
    for key, label, how in _ROWS:
        if key not in model:
            continue
        a, b = model[key], floor[key]
        spec = _SPEC.get(key, ".3f")
        if how == "ratio":
            ratio = report.get("frechet_ratio")
            versus = (
                "—"
                if ratio is None
                else "ratio " + _fmt(ratio, report.get("frechet_ratio_interval"))
            )
            if ratio is not None:
                versus += f" (target <= {report['targets']['frechet_ratio_max']})"
        elif key == "real_accuracy":
            versus = "same real faces"
        else:
            versus = "—" if a is None or b is None else f"{a - b:+.3f}"
            if key == "recognised_ratio" and a is not None:
                versus += f" (target: model >= {report['targets']['recognised_ratio_min']})"
        lines.append(
            f"| {label} | {_fmt(a, model['intervals'].get(key), spec)} "
            f"| {_fmt(b, floor['intervals'].get(key), spec)} | {versus} |"
        )
    return "\n".join(lines) + "\n"


def save_quality_report(
    report: Mapping[str, Any], directory: str | Path, stem: str = "sample_quality"
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (the report) and ``<stem>.md`` (:func:`quality_table`) into
    ``directory``; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(quality_table(report), encoding="utf-8")
    return json_path, md_path
