"""GPU benchmark: flowkit's Glow, BPLF and TarFlow against the nflows Glow on one CUDA GPU.

Run through ``benchmarks/gpu.sh`` (which exits cleanly where no GPU is visible). For each model
it times, on the same GPU and batch, a training step (forward, backward, Adam), sampling and the
peak GPU memory of a training step, for:

* ``nflows``       the same multi-scale Glow built from nflows blocks (benchmarks/nflows_glow.py)
* ``fp32``         flowkit, fp32 everywhere, channels-last conditioner weights
* ``bf16``         flowkit, bf16 autocast conditioners (float32 invertible stream): what
                   ``flowkit train`` picks by default (``precision="auto"``) on a GPU with bf16
* ``bf16+compile`` the same with every conditioner compiled by ``torch.compile``

Timings are medians of ``--rounds`` CUDA-synchronised calls after ``--warmup`` calls. The table
is printed as Markdown (for docs/results/benchmark.md); ``--out`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.run import build_flowkit, build_nflows, data_batch

NO_GPU_MESSAGE = "no CUDA GPU visible to torch; the GPU benchmark measured nothing"
VARIANTS = ("nflows", "fp32", "bf16", "bf16+compile")


def cuda_median(fn: Callable[[], Any], rounds: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model_name: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    from flowkit import performance

    device = torch.device("cuda")
    shape = (args.channels, args.size, args.size)
    x = data_batch(args.batch, shape).to(device)
    if variant == "nflows":
        model = build_nflows(shape, args.levels, args.steps, args.hidden).to(device)
        with torch.no_grad():
            model.log_prob(x)  # nflows' ActNorm initialises on its first batch
        settings = None
    else:
        model = build_flowkit(model_name, shape, args.levels, args.steps, args.hidden).to(device)
        model.initialize(x)
        precision = "fp32" if variant == "fp32" else "bf16"
        # The trainer's settings (a float32 stream: its steps never invert); sampling under
        # them is timed the same way, not checked for exactness.
        settings = performance.Settings(precision, channels_last=True, stream=None)
        performance.prepare(model, settings)
        if variant.endswith("+compile"):
            performance.compile_conditioners(model, dynamic=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

    def train_step() -> None:
        model.train()
        if settings is None:
            loss = -model.log_prob(x).mean()
        else:
            with performance.mode(settings):
                loss = -model.log_prob(x).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sample() -> None:
        if settings is None:
            model.eval()
            with torch.no_grad():
                model.sample(args.batch)
        else:
            performance.sample(model, args.batch, preset=settings)

    start = time.perf_counter()
    train_step()  # the first call compiles (for +compile) and allocates
    sample()
    torch.cuda.synchronize()
    first_s = time.perf_counter() - start
    step_s = cuda_median(train_step, args.rounds, args.warmup)
    torch.cuda.reset_peak_memory_stats(device)
    train_step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device)
    sample_s = cuda_median(sample, args.rounds, args.warmup)
    return {
        "model": model_name if variant != "nflows" else "glow (nflows)",
        "variant": variant,
        "first_call_s": first_s,
        "train_images_per_s": args.batch / step_s,
        "sample_images_per_s": args.batch / sample_s,
        "peak_train_mib": peak / 2**20,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | variant | train img/s | sample img/s | peak train MiB | first call s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | error: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['train_images_per_s']:.0f} | "
            f"{r['sample_images_per_s']:.0f} | {r['peak_train_mib']:.0f} | "
            f"{r['first_call_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="glow,bplf,tarflow")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what starts later")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE)
        return 0
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    print(
        f"Glow/BPLF L={args.levels} K={args.steps} hidden {args.hidden} (TarFlow: 4 blocks x 2 "
        f"layers, 4x4 patches, width {args.hidden}), "
        f"{args.channels}x{args.size}x{args.size}, batch {args.batch}\n",
        flush=True,
    )
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    nflows_done = False
    for model_name in args.models.split(","):
        for variant in args.variants.split(","):
            if variant == "nflows":
                if nflows_done or model_name != "glow":
                    continue  # one nflows reference: its Glow
                nflows_done = True
            if time.perf_counter() - started > args.budget_s:
                rows.append({"model": model_name, "variant": variant, "error": "time budget"})
                continue
            try:
                rows.append(measure(model_name, variant, args))
            except Exception as err:  # noqa: BLE001 - report, do not lose the other rows
                rows.append({"model": model_name, "variant": variant, "error": repr(err)[:200]})
            torch.cuda.empty_cache()
            print(f"done {model_name} {variant}", file=sys.stderr, flush=True)
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
