"""flowkit: invertible building blocks for normalizing flows, and BPLF for facial expressions.

import flowkit
flowkit.zoo.names("layer")
from flowkit.models import BPLF
"""

from flowkit import precision, zoo
from flowkit.errors import (
    CheckpointError,
    ConfigError,
    FlowkitError,
    NotInitializedError,
    ShapeError,
)
from flowkit.serialization import load

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FlowkitError",
    "NotInitializedError",
    "ShapeError",
    "__version__",
    "load",
    "precision",
    "zoo",
]
