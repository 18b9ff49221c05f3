"""Errors and warnings raised by :mod:`flowkit.data`.

Every error says what was expected, so a user holding a slightly different file layout knows
what to change. Files that cannot be decoded are never dropped silently: readers skip them and
emit one :class:`SkippedFilesWarning` that counts and names them.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowkit.errors import FlowkitError


class DataError(FlowkitError, ValueError):
    """A data source is malformed, empty, or does not match the expected layout."""


class UnknownLabelError(DataError, KeyError):
    """A label (number, name or folder name) is not in the emotion vocabulary.

    Subclasses ``KeyError`` as well so ``except KeyError`` around a lookup keeps working.
    """

    def __str__(self) -> str:  # KeyError would quote the message; show it plainly.
        return str(self.args[0]) if self.args else ""


class SkippedFilesWarning(UserWarning):
    """Some files or rows could not be read and were skipped; the message names them."""


def skipped_message(what: str, names: Sequence[str], total: int, limit: int = 20) -> str:
    """Build the text of a :class:`SkippedFilesWarning`: count, then up to ``limit`` names."""
    shown = ", ".join(str(n) for n in names[:limit])
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return f"skipped {len(names)} of {total} {what} that could not be read: {shown}{more}"
