"""Evaluation: likelihood, reconstruction, expression accuracy, Fréchet distance, SSIM, grids.

One home per measurement; the trainer, the CLI and the examples all call these::

    from flowkit.metrics import train_expression_classifier, expression_accuracy, ssim

    clf = train_expression_classifier(train_set, epochs=15, test_set=test_set)  # small CNN
    clf.save(run_dir / "classifier.safetensors")
    acc = expression_accuracy(clf, edited, target_labels)    # do edited faces show the target?
    fd = frechet_distance(clf, real, generated)              # FID-like, classifier feature space
    s = ssim(edited, true_target)                            # scikit-image SSIM
    err = reconstruction_error(model, x)                     # exact-inverse check
    bpd = evaluate_bits_per_dim(model, test_set)             # test bits/dim (alias bits_per_dim)
    save_image(sample_grid(model, [0, 3], 8, 0.7, n_bits=5), "samples.png")
"""

from flowkit.metrics.classifier import (
    ExpressionClassifier,
    expression_accuracy,
    load_expression_classifier,
    load_or_train_classifier,
    train_expression_classifier,
)
from flowkit.metrics.flow_classifier import most_likely_classes
from flowkit.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    frechet_distance_from_stats,
)
from flowkit.metrics.grids import image_grid, sample_grid, save_image
from flowkit.metrics.image import reconstruction_error, ssim, ssim_per_image
from flowkit.metrics.likelihood import bits_per_dim, evaluate_bits_per_dim

__all__ = [
    "ExpressionClassifier",
    "bits_per_dim",
    "evaluate_bits_per_dim",
    "expression_accuracy",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "frechet_distance_from_stats",
    "image_grid",
    "most_likely_classes",
    "load_expression_classifier",
    "load_or_train_classifier",
    "reconstruction_error",
    "sample_grid",
    "save_image",
    "ssim",
    "ssim_per_image",
    "train_expression_classifier",
]

from flowkit.metrics.gaussian_sampler import GaussianSampler  # noqa: E402
from flowkit.metrics.sample_quality import (  # noqa: E402
    Embedding,
    FeatureClassifier,
    compare_with_floor,
    embed,
    knn_radii,
    precision_recall,
    quality_table,
    sample_quality,
    save_quality_report,
)

__all__ += [
    "Embedding",
    "FeatureClassifier",
    "GaussianSampler",
    "compare_with_floor",
    "embed",
    "knn_radii",
    "precision_recall",
    "quality_table",
    "sample_quality",
    "save_quality_report",
]
