"""Time to a test bits/dim on faces: flowkit's Glow with ``flowkit train``'s defaults against the
nflows build of the same Glow and against a FrEIA-style soft-clamped coupling.

    python -m benchmarks.time_to_bpd            # FER2013 48x48 5-bit, ~15 minutes on 2 cores
    python -m benchmarks.time_to_bpd --quick    # synthetic faces, seconds (tests)

What a user pays for is the time until the model is good, not milliseconds per step. Contestants,
all the same multi-scale Glow (``--levels`` x ``--steps``, 3x3-1x1-3x3 conv nets of width
``--hidden``, ActNorm, 1x1 convolutions):

* ``nflows``: built only from nflows blocks (:mod:`benchmarks.nflows_glow`), its coupling scale
  ``sigmoid(h + 2)``;
* ``freia-softclamp``: the same nflows build with FrEIA's soft clamp as the coupling scale,
  ``exp(0.636·c·atan(h / c))``, ``c = 2`` (FrEIA's ``GLOWCouplingBlock`` default);
* ``flowkit``: :class:`flowkit.models.Glow` with the precision ``flowkit train`` chooses by
  default on this machine (``precision="auto"``, :func:`flowkit.performance.auto_precision`;
  bf16 conditioners where the CPU has AVX512-BF16/AMX) in a float32 stream, as the trainer's
  steps run;
* ``flowkit-fp32``: the same in fp32, so the table separates model from precision.

Every contestant trains with the same recipe (the trainer's: Adam, ``--lr`` with ``--warmup``
linear warm-up steps, gradient clipping 50, batch ``--batch``), the same batch sequence and
dequantisation noise (:class:`benchmarks.equal_time.Trainee`), in interleaved chunks of
``--chunk-steps`` steps (the order alternating), and after every chunk its test bits/dim on a
fixed subset of ``--curve-images`` test images is recorded against its own training seconds.
The threshold is nflows' test bits/dim after ``--reference-steps`` steps; each contestant's time
to it is the first time its curve reaches it (linearly interpolated between records), and the
report gives each as a ratio to nflows'. Contestants that have not reached it by
``--max-steps`` are reported as not reaching it. Writes ``benchmarks/results/time_to_bpd.json``,
``.md`` and ``time_to_bpd.png`` (the curves).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import equal_time
from benchmarks.common import cpu_name, fmt

RESULTS = equal_time.RESULTS
CONTESTANTS = ("nflows", "freia-softclamp", "flowkit", "flowkit-fp32")
REFERENCE = "nflows"


@dataclass(frozen=True)
class Config:
    data: str = ""
    image_size: int = 48
    levels: int = 3
    steps: int = 8
    hidden: int = 64
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float = 50.0
    n_bits: int = 5
    seed: int = 0
    reference_steps: int = 500
    max_steps: int = 500
    chunk_steps: int = 25
    curve_images: int = 512
    eval_batch: int = 128
    synthetic_size: int = 400
    threads: int = 0
    quick: bool = False


QUICK = dict(
    data="synthetic",
    image_size=16,
    levels=2,
    steps=2,
    hidden=8,
    batch=16,
    warmup=2,
    reference_steps=6,
    max_steps=8,
    chunk_steps=2,
    curve_images=32,
    synthetic_size=96,
)


class NflowsModel(nn.Module):
    """An nflows ``Flow`` behind the two calls :class:`~benchmarks.equal_time.Trainee` makes."""

    def __init__(self, flow: nn.Module, num_dims: int):
        super().__init__()
        self.flow, self.num_dims = flow, num_dims

    def initialize(self, x: Tensor) -> None:
        with torch.no_grad():
            self.flow.log_prob(x)  # nflows' ActNorm initialises on its first batch

    def bits_per_dim(self, x: Tensor, n_bits: int = 8) -> Tensor:
        # flowkit's definition (FlowModel.bits_per_dim): -log p(x) / (D log 2) + n_bits.
        return -self.flow.log_prob(x) / (self.num_dims * math.log(2.0)) + n_bits


def soft_clamp(h: Tensor, clamp: float = 2.0) -> Tensor:
    """FrEIA's soft clamp of a coupling's log-scale: ``exp(0.636·c·atan(h / c))``."""
    return torch.exp(clamp * 0.636 * torch.atan(h / clamp))


def build(name: str, cfg: Config) -> nn.Module:
    from benchmarks.nflows_glow import nflows_glow
    from flowkit.models import Glow

    shape = (1, cfg.image_size, cfg.image_size)
    torch.manual_seed(cfg.seed)
    if name.startswith("flowkit"):
        return Glow(in_shape=shape, levels=cfg.levels, steps=cfg.steps, hidden=cfg.hidden)
    flow = nflows_glow(shape, cfg.levels, cfg.steps, cfg.hidden)
    if name == "freia-softclamp":
        from nflows.transforms import AffineCouplingTransform

        for module in flow.modules():
            if isinstance(module, AffineCouplingTransform):
                module._scale_and_shift = _softclamp_scale_and_shift.__get__(module)
    return NflowsModel(flow, math.prod(shape))


def _softclamp_scale_and_shift(self: Any, params: Tensor) -> tuple[Tensor, Tensor]:
    # nflows' AffineCouplingTransform layout: shift first, then the unconstrained scale.
    shift = params[:, : self.num_transform_features, ...]
    return soft_clamp(params[:, self.num_transform_features :, ...]), shift


class Contestant(equal_time.Trainee):
    """A :class:`~benchmarks.equal_time.Trainee` whose steps run under ``precision``; flowkit
    models get the speed settings ``flowkit train`` applies for it
    (:func:`flowkit.training.setup.speed_settings`: layout and precision of the steps) and
    its Adam (:func:`flowkit.training.step.make_optimizer`)."""

    def __init__(self, name: str, model: nn.Module, train_set: Any, cfg: Any, precision: str):
        from flowkit import performance
        from flowkit.training import TrainConfig
        from flowkit.training.setup import speed_settings
        from flowkit.training.step import make_optimizer

        super().__init__(name, model, train_set, cfg)
        self.precision = precision
        if isinstance(model, NflowsModel):
            self.settings = performance.Settings(precision, stream=None)
        else:
            self.settings = speed_settings(model, TrainConfig(), precision)
            self.optimizer = make_optimizer(model, self.lr)  # the trainer's (fused) Adam

    def train_step(self) -> None:
        from flowkit import performance

        with performance.mode(self.settings):
            super().train_step()


def time_to(curve: list[dict[str, float]], threshold: float) -> float | None:
    """The first training time at which ``curve`` reaches ``threshold`` (bits/dim, lower is
    better), interpolated linearly between the two records around the crossing."""
    for before, after in zip(curve, curve[1:], strict=False):
        if after["test_bpd"] <= threshold:
            if before["test_bpd"] <= threshold:
                return before["seconds"]
            span = before["test_bpd"] - after["test_bpd"]
            part = (before["test_bpd"] - threshold) / span
            return before["seconds"] + part * (after["seconds"] - before["seconds"])
    if curve and curve[0]["test_bpd"] <= threshold:
        return curve[0]["seconds"]
    return None


def bpd_at_step(curve: list[dict[str, float]], step: int) -> float:
    """The recorded test bits/dim at ``step`` (the last record at or before it)."""
    return [p["test_bpd"] for p in curve if p["steps"] <= step][-1]


def plot(contestants: dict[str, Contestant], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, c in contestants.items():
        ax.plot([p["seconds"] for p in c.curve], [p["test_bpd"] for p in c.curve], label=name)
    ax.axhline(threshold, color="grey", ls="--", lw=1, label="threshold")
    ax.set_xlabel("training seconds of the contestant")
    ax.set_ylabel("test bits/dim (curve subset)")
    low = min(p["test_bpd"] for c in contestants.values() for p in c.curve)
    ax.set_ylim(low - 0.1, threshold + 1.5)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic faces, seconds (tests)")
    parser.add_argument("--data", default=None, help="FER2013 npz (default ../shared/data)")
    for name, field in Config.__dataclass_fields__.items():
        if name not in ("data", "quick"):
            kind = type(field.default)
            parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (.md, .png beside it)")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {"data": str(equal_time.default_data())}
    for name in Config.__dataclass_fields__:
        if name != "quick" and getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return Config(**values, quick=args.quick), args


def main(argv: list[str] | None = None) -> int:
    from flowkit import performance
    from flowkit.training.batches import init_batch

    cfg, args = parse(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_set, images = equal_time.faces(cfg)
    curve_images = equal_time.seeded_subset(images, cfg.curve_images, cfg.seed + 3)
    eval_cfg = equal_time.Config(n_bits=cfg.n_bits, seed=cfg.seed, eval_batch=cfg.eval_batch)

    auto, reason = performance.auto_precision(build("flowkit", cfg), "cpu")
    precisions = {"nflows": "fp32", "freia-softclamp": "fp32", "flowkit": auto}
    precisions["flowkit-fp32"] = "fp32"
    print(f"data: {len(train_set)} train, {len(curve_images)} curve images; flowkit {reason}")
    torch.manual_seed(cfg.seed)
    x0, _ = init_batch(train_set, cfg.batch, cfg.seed, cfg.n_bits, False, torch.device("cpu"))
    contestants: dict[str, Contestant] = {}
    for name in CONTESTANTS:
        c = Contestant(name, build(name, cfg), train_set, cfg, precisions[name])
        c.initialize(x0)
        c.curve.append(dict(seconds=c.seconds, steps=0, test_bpd=_bpd(c, curve_images, eval_cfg)))
        contestants[name] = c
    threshold: float | None = None
    round_ = 0
    while True:
        active = [
            c
            for c in contestants.values()
            if c.step < (cfg.reference_steps if c.name == REFERENCE else cfg.max_steps)
            and (threshold is None or time_to(c.curve, threshold) is None)
        ]
        if not active:
            break
        for c in active if round_ % 2 == 0 else active[::-1]:
            for _ in range(cfg.chunk_steps):
                c.train_step()
            record = dict(seconds=c.seconds, steps=c.step, test_bpd=_bpd(c, curve_images, eval_cfg))
            c.curve.append(record)
        round_ += 1
        reference = contestants[REFERENCE]
        if threshold is None and reference.step >= cfg.reference_steps:
            threshold = bpd_at_step(reference.curve, cfg.reference_steps)
            print(
                f"threshold: nflows' test bits/dim after {reference.step} steps = {threshold:.4f}"
            )
        shown = ", ".join(
            f"{c.name} {c.step} steps {c.seconds:.0f} s {c.curve[-1]['test_bpd']:.3f}"
            for c in contestants.values()
        )
        print(f"  {shown}", flush=True)
    assert threshold is not None

    rows = []
    reference_time = time_to(contestants[REFERENCE].curve, threshold)
    for name, c in contestants.items():
        reached = time_to(c.curve, threshold)
        rows.append(
            dict(
                contestant=name,
                precision=c.precision,
                parameters=sum(p.numel() for p in c.model.parameters()),
                s_per_step=c.seconds / max(1, c.step),
                steps_trained=c.step,
                seconds_to_threshold=reached,
                ratio_to_nflows=None
                if reached is None or not reference_time
                else reached / reference_time,
                steps_to_threshold=next(
                    (p["steps"] for p in c.curve if p["test_bpd"] <= threshold), None
                ),
                bpd_at_reference_steps=bpd_at_step(c.curve, cfg.reference_steps),
                curve=c.curve,
            )
        )
    text = table(rows, threshold)
    print()
    print(text)
    out = args.out or RESULTS / ("quick-time_to_bpd.json" if cfg.quick else "time_to_bpd.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = out.with_suffix(".png")
    plot(contestants, threshold, picture)
    results = {
        "machine": {
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "config": asdict(cfg),
        "flowkit_precision_choice": reason,
        "threshold_bpd": threshold,
        "rows": rows,
        "loadavg_end": os.getloadavg(),
    }
    out.write_text(json.dumps(results, indent=2))
    command = " ".join(
        ["python -m benchmarks.time_to_bpd", *(argv if argv is not None else sys.argv[1:])]
    )
    markdown = out.with_suffix(".md")
    markdown.write_text(
        HEADER.format(
            command=command,
            cpu=cpu_name(),
            reason=reason,
            **(asdict(cfg) | {"threads": torch.get_num_threads()}),
        )
        + text
        + f"\n![test bits/dim over training time]({picture.name})\n"
    )
    print(f"wrote {out}, {markdown}, {picture}")
    return 0


def _bpd(c: Contestant, images: Tensor, eval_cfg: equal_time.Config) -> float:
    return float(equal_time.test_bits_per_dim(c.model, images, eval_cfg).mean())


HEADER = """# Time to a test bits/dim: flowkit's Glow against nflows and a FrEIA-style coupling

Generated by `{command}` (`benchmarks/time_to_bpd.py`; raw JSON beside this file), {cpu},
{threads} torch thread(s). The same Glow ({levels} levels x {steps} steps, width {hidden}) at
{image_size}x{image_size}, {n_bits}-bit, batch {batch}, Adam lr {lr} with {warmup} warm-up
steps, clipping {grad_clip}; test bits/dim on {curve_images} test images after every
{chunk_steps} steps. Threshold: nflows' value after {reference_steps} steps. flowkit's
precision: {reason}.

"""


def table(rows: list[dict[str, Any]], threshold: float) -> str:
    lines = [
        f"Threshold: **{threshold:.4f}** bits/dim.\n",
        "| contestant | precision | params | s/step | steps to threshold | s to threshold | "
        "× nflows' time | test bpd at the reference step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reached = r["seconds_to_threshold"]
        shown = "not reached" if reached is None else fmt(reached, 1)
        lines.append(
            f"| {r['contestant']} | {r['precision']} | {r['parameters']:,} | "
            f"{fmt(r['s_per_step'])} | {fmt(r['steps_to_threshold'])} | {shown} | "
            f"{fmt(r['ratio_to_nflows'], 2)} | {fmt(r['bpd_at_reference_steps'])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
