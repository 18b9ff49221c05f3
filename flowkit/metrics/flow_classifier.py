"""A class-conditional flow as a classifier: the label under which a face is most likely."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["most_likely_classes"]


def most_likely_classes(model: nn.Module, x: torch.Tensor, candidates: list[int]) -> torch.Tensor:
    """Per face, the candidate label ``y`` with the highest ``log p(x | y)`` (Bayes' rule with a
    uniform class prior), on the CPU."""
    with torch.no_grad():
        scores = torch.stack(
            [model.log_prob(x, torch.full((x.shape[0],), c, device=x.device)) for c in candidates],
            dim=1,
        )
    return torch.tensor(candidates)[scores.argmax(1).cpu()]
