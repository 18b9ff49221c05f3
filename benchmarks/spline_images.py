"""Spline couplings on faces at equal CPU time: flowkit's ``nsf_glow`` against the affine ``glow``.

    python -m benchmarks.spline_images                  # FER2013 48x48, 5 minutes per model
    python -m benchmarks.spline_images --minutes 15     # longer budget per model
    python -m benchmarks.spline_images --quick          # synthetic faces, seconds (tests)

Both models are flowkit zoo models of the same layout (``levels`` x ``steps``, squeeze, split
with a learned prior): ``nsf_glow`` with rational-quadratic spline couplings at the given
``--hidden``, and the affine ``glow`` with its width chosen so that its parameter count is the
closest to ``nsf_glow``'s (a spline's conditioner outputs ``3K - 1`` values per transformed
channel instead of 2, so at equal width it has more parameters).

Each model trains for the same wall-clock budget (``--minutes``) on the same data: FER2013 from
``../shared/data/fer2013.npz`` (or ``--data``) through :func:`flowkit.data.train_test_sets`,
the given train/test split, ``n_bits``-bit images dequantised as the trainer does
(:func:`flowkit.data.preprocess`), the trainer's batches (:class:`flowkit.training.batches
.Batches`, the same sequence for both), Adam with a linear warm-up, gradient clipping at 50
(the trainer's default) and the same data-dependent initialisation batch. The budgets are spent
in interleaved chunks (``--chunk-seconds``; A B A B ..., who starts alternates), so changes of
machine load reach both models alike; a step that starts inside a model's budget finishes, so
budgets overrun by at most one step.

Reported: test bits/dim of each model on the whole test split (7,178 images for FER2013; a
seeded random subset of ``--test-images`` images when given) with the same dequantisation
noise for both (mean and standard error over images), their paired
difference, parameter counts, steps trained and seconds per step; a sample grid of each model
(temperature ``--temperature``). Writes ``benchmarks/results/spline_images.json``, ``.md`` and
``spline_images-<model>.png`` (``quick-spline_images.*`` with ``--quick`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import cpu_name, fmt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("nsf_glow", "glow")


def default_data() -> Path:
    """FER2013 in the shared data folder (``FLOWKIT_SHARED_DATA`` overrides its location)."""
    shared = os.environ.get("FLOWKIT_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    return Path(shared) / "fer2013.npz"


@dataclass(frozen=True)
class Config:
    data: str = ""
    minutes: float = 5.0
    chunk_seconds: float = 30.0
    image_size: int = 48
    levels: int = 3
    steps: int = 4
    hidden: int = 32
    bins: int = 8
    tail_bound: float = 3.0
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 50
    grad_clip: float = 50.0
    n_bits: int = 5
    seed: int = 0
    test_images: int = 0
    eval_batch: int = 128
    temperature: float = 0.7
    samples: int = 32
    synthetic_size: int = 400
    threads: int = 0
    quick: bool = False


QUICK = dict(
    data="synthetic",
    minutes=0.03,
    chunk_seconds=0.5,
    image_size=16,
    levels=2,
    steps=1,
    hidden=8,
    bins=4,
    batch=16,
    warmup=5,
    samples=8,
    synthetic_size=160,
)


# ---------------------------------------------------------------------------------- models


def build(name: str, cfg: Config, hidden: int) -> nn.Module:
    """Zoo model ``name`` at the benchmark's shape; arguments it does not take are left out
    (``bins``/``tail_bound`` for the affine glow), so both are built from one configuration."""
    from flowkit import zoo

    wanted: dict[str, Any] = dict(
        in_shape=(1, cfg.image_size, cfg.image_size),
        levels=cfg.levels,
        steps=cfg.steps,
        hidden=hidden,
        bins=cfg.bins,
        tail_bound=cfg.tail_bound,
    )
    params = inspect.signature(zoo.get("model", name).factory).parameters
    return zoo.build("model", name, **{k: v for k, v in wanted.items() if k in params})


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matching_hidden(cfg: Config, target: int) -> tuple[int, int]:
    """The glow width whose parameter count is closest to ``target`` (counts grow with the
    width, so a bisection over widths 1..4096 finds it in ~12 builds) and that count."""
    cache: dict[int, int] = {}

    def params(h: int) -> int:
        if h not in cache:
            cache[h] = count(build("glow", cfg, h))
        return cache[h]

    lo, hi = 1, 4096
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if params(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda h: abs(params(h) - target))
    return best, params(best)


class Trainee:
    """One model under training: optimizer, warm-up, its own seeded batches and noise, and the
    wall time its steps took."""

    def __init__(self, name: str, model: nn.Module, train_set: Any, cfg: Config):
        from flowkit.training.batches import Batches

        self.name, self.model, self.cfg = name, model, cfg
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.batches = Batches(train_set.images, train_set.labels, cfg.batch, cfg.seed)
        # The dequantisation noise from a generator of our own, seeded alike: both models see
        # the same noisy images at the same step.
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.seconds = 0.0
        self.nonfinite_steps = 0
        self.losses: list[float] = []

    def initialize(self, x: Tensor) -> None:
        start = time.perf_counter()
        self.model.initialize(x)
        self.seconds += time.perf_counter() - start

    def train_step(self) -> None:
        from flowkit.data import preprocess

        start = time.perf_counter()
        images, _ = self.batches.get(self.step)
        x = preprocess(images, self.cfg.n_bits, dequantize=True, generator=self.noise)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * min(1.0, (self.step + 1) / max(1, self.cfg.warmup))
        self.model.train()
        bpd = self.model.bits_per_dim(x, n_bits=self.cfg.n_bits).mean()
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(bpd):
            bpd.backward()
            if self.cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
        else:  # counted and reported, the same rule for both models
            self.nonfinite_steps += 1
        self.step += 1
        self.seconds += time.perf_counter() - start
        self.losses.append(float(bpd.detach()))

    def run_for(self, seconds: float) -> None:
        """Steps until ``seconds`` more of this model's own time is spent (the step that
        crosses the line finishes)."""
        stop = self.seconds + seconds
        while self.seconds < stop:
            self.train_step()


@torch.no_grad()
def test_bits_per_dim(model: nn.Module, images: Tensor, cfg: Config) -> Tensor:
    """Per-image bits/dim of ``images`` (uint8) with seeded dequantisation noise (the same for
    every model), eval mode."""
    from flowkit.data import preprocess

    model.eval()
    noise = torch.Generator().manual_seed(cfg.seed + 2)
    out = []
    for chunk in images.split(cfg.eval_batch):
        x = preprocess(chunk, cfg.n_bits, dequantize=True, generator=noise)
        out.append(model.bits_per_dim(x, n_bits=cfg.n_bits).double())
    return torch.cat(out)


def mean_and_se(values: Tensor) -> tuple[float, float]:
    n = values.numel()
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return float(values.mean()), se


def sample_grid(model: nn.Module, cfg: Config, path: Path) -> None:
    """``cfg.samples`` samples at ``cfg.temperature`` (fixed noise seed), 4 rows, as a PNG."""
    from flowkit.data import postprocess
    from flowkit.metrics.grids import image_grid

    model.eval()
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        x = model.sample(cfg.samples, temperature=cfg.temperature, generator=g)
    images = postprocess(x.float(), cfg.n_bits, full_range=True)
    image_grid(images, nrow=4).save(path)


# ---------------------------------------------------------------------------------- report


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | hidden | params | train s | steps | s/step | train bpd (last 10%) | "
        "test bpd | ± SE | − glow |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        diff = r.get("bpd_minus_glow")
        shown = "-" if diff is None else f"{diff:+.4f} ± {fmt(r['bpd_minus_glow_se'], 4)}"
        lines.append(
            f"| {r['model']} | {r['hidden']} | {r['parameters']:,} | {fmt(r['train_s'], 1)} | "
            f"{r['steps_trained']} | {fmt(r['s_per_step'])} | {fmt(r['train_bpd_end'])} | "
            f"{fmt(r['test_bpd'], 4)} | {fmt(r['test_bpd_se'], 4)} | {shown} |"
        )
    return "\n".join(lines) + "\n"


MARKDOWN_HEADER = """# Spline couplings on faces at equal CPU time: nsf_glow vs glow

Generated by `{command}` (`benchmarks/spline_images.py`; raw JSON beside this file).

Data: `{source}`, {image_size}x{image_size} grey, {n_bits}-bit; {train:,} training and
{test:,} test images. Both models: {levels} levels x {steps} steps, batch {batch}, Adam lr
{lr} ({warmup} warm-up steps), gradient clipping {grad_clip}, {minutes:g} minutes of training
each in interleaved chunks of {chunk_seconds:g} s, {threads} torch thread(s), {cpu}. The
glow's width is the one whose parameter count is closest to nsf_glow's. Test bits/dim: mean
over the test images with the same dequantisation noise for both; "− glow" is the paired
difference (negative: nsf_glow better).

"""


def machine(threads: int) -> dict[str, Any]:
    cpu = cpu_name()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic faces, seconds (tests)")
    parser.add_argument("--data", default=None, help="FER2013 npz (default ../shared/data)")
    for name, kind in (
        ("minutes", float),
        ("chunk_seconds", float),
        ("image_size", int),
        ("levels", int),
        ("steps", int),
        ("hidden", int),
        ("bins", int),
        ("tail_bound", float),
        ("batch", int),
        ("lr", float),
        ("warmup", int),
        ("n_bits", int),
        ("seed", int),
        ("test_images", int),
        ("temperature", float),
        ("threads", int),
    ):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (.md, .png beside it)")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {"data": str(default_data())}
    for name in Config.__dataclass_fields__:
        if name != "quick" and getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return Config(**values, quick=args.quick), args


def main(argv: list[str] | None = None) -> int:
    from flowkit import zoo
    from flowkit.data import train_test_sets
    from flowkit.training.batches import init_batch

    cfg, args = parse(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    missing = [m for m in MODELS if m not in zoo.names("model")]
    if missing:
        raise SystemExit(f"flowkit has no zoo model {missing} (yet); nothing to compare")
    if cfg.data != "synthetic" and not Path(cfg.data).exists():
        raise SystemExit(f"data {cfg.data} does not exist (see ../shared/data/README.md)")
    train_set, test_set = train_test_sets(
        cfg.data,
        image_size=cfg.image_size,
        channels=1,
        test_fraction=0.1,
        seed=cfg.seed,
        synthetic_size=cfg.synthetic_size,
    )
    test_images = torch.as_tensor(np.asarray(test_set.images))
    if 0 < cfg.test_images < len(test_images):
        # A seeded random subset, not a prefix: a file's test split may be ordered by class.
        pick = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(cfg.seed))
        test_images = test_images[pick[: cfg.test_images]]
    print(f"data: {len(train_set)} train, {len(test_images)} test images", flush=True)

    torch.manual_seed(cfg.seed)
    nsf = build("nsf_glow", cfg, cfg.hidden)
    glow_hidden, _ = matching_hidden(cfg, count(nsf))
    torch.manual_seed(cfg.seed)
    glow = build("glow", cfg, glow_hidden)
    hidden = {"nsf_glow": cfg.hidden, "glow": glow_hidden}
    trainees = {
        "nsf_glow": Trainee("nsf_glow", nsf, train_set, cfg),
        "glow": Trainee("glow", glow, train_set, cfg),
    }
    for name, t in trainees.items():
        print(f"{name}: hidden {hidden[name]}, {count(t.model):,} parameters", flush=True)

    # One data-dependent initialisation batch for both (the trainer's, seeded).
    torch.manual_seed(cfg.seed)
    x0, _ = init_batch(train_set, cfg.batch, cfg.seed, cfg.n_bits, False, torch.device("cpu"))
    for t in trainees.values():
        t.initialize(x0)
    budget = cfg.minutes * 60.0
    order = list(trainees.values())
    round_ = 0
    while any(t.seconds < budget for t in order):
        for t in order if round_ % 2 == 0 else order[::-1]:
            left = budget - t.seconds
            if left > 0:
                t.run_for(min(cfg.chunk_seconds, left))
        round_ += 1
        shown = ", ".join(
            f"{t.name} {t.step} steps {t.seconds:.0f} s bpd {np.mean(t.losses[-20:]):.3f}"
            for t in order
        )
        print(f"  {shown}", flush=True)

    results: dict[str, Any] = {"machine": machine(torch.get_num_threads()), "config": asdict(cfg)}
    results["data"] = dict(train=len(train_set), test=len(test_images), source=cfg.data)
    bpd: dict[str, Tensor] = {}
    rows = []
    for name, t in trainees.items():
        start = time.perf_counter()
        bpd[name] = test_bits_per_dim(t.model, test_images, cfg)
        mean, se = mean_and_se(bpd[name])
        tail = t.losses[-max(1, len(t.losses) // 10) :]
        rows.append(
            dict(
                model=name,
                hidden=hidden[name],
                parameters=count(t.model),
                train_s=t.seconds,
                steps_trained=t.step,
                s_per_step=t.seconds / max(1, t.step),
                train_bpd_end=float(np.mean(tail)),
                nonfinite_steps=t.nonfinite_steps,
                test_bpd=mean,
                test_bpd_se=se,
                eval_s=time.perf_counter() - start,
            )
        )
    for row in rows:
        if row["model"] != "glow":
            diff, diff_se = mean_and_se(bpd[row["model"]] - bpd["glow"])
            row.update(bpd_minus_glow=diff, bpd_minus_glow_se=diff_se)
    results["rows"] = rows
    results["loadavg_end"] = os.getloadavg()

    text = table(rows)
    print()
    print(text)
    out = args.out or RESULTS / ("quick-spline_images.json" if cfg.quick else "spline_images.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    grids = []
    for name, t in trainees.items():
        path = out.with_name(f"{out.stem}-{name}.png")
        sample_grid(t.model, cfg, path)
        grids.append(path)
        print(f"wrote {path}")
    results["sample_grids"] = [p.name for p in grids]
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    command = " ".join(
        ["python -m benchmarks.spline_images", *(argv if argv is not None else sys.argv[1:])]
    )
    header = MARKDOWN_HEADER.format(
        command=command,
        train=len(train_set),
        test=len(test_images),
        cpu=results["machine"]["cpu"],
        source=Path(cfg.data).name,
        **{k: v for k, v in asdict(cfg).items() if k not in ("threads",)},
        threads=torch.get_num_threads(),
    )
    pictures = "".join(
        f"**{name}** (temperature {cfg.temperature}):\n\n![{name} samples]({p.name})\n\n"
        for name, p in zip(trainees, grids, strict=True)
    )
    markdown = out.with_suffix(".md")
    markdown.write_text(header + text + "\n" + pictures)
    print(f"wrote {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
