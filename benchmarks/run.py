"""flowkit's speed and memory benchmark, side by side with the same Glow built from nflows blocks.

    python -m benchmarks.run            # full run (Glow and BPLF at 1x48x48 and 1x64x64, batch 64)
    python -m benchmarks.run --quick    # smoke mode for CI (tiny shapes, < 60 s)

Prints a table and writes JSON to ``benchmarks/results/`` (and, with ``--markdown PATH``, a
markdown summary). Every configuration runs in a fresh child process:

* a *peaks* child measures the machine's fp32 / bf16 convolution and matmul rates;
* one *timing* child per (model, image size) builds flowkit's model in every preset and the
  nflows Glow of the same shape, and interleaves their rounds (A B C A B C ...), so load
  changes hit all alike and each figure is also a ratio flowkit/nflows: training step (forward,
  NLL, backward, Adam), log_prob and sampling throughput, FLOPs per image
  (``torch.utils.flop_counter.FlopCounterMode``), achieved GFLOP/s, and the fast preset's
  invertibility error and log-det error against a float64 copy of the same weights;
* one *memory* child per (variant, model, size) runs a few training steps and reports its peak
  RSS (``ru_maxrss``) and minor page faults per step (``ru_minflt``), with and without raised
  glibc malloc thresholds (:data:`flowkit.allocator.MALLOC_ENV`), and the memory-saving presets
  under the start-up they are meant for (:data:`flowkit.allocator.LOW_MEMORY_ENV`).

Why one file of ~1,100 lines: it is a script outside the library, and the child processes above
re-enter it by name (``python -m benchmarks.run --child KIND``), so the whole measurement a
report was made with is one file to read and pin. Its speed knobs are flowkit's own
(:data:`flowkit.performance.PRESETS`), the same settings the trainer applies.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import cpu_name
from flowkit.allocator import LOW_MEMORY_ENV, MALLOC_ENV

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FLOWKIT_PRESETS = ("strict", "fast", "fast-memory", "train-default")
#: Not a preset: what ``flowkit train`` applies with its default settings on this machine
#: (``precision="auto"`` resolved for the model, float32 stream, see flowkit.training.setup).
TRAIN_DEFAULT = "train-default"


# ---------------------------------------------------------------------------------- helpers


def median_time(fn: Callable[[], Any], rounds: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, rounds interleaved across functions."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> dict[str, Any]:
    import torch

    cpu = cpu_name()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------- models


def data_batch(batch: int, shape: tuple[int, int, int], seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    # Dequantised 8-bit data scaled to [-0.5, 0.5), like flowkit.data.preprocess.
    q = torch.randint(0, 256, (batch, *shape), generator=g).float()
    return (q + torch.rand(batch, *shape, generator=g)) / 256.0 - 0.5


def build_flowkit(model: str, shape: tuple[int, int, int], levels: int, steps: int, hidden: int):
    import torch

    from flowkit.models import BPLF, Glow, TarFlow

    torch.manual_seed(0)
    if model == "glow":
        return Glow(in_shape=shape, levels=levels, steps=steps, hidden=hidden)
    if model == "bplf":
        return BPLF(in_shape=shape, levels=levels, steps=steps, hidden=hidden)
    if model == "tarflow":
        # TarFlow's own layout (4 blocks of 2 causal layers over 4x4 patches), at this width:
        # levels x steps of a multi-scale flow do not map onto it.
        return TarFlow(in_shape=shape, patch_size=4, levels=4, steps=2, hidden=hidden)
    raise ValueError(model)


def build_nflows(shape: tuple[int, int, int], levels: int, steps: int, hidden: int):
    import torch

    from benchmarks.nflows_glow import nflows_glow

    torch.manual_seed(0)
    return nflows_glow(shape, levels, steps, hidden)


def train_default_settings(model: Any) -> Any:
    """The speed settings ``flowkit train`` with its defaults applies to ``model`` here."""
    import torch

    from flowkit.training import TrainConfig
    from flowkit.training.setup import resolve_precision, speed_settings

    config = TrainConfig()
    precision, _ = resolve_precision(model, config, torch.device("cpu"))
    return speed_settings(model, config, precision)


class Runner:
    """Uniform train / log_prob / sample calls for an nflows flow or a flowkit preset."""

    def __init__(self, variant: str, spec: dict[str, Any], x):
        import torch

        from flowkit import performance

        self.variant = variant
        shape = tuple(spec["shape"])
        self.x = x
        self.nflows = variant == "nflows"
        if self.nflows:
            self.model = build_nflows(shape, spec["levels"], spec["steps"], spec["hidden"])
            self.model.train()
            with torch.no_grad():
                self.model.log_prob(x)  # nflows' ActNorm initialises on its first batch
        else:
            self.model = build_flowkit(
                spec["model"], shape, spec["levels"], spec["steps"], spec["hidden"]
            )
            self.model.initialize(x)
            if variant == TRAIN_DEFAULT:
                self.preset = train_default_settings(self.model)
            else:
                self.preset = performance.settings(variant)
            if spec.get("tune_malloc") is False and variant != TRAIN_DEFAULT:
                # Memory rows "default": keep glibc's defaults even for presets that tune them.
                self.preset = dataclasses.replace(self.preset, tune_malloc=False)
            if variant != TRAIN_DEFAULT:  # speed_settings has prepared it
                performance.prepare(self.model, self.preset)
        if variant == TRAIN_DEFAULT:
            from flowkit.training.step import make_optimizer

            self.optimizer = make_optimizer(self.model, 1e-5)  # the trainer's (fused) Adam
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-5)

    def _mode(self):
        import contextlib

        from flowkit import performance

        return contextlib.nullcontext() if self.nflows else performance.mode(self.preset)

    def loss(self):
        with self._mode():
            return -self.model.log_prob(self.x).mean()

    def train_step(self) -> float:
        self.model.train()
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def log_prob(self):
        import torch

        self.model.eval()
        with torch.no_grad(), self._mode():
            return self.model.log_prob(self.x)

    def sample(self, n: int, inference_mode: bool = True):
        import torch

        from flowkit import performance

        self.model.eval()
        if self.nflows:
            with torch.no_grad():
                return self.model.sample(n)
        if not inference_mode:
            with torch.no_grad(), self._mode():
                return self.model.sample(n, temperature=0.7)
        return performance.sample(self.model, n, temperature=0.7, preset=self.preset)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn`` (forward and backward ops) with ``torch.utils.flop_counter``'s formulas.

    A bare dispatch mode rather than ``FlopCounterMode`` itself: the latter's module tracker
    hooks every module call and cannot follow ``torch.autograd.grad`` inside a backward pass
    (memory-saving recompute) or tensors created under ``inference_mode``.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += int(formula(*args, **kwargs, out_val=out))
            return out

    with Counter() as counter:
        fn()
    return counter.total


# ---------------------------------------------------------------------------------- children


def child_peaks(spec: dict[str, Any]) -> dict[str, Any]:
    """Machine peaks: fp32 / bf16 (channels-last) 3x3 convolution and matmul GFLOP/s."""
    import torch
    import torch.nn.functional as F

    quick = spec.get("quick", False)
    rounds = 3 if quick else spec.get("rounds", 7)
    n, c, hw = (8, 64, 16) if quick else (64, 128, 24)
    m = 256 if quick else 2048
    out: dict[str, Any] = {}
    x = torch.randn(n, c, hw, hw)
    w = torch.randn(c, c, 3, 3)
    conv_flops = 2 * n * c * c * 9 * hw * hw
    mm_flops = 2 * m**3
    a, b = torch.randn(m, m), torch.randn(m, m)
    with torch.inference_mode():
        cases = {
            "conv_fp32": (lambda: F.conv2d(x, w, padding=1), conv_flops),
            "conv_fp32_channels_last": (
                lambda: F.conv2d(xc, wc, padding=1),
                conv_flops,
            ),
            "conv_bf16_channels_last": (
                lambda: F.conv2d(xb, wb, padding=1),
                conv_flops,
            ),
            "matmul_fp32": (lambda: a @ b, mm_flops),
            "matmul_bf16": (lambda: ab @ bb, mm_flops),
        }
        xc = x.contiguous(memory_format=torch.channels_last)
        wc = w.contiguous(memory_format=torch.channels_last)
        xb, wb = xc.bfloat16(), wc.bfloat16()
        ab, bb = a.bfloat16(), b.bfloat16()
        for name, (fn, flops) in cases.items():
            # A peak is the best the machine does: the fastest round, robust to other load.
            times = [median_time(fn, 1, warmup=2 if i == 0 else 0) for i in range(rounds)]
            out[name] = flops / min(times) / 1e9
    return out


def precision_check(runner: Runner, spec: dict[str, Any]) -> dict[str, float]:
    """Fast preset: max |x - f⁻¹(f(x))| and log-det / log-prob relative errors vs float64."""
    import torch

    from flowkit import performance

    model = runner.model
    x = runner.x[: min(16, runner.x.shape[0])]
    model.eval()
    with torch.no_grad(), performance.mode(runner.preset):
        z, logabsdet = model(x)
        x_back, _ = model.inverse(z)
        log_prob = model.log_prob(x)
    reference = copy.deepcopy(model).double()
    performance.prepare(reference, "strict")
    with torch.no_grad(), performance.mode("strict"):
        z64, logabsdet64 = reference(x.double())
        log_prob64 = reference.log_prob(x.double())
    rel = ((logabsdet.double() - logabsdet64).abs() / logabsdet64.abs().clamp_min(1e-12)).max()
    rel_lp = ((log_prob.double() - log_prob64).abs() / log_prob64.abs().clamp_min(1e-12)).max()
    return {
        "inverse_max_abs_error": float((x_back - x).abs().max()),
        "logabsdet_max_rel_error_vs_float64": float(rel),
        "log_prob_max_rel_error_vs_float64": float(rel_lp),
        "latent_max_abs_error_vs_float64": float((z.double() - z64).abs().max()),
    }


def conditioner_calls(runner: Runner) -> list[tuple[Any, tuple]]:
    """Every conditioner network a log_prob call runs, with a copy of the arguments it got.

    flowkit's couplings keep theirs as ``conditioner``, nflows' as ``transform_net``.
    """
    import torch

    nets = []
    for module in runner.model.modules():
        for attr in ("conditioner", "transform_net"):
            net = getattr(module, attr, None)
            if isinstance(net, torch.nn.Module):
                nets.append(net)
    calls: list[tuple[Any, tuple]] = []

    def record(net, args):
        calls.append((net, tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args)))

    handles = [net.register_forward_pre_hook(record) for net in nets]
    try:
        runner.log_prob()
    finally:
        for h in handles:
            h.remove()
    return calls


def replay(runner: Runner, net: Any, args: tuple) -> Any:
    """One recorded conditioner call, run as the model runs it (flowkit: under the variant's
    precision through :func:`flowkit.precision.run_conditioner`, float32 out)."""
    from flowkit.precision import run_conditioner

    with runner._mode():
        return net(*args) if runner.nflows else run_conditioner(net, *args)


def conditioner_work(runner: Runner) -> dict[str, Callable[[], Any]]:
    """The conditioner networks alone, replayed with the inputs they get in the model.

    ``forward``: every conditioner once under the variant's precision (what sampling must
    compute); ``train``: forward and backward (input and weight gradients, what a training step
    must compute). For the fast preset this is the bf16 channels-last work of the same
    PyTorch kernels the model uses, with no invertible arithmetic, Python or optimizer around
    it: nflows' time divided by it bounds the speed-up any implementation built on these
    kernels can reach.
    """
    import torch

    calls = conditioner_calls(runner)

    def run(net, args):
        return replay(runner, net, args)

    with torch.no_grad():
        grads = [torch.randn_like(run(net, args).float()) for net, args in calls]
    inputs = [(net, (args[0].requires_grad_(), *args[1:])) for net, args in calls]

    def forward():
        with torch.inference_mode():
            for net, args in calls:
                run(net, args)

    def train():
        for (net, args), g in zip(inputs, grads, strict=True):
            run(net, args).float().backward(g)
        for net, args in inputs:
            args[0].grad = None
            for p in net.parameters():
                p.grad = None

    return {"forward": forward, "train": train}


def child_timing(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    shape = tuple(spec["shape"])
    batch, rounds, warmup = spec["batch"], spec["rounds"], spec["warmup"]
    x = data_batch(batch, shape)
    variants = ["nflows", *spec["presets"]] if spec["nflows"] else list(spec["presets"])
    runners = {v: Runner(v, spec, x) for v in variants}
    results: dict[str, Any] = {v: {} for v in variants}

    # Move the weights off their zero / identity start so log-dets and conditioner outputs are
    # not trivially exact: a few identical-lr Adam steps for everyone (not timed).
    for r in runners.values():
        for g in r.optimizer.param_groups:
            g["lr"] = 1e-3
        for _ in range(spec.get("pretrain_steps", 3)):
            r.train_step()
        for g in r.optimizer.param_groups:
            g["lr"] = 1e-5

    for v, r in runners.items():
        results[v]["parameters"] = sum(p.numel() for p in r.model.parameters())
        small = Runner.__new__(Runner)
        small.__dict__.update(r.__dict__)
        small.x = x[:2]
        results[v]["flops_train_per_image"] = count_flops(small.train_step) / 2
        results[v]["flops_log_prob_per_image"] = count_flops(small.log_prob) / 2
        # Dispatch modes do not see ops under inference_mode: count the same calls in no_grad.
        results[v]["flops_sample_per_image"] = count_flops(lambda r=r: r.sample(2, False)) / 2

    sample_variants = [v for v in variants if not v.endswith("-memory")]
    # The conditioners alone (see conditioner_work) run in the same interleaved rounds as the
    # calls they are part of, so a change of machine load between phases cannot skew the share.
    work = {v: conditioner_work(runners[v]) for v in sample_variants}
    train = interleaved(
        {v: r.train_step for v, r in runners.items()}
        | {f"{v} conditioners": w["train"] for v, w in work.items()},
        rounds,
        warmup,
    )
    log_prob = interleaved({v: runners[v].log_prob for v in sample_variants}, rounds, warmup)
    sample = interleaved(
        {v: (lambda r=runners[v]: r.sample(batch)) for v in sample_variants}
        | {f"{v} conditioners": w["forward"] for v, w in work.items()},
        rounds,
        warmup,
    )
    for v in variants:
        res = results[v]
        res["train_step_s"] = train[v]
        res["train_images_per_s"] = batch / train[v]
        res["train_gflops"] = res["flops_train_per_image"] * batch / train[v] / 1e9
        if v in log_prob:
            res["log_prob_images_per_s"] = batch / log_prob[v]
            res["log_prob_gflops"] = res["flops_log_prob_per_image"] * batch / log_prob[v] / 1e9
            res["sample_images_per_s"] = batch / sample[v]
            res["sample_gflops"] = res["flops_sample_per_image"] * batch / sample[v] / 1e9
        if v != "nflows":
            with torch.no_grad():
                res["precision"] = precision_check(runners[v], spec)
                res["precision_choice"] = runners[v].preset.precision
    for v in work:
        results[v]["conditioners_forward_s"] = sample[f"{v} conditioners"]
        results[v]["conditioners_train_s"] = train[f"{v} conditioners"]
    if spec.get("compile"):
        results["fast-compiled"] = compiled_timing(spec, x, rounds, warmup)
    return {"variants": results, "loadavg_end": os.getloadavg()}


def compiled_timing(spec: dict[str, Any], x, rounds: int, warmup: int) -> dict[str, Any]:
    """The fast preset with every conditioner compiled (torch.compile), timed after compiling."""
    from flowkit import performance

    r = Runner("fast", spec, x)
    performance.compile_conditioners(r.model, dynamic=False)
    start = time.perf_counter()
    try:
        r.train_step()
        r.log_prob()
        r.sample(x.shape[0])
    except Exception as err:  # noqa: BLE001 - report, do not fail the benchmark
        return {"error": f"{type(err).__name__}: {err}"[:500]}
    compile_s = time.perf_counter() - start
    batch = x.shape[0]
    return {
        "compile_s": compile_s,
        "train_step_s": median_time(r.train_step, rounds, warmup),
        "log_prob_images_per_s": batch / median_time(r.log_prob, rounds, warmup),
        "sample_images_per_s": batch / median_time(lambda: r.sample(batch), rounds, warmup),
    }


def child_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS and page faults of a few training steps of one variant (fresh process)."""
    shape = tuple(spec["shape"])
    x = data_batch(spec["batch"], shape)
    r = Runner(spec["variant"], spec, x)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r.train_step()  # warm-up: first-touch allocations
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(spec["steps_measured"]):
        start = time.perf_counter()
        r.train_step()
        times.append(time.perf_counter() - start)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "rss_after_build_mib": rss_built,
        "minor_faults_per_step": (usage.ru_minflt - faults0) / spec["steps_measured"],
        "train_step_s": statistics.median(times),
    }


#: Start-up environment of each malloc label of the RSS table ("mallopt": none, the preset
#: raises the thresholds in-process; "thp": the memory-saving presets' start-up, see
#: flowkit.allocator, under which the preset leaves glibc's thresholds alone).
MALLOC_LABEL_ENV: dict[str, dict[str, str]] = {
    "default": {},
    "env": MALLOC_ENV,
    "mallopt": {},
    "thp": LOW_MEMORY_ENV,
}


def memory_plan(models: list[str], quick: bool) -> list[tuple[str, str, str]]:
    """(variant, model, malloc) rows of the RSS table. malloc: "default" (glibc defaults, no
    tuning), "env" (MALLOC_ENV at start-up), "mallopt" (no env; the preset tunes in-process),
    "thp" (LOW_MEMORY_ENV at start-up, as the CLI starts memory-saving training)."""
    if quick:
        return [("nflows", "glow", "default"), ("fast", "glow", "mallopt")] + [
            ("fast-memory", m, "thp") for m in models
        ]
    rows = [
        ("nflows", "glow", "default"),
        ("nflows", "glow", "env"),
        ("strict", "glow", "default"),
        ("strict", "glow", "mallopt"),
        ("fast", "glow", "default"),
        ("fast", "glow", "env"),
        ("fast", "glow", "mallopt"),
        ("fast-memory", "glow", "mallopt"),
    ]
    for m in models:
        rows += [("fast-memory", m, "thp"), ("strict-memory", m, "thp")]
    if "bplf" in models:
        rows += [("strict", "bplf", "mallopt"), ("fast", "bplf", "mallopt")]
    return rows


CHILDREN = {"peaks": child_peaks, "timing": child_timing, "memory": child_memory}


def run_child(kind: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    child_env.update(env or {})
    child_env["PYTHONPATH"] = str(ROOT) + os.pathsep + child_env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", kind, "--spec", json.dumps(spec)]
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"error": f"child {kind} failed (rc {proc.returncode}): {tail}"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT ") :])
    return {"error": "child printed no result"}


# ---------------------------------------------------------------------------------- report


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or math.isnan(value):
            return f"{value:g}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


MARKDOWN_HEADER = """# flowkit speed and memory vs nflows

Generated by `{command}` (`benchmarks/run.py`; raw JSON in `benchmarks/results/`).

What is measured: a Glow of L levels x K steps (actnorm, LU 1x1 conv, affine coupling with a
3x3-1x1-3x3 conditioner of `hidden` channels) and BPLF (linear couplings, conv3x3 conditioner,
PCA input), against the same Glow built from nflows blocks (`benchmarks/nflows_glow.py`:
ActNorm, OneByOneConvolution, AffineCouplingTransform, SqueezeTransform,
MultiscaleCompositeTransform). The nflows build has standard-normal split priors, flowkit's
Glow learned ones, hence ~11 % more FLOPs per image for flowkit. BPLF rows are compared with
the nflows *Glow* of the same shape (nflows has no linear coupling), so their ratios compare
different architectures (BPLF's conv3x3 conditioner has ~3-4x the FLOPs).

- training step = forward, NLL, backward, Adam; log_prob and sampling in eval mode under
  `no_grad` (nflows) / `inference_mode` (flowkit's `performance.sample`).
- Timing: one child process per (model, size); variants built side by side and their rounds
  interleaved (medians), all under the raised malloc thresholds (nflows too), so the ratios are
  like-for-like. The memory table runs each row in a fresh process and shows the allocator
  effect separately.
- Presets (`flowkit.performance`): `strict` = float32 everywhere + channels-last conditioner
  weights + raised malloc thresholds; `fast` = bf16-autocast conditioners (the invertible
  arithmetic runs in a float64 stream around them) + the same; `*-memory` = + memory-saving
  backprop (`flowkit.memory`).
- FLOPs: conv / matmul FLOPs of one call (torch.utils.flop_counter formulas); memory-saving
  rows count the recompute too. "% of peak" divides achieved training GFLOP/s by the measured
  fp32 conv peak (strict, nflows) or bf16 channels-last conv peak (fast). The peaks come from
  a short microbenchmark in the same run and vary between runs (fp32 conv 210-410 GFLOP/s
  seen here), so a large-conv model such as BPLF can show more than 100 %.
- Precision: the fast preset's max |x - f^-1(f(x))| and the relative error of its log-det
  against a float64 copy of the same weights (after a few training steps, so the conditioners
  are not at their zero start).
- Conditioners alone: every coupling's conditioner network is recorded with the input it gets
  in the model and replayed by itself, forward (what sampling must compute) and forward +
  backward (what a training step must compute), interleaved like the rest. nflows' time
  divided by that is a ceiling: no implementation that runs the same conditioner networks on
  the same kernels can beat nflows by more, whatever it does with the rest of the flow.

"""


def ceilings(base: dict[str, Any], res: dict[str, Any], batch: int) -> tuple[float, float] | None:
    """(training, sampling) ceilings of a variant over nflows: nflows' time divided by the time
    of the variant's conditioner networks alone (see conditioner_work); None if not measured."""
    if not res.get("conditioners_train_s") or not base.get("sample_images_per_s"):
        return None
    base_sample_s = batch / base["sample_images_per_s"]
    return (
        base["train_step_s"] / res["conditioners_train_s"],
        base_sample_s / res["conditioners_forward_s"],
    )


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, checked against the measured figures (PASS / MISS lines)."""
    lines = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    x_batch = results["batch"]
    for key, timing in results["timing"].items():
        variants = timing.get("variants", {})
        base = variants.get("nflows")
        if not base or "error" in base or not key.startswith("glow"):
            continue
        fast = variants.get("fast", {})
        if "train_step_s" in fast:
            train = ratio(base["train_step_s"], fast["train_step_s"])
            sample = ratio(fast.get("sample_images_per_s"), base.get("sample_images_per_s"))
            p = fast.get("precision", {})
            inv = p.get("inverse_max_abs_error")
            ld = p.get("logabsdet_max_rel_error_vs_float64")
            ceiling = ""
            limits = ceilings(base, fast, x_batch)
            if limits:
                ceiling = (
                    f"; ceiling from the bf16 conditioners alone: training "
                    f"{fmt(limits[0])}x, sampling {fmt(limits[1])}x"
                )
            lines.append(
                f"- {key}, fast vs nflows: training {fmt(train)}x (target >= 3: "
                f"{verdict(train >= 3 if train else None)}), sampling {fmt(sample)}x (target >= 3: "
                f"{verdict(sample >= 3 if sample else None)}), inverse error {fmt(inv)} "
                f"({verdict(inv <= 1e-4 if inv is not None else None)}), log-det rel. error "
                f"{fmt(ld)} ({verdict(ld <= 1e-3 if ld is not None else None)})" + ceiling
            )
        default = variants.get(TRAIN_DEFAULT, {})
        if "train_step_s" in default:
            train = ratio(base["train_step_s"], default["train_step_s"])
            lines.append(
                f"- {key}, `flowkit train` defaults ({default.get('precision_choice', '?')}) vs "
                f"nflows: training {fmt(train)}x (target >= 2.3: "
                f"{verdict(train >= 2.3 if train else None)})"
            )
        strict = variants.get("strict", {})
        if "train_step_s" in strict:
            figures = {
                "train": ratio(base["train_step_s"], strict["train_step_s"]),
                "log_prob": ratio(
                    strict.get("log_prob_images_per_s"), base.get("log_prob_images_per_s")
                ),
                "sample": ratio(strict.get("sample_images_per_s"), base.get("sample_images_per_s")),
            }
            ok = all(v is not None and v >= 1 for v in figures.values())
            lines.append(
                f"- {key}, strict fp32 vs nflows (speed ratios, >= 1 is no slower): "
                + ", ".join(f"{k} {fmt(v)}x" for k, v in figures.items())
                + f" ({verdict(ok)})"
            )
    for row in results.get("memory", []):
        if (
            row["variant"] == "fast-memory"
            and row["malloc"] == "thp"
            and row["config"].startswith("glow")
            and ("error" not in row["result"])
        ):
            size = row["config"].split()[-1]
            base = next(
                (
                    r["result"]
                    for r in results["memory"]
                    if r["variant"] == "nflows"
                    and r["malloc"] == "default"
                    and r["config"].split()[-1] == size
                    and "error" not in r["result"]
                ),
                None,
            )
            if base:
                rr = row["result"]["peak_rss_mib"] / base["peak_rss_mib"]
                lines.append(
                    f"- {row['config']}, fast-memory peak training RSS = {fmt(rr)} x nflows' "
                    f"(target <= 0.5: {verdict(rr <= 0.5)}; started as the CLI starts "
                    "memory-saving training, LOW_MEMORY_ENV)"
                )
    return lines


def report(results: dict[str, Any]) -> str:
    """The markdown summary (tables) of a results dict."""
    lines = []
    checked = targets(results)
    if checked:
        lines += ["### Targets", "", *checked, ""]
    m = results["machine"]
    lines.append(
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"{m['threads']} threads; load average at start {fmt(m['loadavg_start'][0])}. "
        f"Batch {results['batch']}, {results['rounds']} interleaved rounds (medians)."
    )
    peaks = results.get("peaks", {})
    if peaks and "error" not in peaks:
        lines.append("")
        lines.append(
            "Machine peaks (GFLOP/s): " + ", ".join(f"{k} {fmt(v)}" for k, v in peaks.items())
        )
    fp32_peak = peaks.get("conv_fp32") if peaks else None
    bf16_peak = peaks.get("conv_bf16_channels_last") if peaks else None
    for key, timing in results["timing"].items():
        lines.append("")
        lines.append(f"### {key}")
        lines.append("")
        if "error" in timing:
            lines.append(f"error: {timing['error'][:800]}")
            continue
        variants = timing["variants"]
        base = variants.get("nflows", {})
        lines.append(
            "| variant | params | train step s | x nflows | log_prob img/s | x nflows | "
            "sample img/s | x nflows | train MFLOP/img | train GFLOP/s | % of peak |"
        )
        lines.append("|" + "---|" * 11)
        for v, res in variants.items():
            if "error" in res:
                lines.append(f"| {v} | error: {res['error'][:200]} |")
                continue
            speed = ratio(base.get("train_step_s"), res.get("train_step_s"))
            lp = ratio(res.get("log_prob_images_per_s"), base.get("log_prob_images_per_s"))
            sp = ratio(res.get("sample_images_per_s"), base.get("sample_images_per_s"))
            peak = bf16_peak if v.startswith("fast") else fp32_peak
            gf = res.get("train_gflops")
            frac = 100 * gf / peak if gf and peak else None
            lines.append(
                f"| {v} | {fmt(res.get('parameters'))} | {fmt(res.get('train_step_s'))} | "
                f"{fmt(speed)} | {fmt(res.get('log_prob_images_per_s'))} | {fmt(lp)} | "
                f"{fmt(res.get('sample_images_per_s'))} | {fmt(sp)} | "
                f"{fmt(res.get('flops_train_per_image', 0) / 1e6)} | {fmt(gf)} | {fmt(frac)} |"
            )
        for v, res in variants.items():
            if "precision" in res:
                p = res["precision"]
                lines.append(
                    f"\n{v}: inverse max |x - f⁻¹(f(x))| = {p['inverse_max_abs_error']:.2e}, "
                    f"log-det rel. error vs float64 = "
                    f"{p['logabsdet_max_rel_error_vs_float64']:.2e}, log-prob rel. error = "
                    f"{p['log_prob_max_rel_error_vs_float64']:.2e}"
                )
        alone = {v: ceilings(base, res, results["batch"]) for v, res in variants.items()}
        alone = {v: limits for v, limits in alone.items() if limits}
        if alone:
            lines.append(
                "\nConditioner networks alone (replayed with the inputs they get in the model; "
                "the ceiling is nflows' time over the variant's conditioner time, the most "
                "any implementation running these conditioners on these kernels can reach):\n"
            )
            lines.append(
                "| variant | conditioners fwd s | share of sampling | sampling ceiling x nflows "
                "| conditioners fwd+bwd s | share of train step | training ceiling x nflows |"
            )
            lines.append("|" + "---|" * 7)
            for v, (train_ceiling, sample_ceiling) in alone.items():
                res = variants[v]
                sample_s = results["batch"] / res["sample_images_per_s"]
                fwd, train = res["conditioners_forward_s"], res["conditioners_train_s"]
                lines.append(
                    f"| {v} | {fmt(fwd)} | {fmt(100 * fwd / sample_s)} % | "
                    f"{fmt(sample_ceiling)} | {fmt(train)} | "
                    f"{fmt(100 * train / res['train_step_s'])} % | {fmt(train_ceiling)} |"
                )
        if "fast-compiled" in variants:
            c = variants["fast-compiled"]
            lines.append(f"\nfast + torch.compile: {json.dumps(c)}")
    if results.get("memory"):
        lines.append("")
        lines.append("### Peak training RSS, page faults and step time (fresh process per row)")
        lines.append("")
        lines.append(
            "malloc: `default` = glibc defaults; `env` = MALLOC_ENV at start-up; `mallopt` = "
            "the preset raises the thresholds in-process; `thp` = LOW_MEMORY_ENV at start-up "
            "(PyTorch's huge-page allocation, glibc's thresholds; how the CLI starts "
            "memory-saving training). Ratios are against nflows with glibc defaults (as its "
            "users run it)."
        )
        lines.append("")
        lines.append(
            "| config | variant | malloc | peak RSS MiB | RSS x nflows | RSS after build MiB | "
            "minor faults/step | step s | speed x nflows |"
        )
        lines.append("|" + "---|" * 9)
        for row in results["memory"]:
            res = row["result"]
            if "error" in res:
                lines.append(
                    f"| {row['config']} | {row['variant']} | {row['malloc']} | error: "
                    f"{res['error'][-300:]} |"
                )
                continue
            size = row["config"].split()[-1]
            base = next(
                (
                    r["result"]
                    for r in results["memory"]
                    if r["config"].split()[-1] == size
                    and r["variant"] == "nflows"
                    and r["malloc"] == "default"
                    and "error" not in r["result"]
                ),
                None,
            )
            rss = ratio(res["peak_rss_mib"], base["peak_rss_mib"]) if base else None
            speed = ratio(base["train_step_s"], res["train_step_s"]) if base else None
            lines.append(
                f"| {row['config']} | {row['variant']} | {row['malloc']} | "
                f"{fmt(res['peak_rss_mib'])} | {fmt(rss)} | {fmt(res['rss_after_build_mib'])} | "
                f"{fmt(res['minor_faults_per_step'])} | {fmt(res['train_step_s'])} | {fmt(speed)} |"
            )
    m_end = results.get("loadavg_end")
    if m_end:
        lines.append(f"\nLoad average at end: {fmt(m_end[0])}.")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    """Bar chart of the Glow speed-ups over nflows (strict and fast presets, the trainer's
    defaults) next to the ceiling the fast preset's conditioners alone allow and the issue's 3x
    target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for key, timing in results["timing"].items():
        variants = timing.get("variants", {})
        base, fast = variants.get("nflows"), variants.get("fast")
        if not key.startswith("glow") or not base or not fast or "error" in fast:
            continue
        limits = ceilings(base, fast, results["batch"])
        if not limits:
            continue
        bars = {}
        for name in ("strict", TRAIN_DEFAULT, "fast"):
            res = variants.get(name, {})
            if "train_step_s" in res:
                bars[name] = (
                    ratio(base["train_step_s"], res.get("train_step_s")),
                    ratio(res.get("sample_images_per_s"), base["sample_images_per_s"]),
                )
        bars["ceiling (fast conditioners alone)"] = limits
        rows.append((key, bars))
    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    palette = {
        "strict": "#9aa5b1",
        TRAIN_DEFAULT: "#68d391",
        "fast": "#2b6cb0",
        "ceiling (fast conditioners alone)": "#f6ad55",
    }
    colors = {k: v for k, v in palette.items() if any(k in values for _, values in rows)}
    width = 0.8 / len(colors)
    for ax, (task, index) in zip(axes, (("training step", 0), ("sampling", 1)), strict=True):
        for i, name in enumerate(colors):
            xs = [j + (i - (len(colors) - 1) / 2) * width for j in range(len(rows))]
            ys = [(values.get(name) or (0, 0))[index] or 0 for _, values in rows]
            bars = ax.bar(xs, ys, width, label=name, color=colors[name])
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(3, color="#c53030", linestyle="--", linewidth=1, label="target (3x)")
        ax.axhline(1, color="black", linewidth=0.6)
        ax.set_xticks(range(len(rows)), [key for key, _ in rows])
        ax.set_title(f"{task}: speed-up over nflows")
    axes[0].set_ylabel("x nflows (higher is faster)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Glow, batch {results['batch']}, {results['machine']['cpu']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_markdown(results: dict[str, Any], path: Path, command: str) -> list[Path]:
    """The report as Markdown at ``path``, with its chart beside it (same name, ``.png``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = report(results)
    written = []
    figure = path.with_suffix(".png")
    if plot(results, figure):
        text = f"![Speed-ups over nflows]({figure.name})\n\n" + text
        written.append(figure)
    path.write_text(MARKDOWN_HEADER.format(command=command) + text)
    return [*written, path]


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI, < 60 s)")
    parser.add_argument("--models", default="glow,bplf")
    parser.add_argument("--sizes", default="48,64")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--bplf-rounds", type=int, default=None, help="rounds for BPLF (heavier; default --rounds)"
    )
    parser.add_argument("--presets", default=",".join(FLOWKIT_PRESETS))
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS children")
    parser.add_argument("--memory-sizes", default="64", help="image sizes for the RSS children")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per child")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    parser.add_argument("--markdown", type=Path, default=None, help="also write this summary")
    parser.add_argument(
        "--merge", type=Path, default=None, help="take configurations not run now from this JSON"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        import warnings

        warnings.filterwarnings("ignore")
        spec = json.loads(args.spec)
        if spec.get("threads"):
            import torch

            torch.set_num_threads(spec["threads"])
        result = CHILDREN[args.child](spec)
        print("@@RESULT " + json.dumps(result), flush=True)
        return 0

    if args.quick:
        args.sizes, args.batch, args.levels, args.steps, args.hidden = "8", 4, 2, 2, 8
        args.rounds, args.warmup, args.memory_sizes = 2, 1, "8"
        args.threads = args.threads or 1
    models = [m for m in args.models.split(",") if m]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    presets = [p for p in args.presets.split(",") if p]
    results: dict[str, Any] = {
        "machine": machine(),
        "batch": args.batch,
        "rounds": args.rounds,
        "levels": args.levels,
        "steps": args.steps,
        "hidden": args.hidden,
        "quick": args.quick,
        "malloc_env": MALLOC_ENV,
        "timing": {},
        "memory": [],
    }
    print(f"machine: {results['machine']}", flush=True)
    results["peaks"] = run_child(
        "peaks", {"quick": args.quick, "threads": args.threads}, MALLOC_ENV
    )
    print(f"peaks: {results['peaks']}", flush=True)
    base_spec = dict(
        batch=args.batch,
        levels=args.levels,
        steps=args.steps,
        hidden=args.hidden,
        rounds=args.rounds,
        warmup=args.warmup,
        quick=args.quick,
        threads=args.threads,
    )
    for size in sizes:
        for model in models:
            spec = dict(
                base_spec,
                model=model,
                shape=[1, size, size],
                presets=presets,
                nflows=True,
                compile=args.compile,
            )
            if model == "bplf" and args.bplf_rounds:
                spec["rounds"] = args.bplf_rounds
            key = f"{model} 1x{size}x{size}"
            print(f"timing {key} ...", flush=True)
            # Timings run with raised malloc thresholds for every variant alike (nflows too);
            # the memory rows below show each variant with and without them.
            results["timing"][key] = run_child("timing", spec, MALLOC_ENV)
            print(json.dumps(results["timing"][key])[:2000], flush=True)
    if not args.no_memory:
        for size in [int(s) for s in args.memory_sizes.split(",") if s]:
            for variant, model, malloc in memory_plan(models, args.quick):
                spec = dict(
                    base_spec,
                    model=model,
                    shape=[1, size, size],
                    variant=variant,
                    steps_measured=2 if args.quick else 3,
                    tune_malloc=malloc in ("mallopt", "thp"),
                )
                env = MALLOC_LABEL_ENV[malloc]
                config = f"{model} 1x{size}x{size}"
                print(f"memory {config} {variant} malloc={malloc} ...", flush=True)
                res = run_child("memory", spec, env)
                print(f"  {res}", flush=True)
                results["memory"].append(
                    dict(config=config, variant=variant, malloc=malloc, result=res)
                )
    results["loadavg_end"] = os.getloadavg()
    if args.merge:
        old = json.loads(args.merge.read_text())
        note = f" (from {args.merge.name})"
        for key, value in old.get("timing", {}).items():
            if key not in results["timing"]:
                results["timing"][key + note] = value
        have = {(r["config"], r["variant"], r["malloc"]) for r in results["memory"]}
        for row in old.get("memory", []):
            if (row["config"], row["variant"], row["malloc"]) not in have:
                results["memory"].append(dict(row, variant=row["variant"] + note))
    text = report(results)
    print()
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / (
        ("quick-" if args.quick else "") + time.strftime("benchmark-%Y%m%d-%H%M%S.json")
    )
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    if args.markdown:
        command = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
        for path in write_markdown(results, args.markdown, command):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
