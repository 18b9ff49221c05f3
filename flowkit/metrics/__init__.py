"""Evaluation: likelihood, expression accuracy, Fréchet distance, SSIM, reconstruction (DESIGN §7).

from flowkit.metrics import train_expression_classifier, expression_accuracy, ssim

clf = train_expression_classifier(train_set, epochs=15, test_set=test_set)  # small CNN
clf.save(run_dir / "classifier.safetensors")
acc = expression_accuracy(clf, edited, target_labels)    # do edited faces show the target?
fd = frechet_distance(clf, real, generated)              # FID-like, classifier feature space
s = ssim(edited, true_target)                            # scikit-image SSIM
err = reconstruction_error(model, x)                     # exact-inverse check
bpd = bits_per_dim(model, test_set)                      # test bits/dim
"""

from flowkit.metrics.classifier import (
    ExpressionClassifier,
    expression_accuracy,
    load_expression_classifier,
    load_or_train_classifier,
    train_expression_classifier,
)
from flowkit.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    frechet_distance_from_stats,
)
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
    "load_expression_classifier",
    "load_or_train_classifier",
    "reconstruction_error",
    "ssim",
    "ssim_per_image",
    "train_expression_classifier",
]
