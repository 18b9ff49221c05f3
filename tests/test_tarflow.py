"""Transformer flows (issue #16): what the zoo contract does not already cover.

The zoo property suite (tests/test_zoo_layers.py, test_zoo_models.py) checks every new block
and model (patchify, token_flip, tarflow_block, token_coupling, the ``vit`` conditioner, TarFlow,
Jet) for exact inverses, float64-Jacobian log-dets, batch independence, save/load and shape
errors. Here: the inverses of the TarFlow block against a brute-force reference built from its
forward map alone, the Jacobi stopping rule, bit-exact causality, the KV cache, patchify
against a loop over patches, the scale functions against their formulas, the ViT conditioner in
the existing affine coupling, bf16 models, memory-saving gradients, training and the benchmark.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from flowkit import precision, zoo
from flowkit.errors import ConfigError, ShapeError
from flowkit.layers.base import FlowTransform
from flowkit.layers.coupling import SCALES, bounded_scale
from flowkit.layers.patchify import Patchify, TokenFlip
from flowkit.layers.tarflow_block import TarFlowBlock
from flowkit.layers.transformer import KVCache
from flowkit.models import Jet, TarFlow
from flowkit.testing import (
    check_block,
    check_logabsdet_matches_jacobian,
    perturb_parameters,
)

ROOT = Path(__file__).resolve().parents[1]


def _block(
    perturbation: float = 0.05,
    tokens: int = 8,
    features: int = 3,
    context_features: int | None = None,
    seed: int = 0,
    **kwargs,
) -> TarFlowBlock:
    torch.manual_seed(seed)
    block = TarFlowBlock(
        (tokens, features),
        hidden=16,
        depth=2,
        heads=2,
        context_features=context_features,
        **kwargs,
    ).double()
    perturb_parameters(block, perturbation, torch.Generator().manual_seed(seed + 1))
    return block.eval()


def _brute_force_inverse(block: nn.Module, y: torch.Tensor, context=None) -> torch.Tensor:
    """Invert an autoregressive affine block using only its forward map: token ``i`` of the
    output is affine in token ``i`` of the input given the tokens before it, so two forward
    evaluations (token ``i`` set to 0, then to 1) give its shift and scale."""
    x = torch.zeros_like(y)
    with torch.no_grad():
        for i in range(y.shape[1]):
            at_zero = block(x, context)[0][:, i]
            x_one = x.clone()
            x_one[:, i] = 1.0
            at_one = block(x_one, context)[0][:, i]
            x[:, i] = (y[:, i] - at_zero) / (at_one - at_zero)
    return x


# ----------------------------------------------------------------------------- inverses


@pytest.mark.parametrize("context_features", [None, 3])
def test_kv_cache_and_naive_inverses_equal_the_brute_force_inverse(context_features):
    block = _block(0.1, context_features=context_features)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, 3, generator=g, dtype=torch.float64)
    context = torch.randn(3, 3, generator=g, dtype=torch.float64) if context_features else None
    with torch.no_grad():
        y, logabsdet = block(x, context)
        reference = _brute_force_inverse(block, y, context)
        solutions = {
            "kv": block.inverse_sequential(y, context),
            "naive": block.inverse_naive(y, context),
            "gs_jacobi": block.inverse_gs_jacobi(y, context, group_size=3, tolerance=0.0),
            "jacobi": block.inverse_jacobi(y, context, tolerance=0.0),
        }
    assert (reference - x).abs().max() < 1e-10  # the reference itself is right
    for name, (solution, minus) in solutions.items():
        assert (solution - reference).abs().max() < 1e-10, name
        torch.testing.assert_close(minus, -logabsdet, rtol=0, atol=1e-10)


@pytest.mark.parametrize("tolerance", [1e-2, 1e-4, 1e-6])
def test_jacobi_inverse_error_is_below_its_tolerance(tolerance):
    block = _block(0.05, tokens=12)
    x = torch.randn(4, 12, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        y, _ = block(x)
        reference = _brute_force_inverse(block, y)
        approx, _ = block.inverse_jacobi(y, tolerance=tolerance)
        assert (approx - reference).abs().max() <= tolerance
        assert 1 <= block.last_iterations <= 12
        grouped, _ = block.inverse_gs_jacobi(y, group_size=4, tolerance=tolerance)
        assert (grouped - reference).abs().max() <= tolerance
        assert 3 <= block.last_iterations <= 15  # 3 groups: at most 4 passes + 1 each


def test_jacobi_with_n_passes_is_exact_whatever_the_tolerance_and_in_bf16():
    block = _block(0.2, tokens=6)
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        y, _ = block(x)
        exact, _ = block.inverse_jacobi(y, tolerance=0.0, max_iterations=6)
    assert (exact - _brute_force_inverse(block, y)).abs().max() < 1e-10
    # bf16 conditioners: the fixed point is the inverse of the forward pass *as computed*.
    block32 = block.float()
    with torch.no_grad(), precision.conditioner_precision("bf16"):
        y32, _ = block32(x.float())
        for method in ("jacobi", "sequential", "gs_jacobi"):
            block32.inverse_method = method
            block32.tolerance = 0.0
            block32.group_size = 4
            back, _ = block32.inverse(y32)
            again, _ = block32(back)
            assert (again - y32).abs().max() <= 1e-5, method
            assert (back - x.float()).abs().max() <= 1e-4, method


def test_truncated_jacobi_logdet_is_that_of_the_map_it_computes():
    """Stopped after two passes the iterate is not the exact inverse, but its Jacobian is still
    triangular with the last update's diagonal, so the returned log-det is exact for it."""
    y = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for method in ("jacobi", "gs_jacobi"):
        block = _block(0.3, tokens=5, features=2, inverse_method=method, max_iterations=2)
        block.group_size = 3
        check_logabsdet_matches_jacobian(block, y, direction="inverse")
        exact = _brute_force_inverse(block, y)
        assert (block.inverse(y)[0] - exact).abs().max() > 1e-6  # truncated indeed


@pytest.mark.parametrize("bf16", [False, True])
def test_outputs_depend_bit_for_bit_on_earlier_tokens_only(bf16):
    block = _block(0.3, tokens=8).float()
    x = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(6))
    changed = x.clone()
    changed[:, 5:] += torch.randn(2, 3, 3)
    with torch.no_grad(), precision.conditioner_precision("bf16" if bf16 else None):
        params = precision.run_conditioner(block.conditioner, x)
        other = precision.run_conditioner(block.conditioner, changed)
    assert torch.equal(params[:, :6], other[:, :6])  # token i's parameters see tokens < i
    assert not torch.equal(params[:, 6:], other[:, 6:])


def test_kv_cache_steps_and_chunks_equal_the_parallel_pass():
    """One token or a chunk of tokens at a time, uncommitted chunks leaving the cache as it
    was: every output equals the parallel pass's (float64 round-off)."""
    block = _block(0.3, tokens=7, context_features=2)
    net = block.conditioner
    g = torch.Generator().manual_seed(7)
    tokens = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    label = torch.nn.functional.one_hot(torch.tensor([0, 1, 1]), 2).double()
    shifted = torch.cat([torch.zeros(3, 1, 3, dtype=torch.float64), tokens[:, :-1]], dim=1)
    with torch.no_grad():
        full = net(tokens, label)
        cache = KVCache()
        steps = [net(shifted[:, i : i + 1], label, cache, i) for i in range(7)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)
        cache = KVCache()
        chunks = []
        for first, last in ((0, 3), (3, 4), (4, 7)):
            chunk = shifted[:, first:last]
            wrong = net(chunk + 1.0, label, cache, first, False)  # not kept
            assert cache.length == first and not torch.equal(wrong, full[:, first:last])
            chunks.append(net(chunk, label, cache, first, True))
        torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="position"):
        net(tokens[:, :1], label, KVCache(), 2)


def test_null_class_is_the_class_embedding_bias():
    block = _block(0.3, context_features=3)
    embedding = block.conditioner.context
    zero = torch.zeros(2, 3, dtype=torch.float64)
    torch.testing.assert_close(embedding(zero), embedding.bias.expand(2, -1))
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.equal(block(x, zero)[0], block(x, torch.eye(3)[:2].double())[0])


# ----------------------------------------------------------------------------- tokens


def test_patchify_matches_a_loop_over_patches():
    x = torch.randn(2, 3, 4, 6)
    block = Patchify((3, 4, 6), patch_size=2)
    y, logabsdet = block(x)
    reference = torch.empty(2, 6, 12)
    for h in range(2):
        for w in range(3):
            for i in range(2):
                for j in range(2):
                    for c in range(3):
                        reference[:, h * 3 + w, (i * 2 + j) * 3 + c] = x[:, c, 2 * h + i, 2 * w + j]
    assert torch.equal(y, reference) and torch.equal(logabsdet, torch.zeros(2))
    assert torch.equal(block.inverse(y)[0], x)
    assert torch.equal(TokenFlip((6, 12))(y)[0], reference.flip(1))


def test_token_blocks_take_sequence_shapes_only():
    with pytest.raises(ConfigError, match=r"\(N, D\)"):
        TokenFlip((2, 4, 4))
    with pytest.raises(ConfigError, match="divisible"):
        Patchify((1, 5, 4), patch_size=2)
    block = TokenFlip((4, 3))
    with pytest.raises(ShapeError, match="TokenFlip"):
        block(torch.zeros(2, 3, 4))
    assert isinstance(block, FlowTransform)


@pytest.mark.parametrize("scale", SCALES)
def test_scale_functions_match_their_formulas(scale):
    h = torch.linspace(-30, 30, 601, dtype=torch.float64)
    c = 2.0
    formulas = {
        "sigmoid": 0.1 + 1.8 / (1 + torch.exp(-h)),
        "softclamp": torch.exp(c * torch.tanh(h / c)),
        "exp": torch.exp(h * (1 + (h / c) ** 4) ** -0.25),
        "2sigmoid": 2 / (1 + torch.exp(-h)),
    }
    value, log_value = bounded_scale(h, scale, c)
    torch.testing.assert_close(value, formulas[scale], rtol=1e-12, atol=1e-300)
    # The log is computed directly: finite where the value underflows to 0 for 2sigmoid.
    finite = formulas[scale] > 1e-250
    torch.testing.assert_close(log_value[finite], torch.log(formulas[scale][finite]))
    one, zero = bounded_scale(torch.zeros(1, dtype=torch.float64), scale, c)
    assert float(one) == pytest.approx(1.0) and float(zero) == pytest.approx(0.0, abs=1e-15)
    if scale == "exp":  # nearly exp(h) well inside the clamp, bounded by it outside
        inside = h.abs() <= c / 2
        assert torch.allclose(log_value[inside], h[inside], rtol=0.02, atol=0)
        assert log_value.abs().max() < c


# ----------------------------------------------------------------------------- ViT / Jet


@pytest.mark.parametrize("patch_size", [1, 2])
def test_vit_conditioner_drives_the_existing_affine_coupling(patch_size):
    torch.manual_seed(0)
    conditioner = ("vit", {"patch_size": patch_size, "depth": 1, "heads": 2})
    block = zoo.build(
        "layer", "affine_coupling", in_shape=(2, 4, 4), conditioner=conditioner, hidden=8
    ).double()
    fresh = copy.deepcopy(block)
    perturb_parameters(block, 0.2, torch.Generator().manual_seed(1))
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    report = check_block(block, x, fresh=fresh)
    assert report["logdet_error_forward"] < 1e-8


def test_token_coupling_spatial_masks():
    from flowkit.layers.token_coupling import split_indices

    kept, moved = split_indices("checkerboard", (6, 2), grid=(2, 3))
    assert kept == [0, 2, 4] and moved == [1, 3, 5]
    kept, moved = split_indices("stripes", (6, 2), grid=(2, 3), swap=True)
    assert kept == [3, 4, 5] and moved == [0, 1, 2]
    block = zoo.build("layer", "token_coupling", in_shape=(6, 2), split="checkerboard", hidden=8)
    perturb_parameters(block, 0.3, torch.Generator().manual_seed(0))
    x = torch.randn(2, 6, 2)
    y, _ = block(x)
    assert torch.equal(y[:, [0, 2, 4]], x[:, [0, 2, 4]])  # kept tokens pass unchanged
    assert not torch.allclose(y[:, [1, 3, 5]], x[:, [1, 3, 5]])


# ----------------------------------------------------------------------------- models


def _model(cls, **kwargs):
    torch.manual_seed(0)
    model = cls(in_shape=(1, 8, 8), patch_size=2, levels=2, steps=1, hidden=16, heads=2, **kwargs)
    g = torch.Generator().manual_seed(1)
    perturb_parameters(model, 0.05, g)
    x = torch.rand(6, 1, 8, 8, generator=g) - 0.5
    y = torch.arange(6) % 3 if kwargs.get("num_classes") else None
    return model.eval(), x, y


@pytest.mark.parametrize("cls", [TarFlow, Jet])
def test_bf16_models_invert_and_logdet_matches_float64(cls):
    model, x, y = _model(cls, num_classes=3, class_context=True)
    with torch.no_grad(), precision.conditioner_precision("bf16"):
        z, logabsdet = model(x, y)
        x_back, minus = model.inverse(z, y)
    assert z.dtype == torch.float32 and logabsdet.dtype == torch.float32
    assert (x_back - x).abs().max() <= 1e-4
    torch.testing.assert_close(minus, -logabsdet, rtol=1e-5, atol=1e-3)
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        z64, logabsdet64 = reference(x.double(), y)
    # bf16 changes the conditioners (by design): by well under 1e-3 nats per dimension.
    assert (logabsdet.double() - logabsdet64).abs().max() / model.num_dims < 1e-3
    assert (z.double() - z64).abs().max() <= 0.05


@pytest.mark.parametrize("cls", [TarFlow, Jet])
def test_bf16_policy_inside_the_transformers_only(cls):
    model, x, y = _model(cls, num_classes=3, class_context=True)
    seen: dict[str, set] = {"inside": set(), "outside": set()}
    inside = {m for b in model.modules() for m in getattr(b, "conditioner", nn.Module()).modules()}

    def probe(module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        seen["inside" if module in inside else "outside"].add(out.dtype)

    handles = [
        m.register_forward_hook(probe)
        for m in model.modules()
        if isinstance(m, (nn.Linear, FlowTransform))
    ]
    try:
        with torch.no_grad(), precision.conditioner_precision("bf16"):
            model.log_prob(x, y)
            model.sample(2, y=1)
    finally:
        for handle in handles:
            handle.remove()
    assert seen["inside"] == {torch.bfloat16}
    assert seen["outside"] == {torch.float32}


def test_tarflow_memory_saving_gives_the_same_gradients():
    torch.manual_seed(0)
    model = TarFlow(in_shape=(1, 4, 4), patch_size=2, levels=2, steps=1, hidden=8, heads=2)
    model = model.double()
    perturb_parameters(model, 0.1, torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    grads = []
    for saving in (False, True):
        model.zero_grad()
        model.memory_saving = saving
        (-model.log_prob(x).mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, saved in zip(*grads, strict=True):
        torch.testing.assert_close(plain, saved, rtol=1e-7, atol=1e-9)


def test_tarflow_sampling_methods_and_temperature(tmp_path):
    model, _, _ = _model(TarFlow, num_classes=3)
    generator = torch.Generator().manual_seed(0)
    latents = model.sample_latents(4, y=1, temperature=0.0, generator=generator)
    assert torch.equal(latents[0], model.prior.mean[1].reshape(1, 16, 4).expand(4, -1, -1))
    z = model.flatten_latents(model.sample_latents(4, y=1, temperature=0.7))
    with torch.no_grad():
        sequential = model.inverse(z, torch.full((4,), 1))[0]
        model.set_inverse_method("jacobi", tolerance=1e-7)
        jacobi = model.inverse(z, torch.full((4,), 1))[0]
    assert (sequential - jacobi).abs().max() < 1e-4
    model.save(tmp_path / "tarflow.safetensors")
    from flowkit import load

    loaded = load(tmp_path / "tarflow.safetensors")
    assert isinstance(loaded, TarFlow) and loaded.config == model.config


def test_jet_rejects_a_channel_split_of_one_feature():
    with pytest.raises(ConfigError, match="at least 2"):
        Jet(in_shape=(1, 4, 4), patch_size=1, levels=1, steps=1, hidden=8, heads=2)


@pytest.mark.parametrize("name", ["tarflow", "jet"])
def test_trainer_trains_the_transformer_flows(name):
    from flowkit.training import TrainConfig, train

    config = TrainConfig(
        model=name,
        model_kwargs={"levels": 2, "steps": 1, "hidden": 8, "heads": 2, "patch_size": 4},
        image_size=16,
        synthetic_size=64,
        steps=4,
        batch_size=16,
        lr=3e-3,
        warmup_steps=1,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        quality_metrics=False,
        tensorboard=False,
        out=None,
    )
    result = train(config, progress=False, log=lambda _m: None)
    assert all(math.isfinite(h["train_bpd"]) for h in result.history)
    assert result.history[-1]["train_bpd"] < result.history[0]["train_bpd"]


def test_benchmark_quick_mode_writes_its_table(tmp_path):
    out = tmp_path / "tarflow.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.tarflow", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    methods = {row["method"] for row in result["sampling"]}
    assert methods == {"sequential (KV cache)", "jacobi", "gs_jacobi (groups of 8)"}
    for row in result["sampling"]:
        bound = 1e-4 if row["tolerance"] is None else 10 * row["tolerance"]
        assert row["samples_per_s"] > 0 and row["inverse_error"] < bound, row
    assert result["training"]["flow_ms"] > 0 and result["training"]["plain_ms"] > 0
    assert "sequential" in run.stdout and "overhead" in run.stdout


@pytest.mark.parametrize("cls", [TarFlow, Jet])
def test_guided_sampling_inverts_the_guided_flow(cls):
    """Under classifier-free guidance every conditioner mixes its predictions with and without
    the class (one batched call, so the KV cache sees one stream): the guided map is still a
    flow, and the sequential, Jacobi and forward passes agree on it."""
    from flowkit.guidance import guidance

    torch.manual_seed(0)
    model = cls(
        in_shape=(1, 8, 8),
        patch_size=2,
        levels=2,
        steps=1,
        hidden=16,
        heads=2,
        num_classes=3,
        class_context=True,
    ).double()
    perturb_parameters(model, 0.1, torch.Generator().manual_seed(0))
    z = torch.randn(4, model.num_latent_dims, dtype=torch.float64)
    y = torch.arange(4) % 3
    with torch.no_grad():
        plain = model.inverse(z, y)[0]
        with guidance(2.0):
            x, logabsdet = model.inverse(z, y)
            z_again, forward_logabsdet = model(x, y)
            if cls is TarFlow:
                model.set_inverse_method("jacobi", tolerance=0.0)
                assert (model.inverse(z, y)[0] - x).abs().max() < 1e-10
    assert (z_again - z).abs().max() < 1e-10
    assert (logabsdet + forward_logabsdet).abs().max() < 1e-10
    assert (plain - x).abs().max() > 1e-3  # guidance changed the samples


@pytest.mark.parametrize("cls", [TarFlow, Jet])
@pytest.mark.parametrize("method", ["condition", "mean_shift"])
def test_expression_edits_of_the_transformer_flows_undo_exactly(cls, method):
    """flowkit.editing works on TarFlow and Jet like on the multi-scale flows: an edit from
    expression a to b followed by the edit back from b to a returns the faces (both edits are
    exact inverses of each other: a latent shift, or a transport between class Gaussians), and
    the edit itself changes them."""
    from flowkit.editing import LatentStatistics, label_transfer

    torch.manual_seed(0)
    model = cls(
        in_shape=(1, 8, 8),
        patch_size=2,
        levels=2,
        steps=1,
        hidden=16,
        heads=2,
        num_classes=3,
        class_context=True,
    ).double()
    generator = torch.Generator().manual_seed(1)
    perturb_parameters(model, 0.05, generator)
    model.eval()
    x = (torch.rand(24, 1, 8, 8, generator=generator, dtype=torch.float64) - 0.5) * 0.8
    y = torch.arange(24) % 3
    stats = LatentStatistics.fit(model, x, y) if method == "mean_shift" else None
    faces, source = x[:6], y[:6]
    target = (source + 1) % 3
    edited = label_transfer(model, faces, source, target, stats, method=method, clamp=False)
    back = label_transfer(model, edited, target, source, stats, method=method, clamp=False)
    assert (edited - faces).abs().max() > 1e-3
    torch.testing.assert_close(back, faces, rtol=0, atol=1e-9)
