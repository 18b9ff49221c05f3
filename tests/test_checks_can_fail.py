"""The contract checks must reject broken blocks: each deliberately wrong block below is
registered in a throwaway zoo and must fail exactly the check that guards its mistake."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from flowkit.layers import ActNorm, FlowTransform
from flowkit.testing import (
    CheckFailure,
    check_block,
    check_invertible,
    check_logabsdet_cancels,
    check_logabsdet_matches_jacobian,
    check_logabsdet_shape,
    check_shape_errors,
    check_state_dict_roundtrip,
)
from flowkit.zoo import Zoo

broken = Zoo()


class _Scale(FlowTransform):
    """A correct reference block: y = 2x, log-det D log 2."""

    def __init__(self, in_shape=(2, 3, 3)):
        super().__init__(in_shape)
        self.log_scale = nn.Parameter(torch.full((), 0.7))

    def _ld(self, x: Tensor) -> Tensor:
        return (self.log_scale * x[0].numel()).expand(x.shape[0]).to(x.dtype)

    def _forward(self, x, context):
        return x * self.log_scale.exp(), self._ld(x)

    def _inverse(self, y, context):
        return y * torch.exp(-self.log_scale), -self._ld(y)


@broken.register("layer", "logdet_off_by_constant", example={})
class LogdetOffByConstant(_Scale):
    def _forward(self, x, context):
        y, ld = super()._forward(x, context)
        return y, ld + 0.01


@broken.register("layer", "not_the_inverse", example={})
class NotTheInverse(_Scale):
    def _inverse(self, y, context):
        x, ld = super()._inverse(y, context)
        return x * 1.001, ld


@broken.register("layer", "inverse_logdet_sign", example={})
class InverseLogdetWrongSign(_Scale):
    def _inverse(self, y, context):
        x, ld = super()._inverse(y, context)
        return x, -ld


@broken.register("layer", "mixes_batch", example={})
class MixesBatch(_Scale):
    """Subtracts a batch statistic: sample i's output depends on sample j."""

    def _forward(self, x, context):
        y, ld = super()._forward(x, context)
        return y + 0.1 * x.mean(0, keepdim=True), ld


@broken.register("layer", "scalar_logdet", example={})
class ScalarLogdet(_Scale):
    def _forward(self, x, context):
        y, ld = super()._forward(x, context)
        return y, ld.sum()


@broken.register("layer", "no_shape_check", example={})
class NoShapeCheck(_Scale):
    def forward(self, inputs, context=None):
        return self._forward(inputs, context)


@broken.register("layer", "lambda_inside", example={})
class LambdaInside(_Scale):
    def __init__(self, in_shape=(2, 3, 3)):
        super().__init__(in_shape)
        self.activation = lambda t: t  # unpicklable: torch.save(module) must fail


@broken.register("layer", "reinitialises_after_load", example={})
class ReinitialisesAfterLoad(ActNorm):
    """Keeps its 'initialized' flag outside the state dict, so loading re-runs the init."""

    def __init__(self, in_shape=(2, 3, 3)):
        super().__init__(in_shape)
        del self.initialized
        self.initialized = torch.tensor(False)


def _case(name: str):
    torch.manual_seed(0)
    entry = broken.get("layer", name)
    block = entry.build().double()
    x = torch.randn(3, *block.in_shape, dtype=torch.float64)
    return block, entry.build().double(), x


@pytest.mark.parametrize(
    "name, check",
    [
        ("logdet_off_by_constant", check_logabsdet_matches_jacobian),
        ("not_the_inverse", check_invertible),
        ("inverse_logdet_sign", check_logabsdet_cancels),
        ("mixes_batch", check_logabsdet_matches_jacobian),
        ("scalar_logdet", check_logabsdet_shape),
        ("no_shape_check", check_shape_errors),
    ],
)
def test_each_broken_block_fails_its_check(name, check):
    block, _, x = _case(name)
    with pytest.raises(CheckFailure):
        check(block, x)
    with pytest.raises(CheckFailure):
        check_block(block, x)


@pytest.mark.parametrize("name", ["lambda_inside", "reinitialises_after_load"])
def test_broken_persistence_fails_round_trip(name):
    block, fresh, x = _case(name)
    block.train()
    block(x * 3 + 1)  # data-initialises the ActNorm-based block
    with pytest.raises(CheckFailure):
        check_state_dict_roundtrip(block, fresh, x)


def test_the_correct_reference_passes_every_check():
    torch.manual_seed(0)
    block = _Scale().double()
    report = check_block(block, torch.randn(3, 2, 3, 3, dtype=torch.float64), fresh=_Scale())
    assert report["logdet_error_forward"] < 1e-10


def _nflows_blocks() -> dict[str, nn.Module]:
    from nflows.nn.nets import ResidualNet
    from nflows.transforms import (
        ActNorm as NflowsActNorm,
    )
    from nflows.transforms import (
        MaskedAffineAutoregressiveTransform,
        PiecewiseRationalQuadraticCouplingTransform,
        ReversePermutation,
    )

    def net(features_in: int, features_out: int) -> nn.Module:
        return ResidualNet(features_in, features_out, hidden_features=8, num_blocks=1)

    mask = torch.tensor([1, 0, 1, 0])
    return {
        "permutation": ReversePermutation(4),
        "actnorm": NflowsActNorm(4),
        "maf": MaskedAffineAutoregressiveTransform(4, 8),
        "spline": PiecewiseRationalQuadraticCouplingTransform(
            mask, net, tails="linear", tail_bound=3.0
        ),
    }


@pytest.mark.parametrize("name", ["permutation", "actnorm", "maf", "spline"])
def test_check_block_accepts_plain_nflows_blocks(name: str) -> None:
    """A plain nflows transform passes every check its math allows (it declares no shape, so
    the shape-error check is the one left out)."""
    torch.manual_seed(0)
    block = _nflows_blocks()[name].double()
    report = check_block(block, torch.randn(3, 4, dtype=torch.float64))
    assert report["logdet_error_forward"] < 1e-8


def test_check_block_rejects_a_broken_nflows_block() -> None:
    """Leaving out the shape check does not make foreign blocks pass: a wrong log-det fails."""
    from nflows.transforms import ReversePermutation

    class OffByOne(ReversePermutation):
        def forward(self, inputs, context=None):
            outputs, logabsdet = super().forward(inputs, context)
            return outputs, logabsdet + 1.0

    with pytest.raises(CheckFailure, match="logabsdet"):
        check_block(OffByOne(4).double(), torch.randn(3, 4, dtype=torch.float64))
