"""Property tests that enumerate the zoo: every registered layer gets every check (DESIGN §2).

Each check runs in two precision modes: strict (the block in float64, conditioners too) and
reduced (the block in float32 with conditioners under bf16 autocast, checked at float32
tolerances against a float64 ``slogdet`` of the Jacobian).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from zoo_cases import Case, cases

from flowkit import precision, zoo
from flowkit.testing import (
    check_invertible,
    check_logabsdet_cancels,
    check_logabsdet_matches_jacobian,
    check_logabsdet_shape,
    check_shape_errors,
    check_state_dict_roundtrip,
)

LAYERS = zoo.entries("layer")
MODES = {"strict": (None, torch.float64), "bf16": ("bf16", torch.float32)}


def _run(entry, mode: str, data: st.DataObject, check) -> None:
    precision_mode, dtype = MODES[mode]
    with precision.conditioner_precision(precision_mode):
        case: Case = data.draw(cases(entry, dtype))
        for training in (True, False):
            case.block.train(training)
            check(case)


params = pytest.mark.parametrize("entry", LAYERS, ids=[e.name for e in LAYERS])
modes = pytest.mark.parametrize("mode", list(MODES))


@params
@modes
@given(data=st.data())
def test_invertible(entry, mode, data):
    _run(entry, mode, data, lambda c: check_invertible(c.block, c.x, c.context))


@params
@modes
@given(data=st.data())
def test_logabsdet_matches_float64_jacobian(entry, mode, data):
    def check(c: Case) -> None:
        check_logabsdet_matches_jacobian(c.block, c.x, c.context)
        y = c.block(c.x, c.context)[0].detach() if c.context is not None else c.block(c.x)[0]
        check_logabsdet_matches_jacobian(c.block, y.detach(), c.context, direction="inverse")

    _run(entry, mode, data, check)


@params
@modes
@given(data=st.data())
def test_logabsdets_cancel_and_have_batch_shape(entry, mode, data):
    def check(c: Case) -> None:
        check_logabsdet_shape(c.block, c.x, c.context)
        check_logabsdet_cancels(c.block, c.x, c.context)

    _run(entry, mode, data, check)


@params
@given(data=st.data())
def test_state_dict_and_torch_save_round_trip(entry, data):
    _run(
        entry,
        "strict",
        data,
        lambda c: check_state_dict_roundtrip(c.block, c.fresh, c.x, c.context),
    )


@params
@given(data=st.data())
def test_wrong_shape_raises_clear_error(entry, data):
    _run(entry, "strict", data, lambda c: check_shape_errors(c.block, c.x, c.context))


def test_zoo_lists_the_promised_blocks():
    promised_layers = {
        "actnorm",
        "conv1x1",
        "squeeze",
        "affine_coupling",
        "additive_coupling",
        "linear_coupling",
        "pca_projection",
        "split",
    }
    promised_conditioners = {"glow", "conv3x3", "inception_a", "inception_b", "mlp"}
    assert promised_layers <= set(zoo.names("layer"))
    assert promised_conditioners <= set(zoo.names("conditioner"))
