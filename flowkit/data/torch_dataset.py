"""PyTorch access to an :class:`EmotionSet`: a Dataset of flow-ready tensors and a loader."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.errors import DataError
from flowkit.data.labels import label_index
from flowkit.data.preprocess import preprocess


class EmotionDataset(Dataset):
    """Items ``(x, y)``: ``x = preprocess(image, n_bits, dequantize)`` float32 ``(C, H, W)`` in
    ``[-0.5, 0.5)``, ``y`` int64 label.

    Args:
        data: the emotion set.
        n_bits: bits kept per pixel value (1..8); see :mod:`flowkit.data.preprocess`.
        dequantize: fresh uniform noise at every access (training); ``False`` uses bin centres.
        hflip: mirror each image left-right with probability 1/2 (augmentation).
        classes: label order of ``y``: ``None`` keeps canonical indices into EMOTIONS (0..7);
            a list of names makes ``y`` its position in that list (e.g. a 7-class CK+ model);
            rows with other labels raise :class:`DataError` (use ``data.select(classes)``).
    """

    def __init__(
        self,
        data: EmotionSet,
        n_bits: int = 8,
        dequantize: bool = True,
        hflip: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(data.images))
        labels = data.labels
        if classes is not None:
            table = np.full(8, -1, dtype=np.int64)
            for pos, name in enumerate(classes):
                table[label_index(name)] = pos
            labels = table[labels]
            if (labels < 0).any():
                missing = sorted(set(data.label_strings[labels < 0]))
                raise DataError(
                    f"labels {missing} are not in classes {list(classes)}; "
                    "select them away first with EmotionSet.select(classes)"
                )
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.n_bits, self.dequantize, self.hflip = n_bits, dequantize, hflip

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return preprocess(img, self.n_bits, self.dequantize), self.labels[i]


def make_dataloader(
    data: EmotionSet,
    batch_size: int = 64,
    shuffle: bool = True,
    n_bits: int = 8,
    dequantize: bool = True,
    hflip: bool = False,
    classes: Sequence[str] | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
) -> DataLoader:
    """A ``DataLoader`` over :class:`EmotionDataset` yielding ``(x, y)`` batches.

    ``x`` float32 ``(B, C, H, W)`` in ``[-0.5, 0.5)``, ``y`` int64 ``(B,)``. ``seed`` fixes the
    shuffling order (the dequantisation noise follows torch's global / worker seeds).
    """
    if len(data) == 0:
        raise DataError("make_dataloader: the EmotionSet is empty")
    dataset = EmotionDataset(data, n_bits, dequantize, hflip, classes)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
    )
