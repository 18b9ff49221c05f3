"""A small expression-recognition CNN, trained by the project on real faces.

It judges generated and edited faces (expression accuracy) and provides the feature space of the
Fréchet distance (:func:`flowkit.metrics.frechet_distance`). It is deliberately small (~0.1 M
parameters; an epoch over CK+48 takes about a second on a laptop CPU) so it can be trained with
every run and saved next to it (``save`` / :func:`load_expression_classifier`, safetensors + JSON
config, no pickled code).

Architecture: three blocks ``conv3x3 -> BatchNorm -> ReLU -> max-pool 2`` with widths ``w, 2w,
4w``, global average pooling (the ``features``), dropout and a
linear layer over the emotion vocabulary :data:`flowkit.data.labels.EMOTIONS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flowkit.data import NUM_EMOTIONS, EmotionSet, as_labels, preprocess
from flowkit.data.labels import LabelLike
from flowkit.errors import CheckpointError
from flowkit.modes import eval_mode

_KIND = "flowkit.expression_classifier"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def as_float_images(images: Tensor | np.ndarray) -> Tensor:
    """uint8 ``0..255`` -> bin centres ``(k + 0.5) / 256 - 0.5`` (as ``preprocess(...,
    dequantize=False)``); float tensors are returned as float32 unchanged."""
    t = torch.as_tensor(images)
    if t.dtype == torch.uint8:
        return preprocess(t, 8, dequantize=False)
    return t.to(torch.float32)


class ExpressionClassifier(nn.Module):
    """Expression recogniser for preprocessed faces ``(B, C, H, W)`` in ``[-0.5, 0.5)``.

    Inputs of another size are resized (bilinear, antialiased) to ``in_shape``; RGB inputs of a
    grey classifier are averaged to grey, so one classifier judges models of any resolution.

    Args:
        in_shape: ``(C, H, W)`` the classifier works at.
        num_classes: logits (default: the 8 emotions of :data:`flowkit.data.labels.EMOTIONS`).
        width: channels of the first block (then ``2w``, ``4w``).
        dropout: before the linear layer.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 48),
        num_classes: int = 8,
        width: int = 32,
        dropout: float = 0.3,
    ):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        if len(self.in_shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {in_shape}")
        self.num_classes = int(num_classes)
        self.width = int(width)
        self.dropout = float(dropout)
        c = self.in_shape[0]
        self.body = nn.Sequential(
            _block(c, width), _block(width, 2 * width), _block(2 * width, 4 * width)
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))
        self.history: list[dict[str, float]] = []

    @property
    def config(self) -> dict[str, Any]:
        return {
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "width": self.width,
            "dropout": self.dropout,
        }

    @property
    def feature_dim(self) -> int:
        return 4 * self.width

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def prepare(self, x: Tensor | np.ndarray) -> Tensor:
        """Convert ``x`` (uint8 or float) to float32 at the classifier's channels and size."""
        x = as_float_images(x)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        c, h, w = self.in_shape
        if x.shape[1] != c:
            if c == 1:
                x = x.mean(dim=1, keepdim=True)
            elif x.shape[1] == 1:
                x = x.expand(-1, c, -1, -1)
            else:
                raise ValueError(f"cannot convert {x.shape[1]} channels to {c}")
        if tuple(x.shape[2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return x

    def _features(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of prepared inputs."""
        return self.head(self._features(x))

    def _batched(self, x: Tensor | np.ndarray, fn: str, batch_size: int) -> Tensor:
        device = next(self.parameters()).device
        out = []
        with eval_mode(self), torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb = self.prepare(x[start : start + batch_size]).to(device)
                feats = self._features(xb)
                out.append(feats if fn == "features" else self.head(feats))
        if not out:
            n = self.feature_dim if fn == "features" else self.num_classes
            return torch.empty(0, n)
        return torch.cat(out).cpu()

    def features(self, x: Tensor | np.ndarray, batch_size: int = 256) -> Tensor:
        """Pooled features ``(B, 4 * width)`` (the Fréchet-distance space), eval mode, no grad."""
        return self._batched(x, "features", batch_size)

    def logits(self, x: Tensor | np.ndarray, batch_size: int = 256) -> Tensor:
        return self._batched(x, "logits", batch_size)

    def predict_proba(self, x: Tensor | np.ndarray, batch_size: int = 256) -> Tensor:
        return self.logits(x, batch_size).softmax(dim=1)

    def predict(self, x: Tensor | np.ndarray, batch_size: int = 256) -> Tensor:
        """Predicted expression labels ``(B,)`` (indices into ``EMOTIONS``)."""
        return self.logits(x, batch_size).argmax(dim=1)

    def save(self, path: str | Path) -> None:
        """Safetensors weights with the JSON config (and training history) in the metadata."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {
            "kind": _KIND,
            "config": json.dumps(self.config),
            "history": json.dumps(self.history),
        }
        save_file(state, str(path), metadata=meta)


def load_expression_classifier(
    path: str | Path, device: str | torch.device = "cpu"
) -> ExpressionClassifier:
    """Load a classifier written by :meth:`ExpressionClassifier.save` (no unpickling)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any parse failure means "not a valid file"
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("kind") != _KIND:
        raise CheckpointError(f"{path}: not an expression classifier (kind={meta.get('kind')!r})")
    model = ExpressionClassifier(**json.loads(meta["config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match the config ({err})") from err
    model.history = json.loads(meta.get("history", "[]"))
    return model.to(device).eval()


LabelledImages = EmotionSet | tuple[Tensor | np.ndarray, Any]
"""An :class:`~flowkit.data.EmotionSet` or a pair ``(images, labels)``."""


def _images_labels(data: LabelledImages) -> tuple[Tensor, Tensor]:
    """(images, labels) from an EmotionSet or a pair."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        images, labels = data.images, data.labels
    return torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images), (
        torch.as_tensor(np.asarray(labels)).to(torch.int64).reshape(-1)
    )


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random flips, small rotations (±6°), scalings (±5 %) and shifts (±4 %) per sample."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(6)
    scale = 1 + (torch.rand(b, generator=generator) * 2 - 1) * 0.05
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * 0.08
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Border padding: a shifted face should not gain a black frame the flows never produce.
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def train_expression_classifier(
    train_set: LabelledImages,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    image_size: int | tuple[int, int] | None = None,
    width: int = 32,
    num_classes: int | None = None,
    augment: bool = True,
    test_set: LabelledImages | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[dict[str, float]], object] | None = None,
) -> ExpressionClassifier:
    """Train an :class:`ExpressionClassifier` on labelled faces.

    Args:
        train_set: a :class:`flowkit.data.EmotionSet` (uint8 ``(N, C, H, W)`` images and labels)
            or a pair ``(images, labels)`` (uint8 or preprocessed float images).
        epochs: passes over the data (AdamW, one-cycle learning-rate schedule).
        image_size: the classifier's input size (default: the images' own size).
        width: first-block channels (32 gives ~0.1 M parameters).
        num_classes: default :data:`flowkit.data.labels.NUM_EMOTIONS` (8).
        augment: random flips / small affine jitter (faces are roughly aligned).
        test_set: optional held-out set; its accuracy is recorded each epoch in ``.history``.
        seed: makes initialisation, shuffling, dequantisation and augmentation reproducible.
        log: optional callable receiving each epoch's history dict.

    Returns:
        The trained classifier in eval mode; ``.history`` holds per-epoch ``train_loss``,
        ``train_acc`` and ``test_acc`` (when ``test_set`` is given).
    """
    images, labels = _images_labels(train_set)
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"expected non-empty images (N, C, H, W), got {tuple(images.shape)}")
    if image_size is None:
        hw = tuple(images.shape[2:])
    elif isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        hw = tuple(image_size)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    k = NUM_EMOTIONS if num_classes is None else int(num_classes)
    model = ExpressionClassifier((images.shape[1], *hw), num_classes=k, width=width).to(device)
    x_all = model.prepare(images)
    if images.dtype == torch.uint8:
        # Uniform dequantisation, as the flows see their training data.
        x_all = x_all + (torch.rand(x_all.shape, generator=gen) - 0.5) / 256.0
    test = None
    if test_set is not None:
        test = _images_labels(test_set)
    steps_per_epoch = math.ceil(len(x_all) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.2
    )
    model.history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            xb, yb = x_all[idx], labels[idx]
            if augment:
                xb = _augment(xb, gen)
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(idx)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(total, 1),
            "train_acc": correct / max(total, 1),
        }
        if test is not None:
            row["test_acc"] = expression_accuracy(model, test[0], test[1])
        model.history.append(row)
        if log is not None:
            log(row)
    return model.eval()


def load_or_train_classifier(
    path: str | Path, train_set: LabelledImages, **kwargs: Any
) -> ExpressionClassifier:
    """Load the classifier at ``path`` if it exists, else train it (``kwargs`` as
    :func:`train_expression_classifier`) and save it there: one classifier per run, reused."""
    path = Path(path)
    if path.exists():
        return load_expression_classifier(path)
    model = train_expression_classifier(train_set, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def expression_accuracy(
    classifier: ExpressionClassifier,
    images: Tensor | np.ndarray,
    labels: LabelLike,
    batch_size: int = 256,
) -> float:
    """Fraction of ``images`` the classifier labels with ``labels`` (one label or ``(B,)``)."""
    if len(images) == 0:
        raise ValueError("expression_accuracy needs at least one image")
    y = as_labels(labels, len(images))
    return float((classifier.predict(images, batch_size) == y).to(torch.float64).mean())
