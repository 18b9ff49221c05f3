"""Expression editing in a flow's latent space (docs/tutorials/expression-transfer.md).

    from flowkit.editing import LatentStatistics, ExpressionSpace, encode
    from flowkit.editing import label_transfer, reference_transfer, interpolate

    happy = label_transfer(model, x, y, "happy")                       # condition swap
    stats = LatentStatistics.fit(model, x_train, y_train)              # per-expression means
    happy = label_transfer(model, x, y, "happy", stats, method="mean_shift")   # Fader-style
    space = ExpressionSpace.fit(encode(model, x_train), y_train)       # LDA identity/expression
    swapped = reference_transfer(model, x, x_reference, space)         # TDGAN-style
    frames = interpolate(model, x, y, "surprise", stats, num=8)        # (8, B, C, H, W)
    predicted = space.classify(encode(model, x))                       # recognition on latents

Images are preprocessed floats in ``[-0.5, 0.5)``; everything is batch-wise and gradient-free.
"""

from flowkit.editing.baselines import PCAMeanShift, PixelMeanShift
from flowkit.editing.condition import condition_transfer, is_class_conditional
from flowkit.editing.latents import decode, encode, eval_mode, latent_shape
from flowkit.editing.space import ExpressionSpace
from flowkit.editing.statistics import LatentStatistics, as_labels
from flowkit.editing.transfer import (
    classify,
    default_method,
    interpolate,
    interpolate_faces,
    label_transfer,
    reference_transfer,
)

__all__ = [
    "ExpressionSpace",
    "LatentStatistics",
    "PCAMeanShift",
    "PixelMeanShift",
    "as_labels",
    "classify",
    "condition_transfer",
    "decode",
    "default_method",
    "encode",
    "eval_mode",
    "interpolate",
    "interpolate_faces",
    "is_class_conditional",
    "label_transfer",
    "latent_shape",
    "reference_transfer",
]
