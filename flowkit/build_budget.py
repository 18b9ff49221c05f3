"""Bounded building: construct a module from untrusted arguments within a budget.

A configuration read from a file or a setting can ask for unbounded work (``steps=10**7``,
``hidden=10**12``). :func:`build_counted` runs the constructor while PyTorch's global
registration hooks count every parameter, buffer and module it registers, and stops it at the
first one beyond a :class:`BuildBudget`. On the ``meta`` device nothing is allocated, so even a
refused request costs no memory. :meth:`flowkit.zoo.Zoo.build_bounded` uses it for zoo entries
(docs/concepts/limits.md).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from flowkit import limits
from flowkit.errors import ConfigError


@dataclass(frozen=True)
class BuildBudget:
    """The most a bounded build may register before it is stopped (:meth:`Zoo.build_bounded`).

    ``tensors`` (parameters and buffers) and ``modules`` count registrations; ``values`` counts
    their elements (``None``: :data:`flowkit.limits.MAX_MODEL_PARAMETERS`, read at build time).
    ``why`` says where the tensor and module limits come from, for the error message."""

    tensors: int = limits.MAX_MODEL_TENSORS
    modules: int = 8 * limits.MAX_MODEL_TENSORS
    values: int | None = None
    why: str = "flowkit.limits.MAX_MODEL_TENSORS"


class _OverBudget(BaseException):
    """Raised from a registration hook when a bounded build exceeds its budget. A
    ``BaseException`` so that a constructor's own ``except Exception`` cannot swallow it and
    keep building."""


class MetaUnsupported(Exception):
    """A constructor that cannot run on the ``meta`` device (it reads tensor values)."""


@contextlib.contextmanager
def _counting(budget: BuildBudget, label: str) -> Iterator[list[str]]:
    """Count the parameters, buffers and modules registered by this thread while the block
    runs, raising :class:`_OverBudget` at the first one beyond ``budget``. Yields the list
    that receives the refusal (kept even if a constructor swallowed the exception)."""
    from torch.nn.modules import module as torch_module

    owner = threading.get_ident()
    max_values = limits.MAX_MODEL_PARAMETERS if budget.values is None else budget.values
    counts = {"tensors": 0, "values": 0, "modules": 0}
    refusals: list[str] = []

    def refuse(message: str) -> None:
        refusals.append(message)
        raise _OverBudget(message)

    def on_tensor(module: Any, name: str, tensor: Any) -> None:
        if threading.get_ident() != owner or tensor is None:
            return None
        counts["tensors"] += 1
        counts["values"] += int(tensor.numel())
        if counts["tensors"] > budget.tensors:
            refuse(
                f"{label}: its arguments build more than {budget.tensors:,} tensors ({budget.why})"
            )
        if counts["values"] > max_values:
            refuse(
                f"{label}: its arguments ask for more than {max_values:,} values "
                "(flowkit.limits.MAX_MODEL_PARAMETERS)"
            )
        return None

    def on_module(module: Any, name: str, submodule: Any) -> None:
        if threading.get_ident() != owner or submodule is None:
            return None
        counts["modules"] += 1
        if counts["modules"] > budget.modules:
            refuse(
                f"{label}: its arguments build more than {budget.modules:,} modules ({budget.why})"
            )
        return None

    handles = [
        torch_module.register_module_parameter_registration_hook(on_tensor),
        torch_module.register_module_buffer_registration_hook(on_tensor),
        torch_module.register_module_module_registration_hook(on_module),
    ]
    try:
        yield refusals
    finally:
        for handle in handles:
            handle.remove()


def _meta_unsupported(err: BaseException) -> bool:
    """Whether ``err`` says that a constructor needs real tensor values (torch's errors for an
    operation without a ``meta`` kernel, ``.item()`` or a copy out of a meta tensor)."""
    return isinstance(err, NotImplementedError) or "meta" in str(err).lower()


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_counted(build: Callable[[], Any], label: str, budget: BuildBudget, meta: bool) -> Any:
    """Run ``build()`` under ``budget`` (on the ``meta`` device when ``meta``); every
    failure is one :class:`ConfigError` line naming ``label``, except a constructor that
    cannot run on ``meta``, which raises :class:`MetaUnsupported` so the caller can retry
    on the CPU."""
    place = torch.device("meta") if meta else contextlib.nullcontext()
    refusals: list[str] = []
    try:
        with _counting(budget, label) as refusals, place:
            built = build()
    except _OverBudget as over:
        raise ConfigError(str(over)) from None
    except ConfigError as err:
        if refusals:
            raise ConfigError(refusals[0]) from None
        raise ConfigError(_one_line(err)) from err
    except RecursionError:
        raise ConfigError(f"{label}: its arguments nest too deeply to build") from None
    except MemoryError:
        raise ConfigError(f"{label}: its arguments ask for more memory than there is") from None
    except Exception as err:  # noqa: BLE001 - any constructor failure is a refusal
        if refusals:
            raise ConfigError(refusals[0]) from None
        if meta and _meta_unsupported(err):
            raise MetaUnsupported from err
        raise ConfigError(
            f"{label}: cannot be built from these arguments "
            f"({type(err).__name__}: {_one_line(err)})"
        ) from err
    if refusals:
        raise ConfigError(refusals[0])
    return built
