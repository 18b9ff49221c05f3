"""Assembled flows (docs/concepts/models.md).

Importing this package registers every model in the zoo.

from flowkit.models import BPLF, Glow, RealNVP, MultiScaleFlow, VectorFlow, TarFlow, Jet
"""

from flowkit.discovery import import_submodules
from flowkit.models.base import FlowModel
from flowkit.models.jet import Jet
from flowkit.models.multiscale import MultiScaleFlow
from flowkit.models.priors import ClassConditionalGaussian, StandardNormal
from flowkit.models.recipes import BPLF, Glow, RealNVP, bplf_step, glow_step, realnvp_step
from flowkit.models.tarflow import TarFlow
from flowkit.models.vector import VectorFlow
from flowkit.serialization import from_config

# Import every module of the package so each model registers itself in the zoo: a model recipe
# added tomorrow as one new file is built by name, saved, loaded and property-tested.
import_submodules(__name__, __path__)

__all__ = [
    "BPLF",
    "ClassConditionalGaussian",
    "FlowModel",
    "Glow",
    "Jet",
    "MultiScaleFlow",
    "RealNVP",
    "StandardNormal",
    "TarFlow",
    "VectorFlow",
    "bplf_step",
    "from_config",
    "glow_step",
    "realnvp_step",
]
