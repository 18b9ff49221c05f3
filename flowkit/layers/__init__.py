"""Invertible blocks (DESIGN §3). Importing this package registers every block in the zoo."""

from flowkit.layers.actnorm import ActNorm
from flowkit.layers.base import FlowTransform, sum_except_batch
from flowkit.layers.data_init import DataInitialized, initialize

__all__ = [
    "ActNorm",
    "DataInitialized",
    "FlowTransform",
    "initialize",
    "sum_except_batch",
]
