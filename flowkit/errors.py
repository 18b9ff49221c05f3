"""Exceptions raised by flowkit, one class per kind of user mistake."""

from __future__ import annotations


class FlowkitError(Exception):
    """Base class of every error flowkit raises on purpose."""


class ShapeError(FlowkitError, ValueError):
    """An input does not have the shape a block was built for.

    The message names the block, the expected shape and the received one, so the mistake is
    found at the block's boundary rather than deep inside a convolution.
    """

    def __init__(self, block: str, expected: str, received: tuple[int, ...], what: str = "input"):
        self.block = block
        self.expected = expected
        self.received = tuple(received)
        super().__init__(
            f"{block}: expected {what} of shape {expected}, received {tuple(received)}"
        )


class ConfigError(FlowkitError, ValueError):
    """A block or model was configured with arguments that cannot work together."""


class NotInitializedError(FlowkitError, RuntimeError):
    """A data-initialised block (ActNorm, PCA) was inverted before it saw any data."""


class CheckpointError(FlowkitError, ValueError):
    """A file is not a flowkit model, is truncated, or was written by an incompatible version."""
