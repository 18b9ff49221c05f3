"""Assembled flows (DESIGN §4). Importing this package registers every model in the zoo.

from flowkit.models import BPLF, Glow, RealNVP, MultiScaleFlow, VectorFlow
"""

from flowkit.models.base import FlowModel
from flowkit.models.multiscale import MultiScaleFlow
from flowkit.models.priors import ClassConditionalGaussian, StandardNormal
from flowkit.models.recipes import BPLF, Glow, RealNVP, bplf_step, glow_step, realnvp_step
from flowkit.models.vector import VectorFlow
from flowkit.serialization import from_config

__all__ = [
    "BPLF",
    "ClassConditionalGaussian",
    "FlowModel",
    "Glow",
    "MultiScaleFlow",
    "RealNVP",
    "StandardNormal",
    "VectorFlow",
    "bplf_step",
    "from_config",
    "glow_step",
    "realnvp_step",
]
