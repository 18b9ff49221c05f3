"""Checks that an invertible block honours the flowkit contract, against independent references.

These functions drive the zoo property tests and are public so users can check their own blocks::

    from flowkit.testing import check_block
    check_block(my_block, torch.randn(3, *my_block.in_shape))

Each check raises :class:`CheckFailure` (an ``AssertionError``) with a message saying what broke.
The references are independent of the block's own log-det code: the log-determinant is compared
with ``slogdet`` of the autograd Jacobian evaluated in float64.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowkit.errors import ShapeError
from flowkit.layers.base import FlowTransform
from flowkit.layers.data_init import initialize


class CheckFailure(AssertionError):
    """A block violated the contract; the message says which property and by how much."""


@dataclass(frozen=True)
class Tolerance:
    """Absolute + relative tolerance: ``|a - b| <= atol + rtol * |b|`` element-wise."""

    atol: float
    rtol: float

    def close(self, actual: Tensor, reference: Tensor) -> bool:
        return torch.allclose(actual, reference, atol=self.atol, rtol=self.rtol)


FLOAT64 = Tolerance(atol=1e-8, rtol=1e-8)
FLOAT32 = Tolerance(atol=1e-4, rtol=1e-4)


def tolerance_for(dtype: torch.dtype) -> Tolerance:
    return FLOAT64 if dtype == torch.float64 else FLOAT32


def _max_error(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _call(block: nn.Module, fn: str, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    method = block.inverse if fn == "inverse" else block
    return method(x) if context is None else method(x, context)


def _slice_context(context: Tensor | None, index: int) -> Tensor | None:
    return None if context is None else context[index : index + 1]


def perturb_parameters(module: nn.Module, scale: float, generator: torch.Generator) -> None:
    """Add Gaussian noise of standard deviation ``scale`` to every parameter, in place.

    Zero-initialised couplings start as the identity; perturbing them makes every check
    exercise the non-trivial path.
    """
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.add_(scale * noise.to(p.dtype))


def check_logabsdet_shape(block: nn.Module, x: Tensor, context: Tensor | None = None) -> None:
    """``logabsdet`` has shape ``(B,)`` and the input's dtype and device, both directions."""
    for fn, inp in (("forward", x), ("inverse", _call(block, "forward", x, context)[0])):
        _, logabsdet = _call(block, fn, inp, context)
        if tuple(logabsdet.shape) != (x.shape[0],):
            raise CheckFailure(
                f"{type(block).__name__}.{fn}: logabsdet shape {tuple(logabsdet.shape)}, "
                f"expected ({x.shape[0]},)"
            )
        if logabsdet.dtype != x.dtype or logabsdet.device != x.device:
            raise CheckFailure(
                f"{type(block).__name__}.{fn}: logabsdet is {logabsdet.dtype} on "
                f"{logabsdet.device}, input is {x.dtype} on {x.device}"
            )


def check_invertible(
    block: nn.Module, x: Tensor, context: Tensor | None = None, tol: Tolerance | None = None
) -> float:
    """``inverse(forward(x)) == x`` and ``forward(inverse(y)) == y``; returns the worst error."""
    tol = tol or tolerance_for(x.dtype)
    name = type(block).__name__
    with torch.no_grad():
        y, _ = _call(block, "forward", x, context)
        x_back, _ = _call(block, "inverse", y, context)
        if not tol.close(x_back, x):
            raise CheckFailure(
                f"{name}: inverse(forward(x)) differs from x by {_max_error(x_back, x):.3g}"
            )
        # A fresh latent (not the image of x) tests the other composition.
        z = y + 0.1 * torch.randn_like(y)
        z_back, _ = _call(block, "forward", _call(block, "inverse", z, context)[0], context)
        if not tol.close(z_back, z):
            raise CheckFailure(
                f"{name}: forward(inverse(y)) differs from y by {_max_error(z_back, z):.3g}"
            )
    return max(_max_error(x_back, x), _max_error(z_back, z))


def check_logabsdet_cancels(
    block: nn.Module, x: Tensor, context: Tensor | None = None, tol: Tolerance | None = None
) -> None:
    """The inverse's log-det at ``y = f(x)`` is minus the forward's at ``x``."""
    tol = tol or tolerance_for(x.dtype)
    with torch.no_grad():
        y, forward_ld = _call(block, "forward", x, context)
        _, inverse_ld = _call(block, "inverse", y, context)
    total = forward_ld + inverse_ld
    scale = forward_ld.abs().max().clamp_min(1.0)
    if not tol.close(total / scale, torch.zeros_like(total)):
        raise CheckFailure(
            f"{type(block).__name__}: forward + inverse logabsdet = {total.tolist()} (not 0)"
        )


def jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Full Jacobian of ``fn`` at ``x`` as a matrix ``(numel(out), numel(x))`` via autograd."""
    jac = torch.autograd.functional.jacobian(fn, x)
    out_numel = jac.numel() // x.numel()
    return jac.reshape(out_numel, x.numel())


def check_logabsdet_matches_jacobian(
    block: nn.Module,
    x: Tensor,
    context: Tensor | None = None,
    direction: str = "forward",
    tol: Tolerance | None = None,
) -> float:
    """Per-sample ``logabsdet`` equals ``log|det J|`` of the autograd Jacobian (in float64), and
    the Jacobian is block-diagonal over the batch: sample ``i``'s output does not depend on
    sample ``j``'s input. Returns the worst absolute log-det error.

    For a float64 block the tolerance is ~1e-8; for a float32 block (reduced-precision mode) the
    float32 Jacobian is promoted to float64 before ``slogdet`` and compared at ~1e-4 relative.
    """
    tol = tol or (FLOAT64 if x.dtype == torch.float64 else Tolerance(atol=2e-3, rtol=1e-4))
    name = f"{type(block).__name__}.{direction}"
    batch = x.shape[0]
    numel = x[0].numel()

    def output_only(inp: Tensor) -> Tensor:
        return _call(block, direction, inp, context)[0]

    jac = jacobian(output_only, x).to(torch.float64)
    if jac.shape[0] != jac.shape[1]:
        raise CheckFailure(f"{name}: Jacobian is {tuple(jac.shape)}, not square")
    jac = jac.reshape(batch, numel, batch, numel)
    with torch.no_grad():
        _, logabsdet = _call(block, direction, x, context)
    worst = 0.0
    for i in range(batch):
        for j in range(batch):
            if i != j and jac[i, :, j, :].abs().max() > 0:
                raise CheckFailure(
                    f"{name}: output of sample {i} depends on input of sample {j} "
                    f"(max |dy_i/dx_j| = {float(jac[i, :, j, :].abs().max()):.3g})"
                )
        sign, reference = torch.linalg.slogdet(jac[i, :, i, :])
        if sign == 0:
            raise CheckFailure(f"{name}: Jacobian of sample {i} is singular")
        actual = logabsdet[i].to(torch.float64)
        if not tol.close(actual.reshape(1), reference.reshape(1)):
            raise CheckFailure(
                f"{name}: logabsdet of sample {i} is {float(actual):.10g}, float64 Jacobian gives "
                f"{float(reference):.10g}"
            )
        worst = max(worst, abs(float(actual - reference)))
    return worst


def check_shape_errors(block: nn.Module, x: Tensor, context: Tensor | None = None) -> None:
    """A wrongly shaped input raises a ``ValueError`` (ShapeError) naming block and shapes.

    A block from another library (a plain ``nflows`` transform, not a flowkit
    :class:`~flowkit.layers.base.FlowTransform`) declares no input shape, so there is nothing
    to check it against: :func:`check_block` skips this check for such blocks."""
    name = type(block).__name__
    wrong_shapes = [
        (x.shape[0], x.shape[1] + 1, *x.shape[2:]),  # one channel/feature too many
        (x.shape[0], *x.shape[1:], 2),  # an extra dimension
    ]
    if x.dim() == 4:
        wrong_shapes.append((x.shape[0], *x.shape[1:3], x.shape[3] + 2))
    for fn in ("forward", "inverse"):
        for shape in wrong_shapes:
            bad = torch.zeros(shape, dtype=x.dtype)
            try:
                _call(block, fn, bad, context)
            except Exception as err:  # noqa: BLE001 - any other error type is the failure
                if not isinstance(err, ShapeError):
                    raise CheckFailure(
                        f"{name}.{fn}: input of shape {tuple(shape)} raised "
                        f"{type(err).__name__} ({err}), not a ShapeError naming the block"
                    ) from err
                message = str(err)
                if name not in message or str(tuple(shape)) not in message:
                    raise CheckFailure(
                        f"{name}.{fn}: shape error must name the block and the received shape "
                        f"{tuple(shape)}: {message!r}"
                    ) from err
            else:
                raise CheckFailure(f"{name}.{fn}: accepted an input of wrong shape {shape}")


def _same_outputs(a: nn.Module, b: nn.Module, x: Tensor, context: Tensor | None) -> bool:
    with torch.no_grad():
        ya, la = _call(a, "forward", x, context)
        yb, lb = _call(b, "forward", x, context)
        xa, _ = _call(a, "inverse", ya, context)
        xb, _ = _call(b, "inverse", ya, context)
    return all(torch.equal(p, q) for p, q in ((ya, yb), (la, lb), (xa, xb)))


def check_state_dict_roundtrip(
    block: nn.Module,
    fresh: nn.Module,
    x: Tensor,
    context: Tensor | None = None,
) -> None:
    """A freshly built block loaded with ``state_dict()`` computes the same outputs bit for bit,
    also in training mode on new data (so data-dependent init does not run again), and so does a
    ``torch.save``/``torch.load`` round trip of the whole module (no lambdas or closures)."""
    name = type(block).__name__
    fresh = fresh.to(dtype=x.dtype)
    fresh.load_state_dict(block.state_dict())
    fresh.train(block.training)
    other = x.flip(0) * 1.5 + 0.25
    for data in (x, other):
        if not _same_outputs(block, fresh, data, context):
            raise CheckFailure(f"{name}: state_dict round trip changed the outputs")
    buffer = io.BytesIO()
    torch.save(block.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh.load_state_dict(state)
    if not _same_outputs(block, fresh, x, context):
        raise CheckFailure(f"{name}: torch.save(state_dict) / torch.load(weights_only) differs")
    buffer = io.BytesIO()
    try:
        torch.save(block, buffer)
    except Exception as err:  # noqa: BLE001 - pickling errors come in many types
        raise CheckFailure(f"{name}: torch.save(module) failed: {err}") from err
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    if not _same_outputs(block, loaded, x, context):
        raise CheckFailure(f"{name}: torch.save(module) / torch.load changed the outputs")


def check_block(
    block: nn.Module,
    x: Tensor,
    context: Tensor | None = None,
    fresh: nn.Module | None = None,
    init_batch: Tensor | None = None,
    init_context: Tensor | None = None,
) -> dict[str, float]:
    """Run every check on ``block`` at input ``x`` (training and eval mode).

    ``init_batch`` (default: ``x``) is passed through once first, so data-initialised blocks set
    themselves up. ``fresh`` (an unloaded block built with the same arguments) enables the
    state-dict checks. Returns the measured worst errors.

    Any ``nflows.transforms.Transform`` can be checked, not only flowkit's blocks: ``x`` gives
    its input shape. Such a foreign block declares no shape, so only the shape-error check
    (:func:`check_shape_errors`) is left out for it.
    """
    if init_batch is None:
        init_batch, init_context = x, context
    initialize(block, init_batch, init_context)
    report: dict[str, float] = {}
    for training in (True, False):
        block.train(training)
        check_logabsdet_shape(block, x, context)
        report[f"inverse_error_train={training}"] = check_invertible(block, x, context)
        check_logabsdet_cancels(block, x, context)
    block.train()
    report["logdet_error_forward"] = check_logabsdet_matches_jacobian(block, x, context)
    y = _call(block, "forward", x, context)[0].detach()
    report["logdet_error_inverse"] = check_logabsdet_matches_jacobian(
        block, y, context, direction="inverse"
    )
    if isinstance(block, FlowTransform):
        check_shape_errors(block, x, context)
    if fresh is not None:
        check_state_dict_roundtrip(block, fresh, x, context)
    return report
