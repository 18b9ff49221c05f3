"""Invertible blocks (docs/concepts/contract.md).

Importing this package registers every block in the zoo."""

from flowkit.discovery import import_submodules
from flowkit.layers.actnorm import ActNorm
from flowkit.layers.base import FlowTransform, sum_except_batch
from flowkit.layers.conditioners import Conditioner, PCAView
from flowkit.layers.conv1x1 import InvertibleConv1x1
from flowkit.layers.coupling import AdditiveCoupling, AffineCoupling, Coupling
from flowkit.layers.data_init import DataInitialized, initialize
from flowkit.layers.linear_coupling import LinearCoupling
from flowkit.layers.lu import LUMatrix, PlainMatrix
from flowkit.layers.pca import PCAProjection
from flowkit.layers.sequence import FlowSequence
from flowkit.layers.split import Split
from flowkit.layers.squeeze import Squeeze

# Import every module of the package so each block registers itself in the zoo; a block added
# tomorrow needs no line here to be built by name and covered by the property tests.
import_submodules(__name__, __path__)

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Conditioner",
    "Coupling",
    "DataInitialized",
    "FlowSequence",
    "FlowTransform",
    "InvertibleConv1x1",
    "LUMatrix",
    "LinearCoupling",
    "PCAProjection",
    "PCAView",
    "PlainMatrix",
    "Split",
    "Squeeze",
    "initialize",
    "sum_except_batch",
]
