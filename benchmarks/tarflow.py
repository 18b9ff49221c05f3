"""TarFlow sampling (sequential KV-cache vs Jacobi inverse) and the flow contract's overhead.

    python -m benchmarks.tarflow            # a TarFlow trained briefly on synthetic faces
    python -m benchmarks.tarflow --quick    # smoke mode for the tests (seconds, random weights)

Two measurements, side by side in one process:

* **Sampling.** The same latents (prior at temperature 0.7) decoded by every TarFlow block's
  sequential inverse with a key/value cache, by the parallel Jacobi fixed-point inverse and by
  Gauss-Seidel-Jacobi over groups of ``--group-size`` tokens (each stopping at every
  ``--tolerance``). Reported: samples per second, passes per block (all groups together) and
  the inverse error, the largest pixel difference to the exact inverse of a float64 copy of the
  model (each block inverted by ``N`` Jacobi passes, which is exact: pass ``k`` fixes token
  ``k``). The full mode first trains the model for ``--train-steps`` steps on synthetic faces,
  because a fresh TarFlow is the identity (every inverse is then trivially one pass); the
  quick mode perturbs random weights instead.
* **Training step.** One Adam step on ``-log p(x)`` of the TarFlow model against the same
  transformers (the same :class:`~flowkit.layers.transformer.Transformer` stacks, sizes and
  batch) run in plain PyTorch without a flow around them (each stack's output added to the
  tokens, loss the mean square): the overhead of flowkit's flow contract (affine maps,
  log-dets, shape checks, the prior) per step.

Writes a JSON report (``--out``, default ``benchmarks/results/tarflow.json``) and prints a
table.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import cpu_name, fmt
from flowkit.layers.tarflow_block import TarFlowBlock
from flowkit.layers.transformer import Transformer
from flowkit.models import TarFlow
from flowkit.testing import perturb_parameters

RESULTS = Path(__file__).resolve().parent / "results"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _exact_inverse(model: TarFlow, z: Tensor, labels: Tensor | None) -> Tensor:
    reference = copy.deepcopy(model).double()
    reference.set_inverse_method("jacobi", tolerance=0.0)  # N passes per block: exact
    with torch.no_grad():
        return reference.inverse(z.double(), labels)[0]


def _trained_model(args: argparse.Namespace) -> TarFlow:
    torch.manual_seed(args.seed)
    kwargs = dict(
        patch_size=args.patch_size,
        levels=args.levels,
        steps=args.depth,
        hidden=args.hidden,
        heads=args.heads,
    )
    if args.quick:
        model = TarFlow(in_shape=(1, args.image_size, args.image_size), **kwargs)
        perturb_parameters(model, 0.05, torch.Generator().manual_seed(args.seed))
        return model.eval()
    from flowkit.training import TrainConfig, train

    config = TrainConfig(
        model="tarflow",
        model_kwargs=kwargs,
        image_size=args.image_size,
        steps=args.train_steps,
        batch_size=64,
        lr=2e-3,
        warmup_steps=20,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        quality_metrics=False,
        tensorboard=False,
        out=None,
        seed=args.seed,
    )
    result = train(config, progress=False, log=lambda _m: None)
    return result.model.eval()


def sampling(model: TarFlow, args: argparse.Namespace) -> list[dict[str, Any]]:
    generator = torch.Generator().manual_seed(args.seed + 1)
    labels = None
    if model.num_classes:
        labels = torch.arange(args.batch) % model.num_classes
    latents = model.sample_latents(args.batch, labels, temperature=0.7, generator=generator)
    z = model.flatten_latents(latents)
    exact = _exact_inverse(model, z, labels)
    rows = []
    runs = [("sequential", None)] + [("jacobi", tol) for tol in args.tolerance]
    runs += [("gs_jacobi", tol) for tol in args.tolerance]
    names = {
        "sequential": "sequential (KV cache)",
        "jacobi": "jacobi",
        "gs_jacobi": f"gs_jacobi (groups of {args.group_size})",
    }
    for method, tolerance in runs:
        model.set_inverse_method(method, tolerance=tolerance, group_size=args.group_size)

        def decode(method: str = method) -> Tensor:
            with torch.no_grad():
                return model.inverse(z, labels)[0]

        seconds = _median_time(decode, args.repeats)
        x = decode()
        blocks = [b for b in model.modules() if isinstance(b, TarFlowBlock)]
        passes = [b.last_iterations for b in blocks] if method != "sequential" else None
        rows.append(
            {
                "method": names[method],
                "tolerance": tolerance,
                "samples_per_s": args.batch / seconds,
                "seconds_per_batch": seconds,
                "passes_per_block": passes,
                "inverse_error": float((x.double() - exact).abs().max()),
            }
        )
    model.set_inverse_method("sequential")
    return rows


class PlainTransformers(nn.Module):
    """The TarFlow model's transformers without the flow: each stack's output (its first ``D``
    features) is added to the tokens, the next stack reads the result."""

    def __init__(self, model: TarFlow):
        super().__init__()
        nets = []
        for block in model.modules():
            if isinstance(block, TarFlowBlock):
                net = block.conditioner
                fresh = Transformer(
                    net.tokens,
                    net.in_features,
                    net.out_features,
                    hidden=net.hidden,
                    depth=len(net.layers),
                    heads=net.layers[0].attention.heads if len(net.layers) else 1,
                    mlp_ratio=net.layers[0].mlp[0].out_features // net.hidden if net.layers else 1,
                    autoregressive=True,
                )
                fresh.load_state_dict(net.state_dict())
                nets.append(fresh)
        self.nets = nn.ModuleList(nets)
        self.patch_size = model.blocks[0].patch_size

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        b, c, h, w = x.shape
        tokens = (
            x.reshape(b, c, h // p, p, w // p, p)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(b, -1, p * p * c)
        )
        for net in self.nets:
            out = net(tokens)
            tokens = tokens + out[..., : tokens.shape[-1]]
        return tokens.square().mean()


def training(model: TarFlow, args: argparse.Namespace) -> dict[str, Any]:
    flow = copy.deepcopy(model).train()
    plain = PlainTransformers(model).train()
    x = torch.rand(args.batch, *model.in_shape, generator=torch.Generator().manual_seed(0)) - 0.5
    flow_opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-4)

    def flow_step() -> None:
        flow_opt.zero_grad()
        (-flow.log_prob(x).mean()).backward()
        flow_opt.step()

    def plain_step() -> None:
        plain_opt.zero_grad()
        plain(x).backward()
        plain_opt.step()

    flow_times, plain_times = [], []
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        flow_times.append(_median_time(flow_step, 1))
        plain_times.append(_median_time(plain_step, 1))
    flow_ms = 1000 * statistics.median(flow_times)
    plain_ms = 1000 * statistics.median(plain_times)
    return {
        "flow_ms": flow_ms,
        "plain_ms": plain_ms,
        "overhead": flow_ms / plain_ms,
        "batch": args.batch,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds; random weights")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--levels", type=int, default=4, help="TarFlow blocks")
    parser.add_argument("--depth", type=int, default=2, help="transformer layers per block")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tolerance",
        type=lambda text: [float(t) for t in text.split(",")],
        default=[1e-3, 1e-5],
        help="Jacobi stopping changes, comma-separated (one row each)",
    )
    parser.add_argument("--group-size", type=int, default=8, help="gs_jacobi token groups")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default; quick: 1)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "tarflow.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.levels, args.depth, args.hidden = 16, 2, 1, 32
        args.batch, args.repeats = 16, 2
        args.threads = args.threads or 1  # tiny ops: a second thread only adds contention
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = _trained_model(args)
    rows = sampling(model, args)
    step = training(model, args)
    report = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "quick": args.quick,
        "model": {
            "in_shape": list(model.in_shape),
            "tokens": list(model.latent_shapes[-1]),
            "levels": args.levels,
            "depth": args.depth,
            "hidden": args.hidden,
            "parameters": model.num_parameters(),
            "trained_steps": 0 if args.quick else args.train_steps,
        },
        "sampling": rows,
        "training": step,
        "seconds": time.perf_counter() - started,
    }
    sequential = rows[0]["samples_per_s"]
    print(f"TarFlow {model.in_shape} -> tokens {model.latent_shapes[-1]}, {cpu_name()}")
    print("| inverse | tolerance | samples/s | speed-up | passes/block | inverse error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        passes = row["passes_per_block"]
        tolerance = "-" if row["tolerance"] is None else f"{row['tolerance']:g}"
        print(
            f"| {row['method']} | {tolerance} | {fmt(row['samples_per_s'], 1)} | "
            f"{fmt(row['samples_per_s'] / sequential, 2)}x | "
            f"{'-' if passes is None else ', '.join(map(str, passes))} | "
            f"{row['inverse_error']:.2e} |"
        )
    print(
        f"training step (batch {step['batch']}): flow {fmt(step['flow_ms'], 1)} ms, plain "
        f"transformers {fmt(step['plain_ms'], 1)} ms, overhead {fmt(step['overhead'], 2)}x"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
