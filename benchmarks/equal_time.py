"""Zoo image models on faces at equal CPU time: test bits/dim, its curve over time, samples.

    python -m benchmarks.equal_time --suite transformers    # TarFlow, Jet, BPLF, Glow on FER2013
    python -m benchmarks.equal_time --suite splines         # nsf_glow vs glow (spline_images)
    python -m benchmarks.equal_time --suite transformers --minutes 10
    python -m benchmarks.equal_time --suite transformers --quick   # synthetic faces, seconds

A *suite* (:data:`SUITES`) names the models, each with its zoo arguments, the *reference*
model (the first; its ``hidden`` is ``--hidden``) and the *baseline* the others are compared to
pairwise. Every other model's ``hidden`` is the width whose parameter count is closest to the
reference's, so the comparison is at (nearly) equal size.

Every model trains for the same budget of its own wall time (``--minutes``) on the same data:
FER2013 from ``../shared/data/fer2013.npz`` (or ``--data``) through
:func:`flowkit.data.train_test_sets`, ``n_bits``-bit images dequantised as the trainer does
(:func:`flowkit.data.preprocess`), the trainer's batch sequence
(:class:`flowkit.training.batches.Batches`, the same for every model), Adam with a linear
warm-up, gradient clipping at 50 (the trainer's default) and the same data-dependent
initialisation batch. Budgets are spent in interleaved chunks (``--chunk-seconds``; the order
alternates between rounds) so that changes of machine load reach every model alike; a step that
starts inside a model's budget finishes, so budgets overrun by at most one step.

After every round each model's test bits/dim on a fixed seeded subset of ``--curve-images`` test
images is recorded against its training seconds (evaluation time is not counted as training):
the curves, drawn in ``<suite>-curves.png``. At the end: test bits/dim on the whole test split
(7,178 images for FER2013; ``--test-images`` for a seeded subset) with the same dequantisation
noise for every model (mean and standard error over images), the paired difference to the
baseline, parameter counts, steps and seconds per step, and a sample grid per model
(temperature ``--temperature``). Writes ``benchmarks/results/<suite>.json``, ``.md``,
``<suite>-<model>.png`` and ``<suite>-curves.png`` (``quick-<suite>.*`` with ``--quick`` unless
``--out``).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import cpu_name, fmt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Suite:
    """Models compared at equal time: zoo name -> zoo arguments (``hidden`` left out: the
    reference's is ``--hidden``, the others' are matched to its parameter count)."""

    models: dict[str, dict[str, Any]]
    baseline: str
    hidden: int
    title: str
    # Tiny arguments per model for --quick (merged over ``models``).
    quick_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    quick_hidden: int = 8

    @property
    def reference(self) -> str:
        return next(iter(self.models))


SUITES: dict[str, Suite] = {
    "splines": Suite(
        models={
            "nsf_glow": dict(levels=3, steps=4, bins=8, tail_bound=3.0),
            "glow": dict(levels=3, steps=4),
        },
        baseline="glow",
        hidden=32,
        title="Spline couplings on faces at equal CPU time: nsf_glow vs glow",
        quick_models={"nsf_glow": dict(levels=2, steps=1, bins=4), "glow": dict(levels=2, steps=1)},
    ),
    "transformers": Suite(
        models={
            # TarFlow's layout scaled to 2 CPU cores: 144 tokens of 4x4 patches, 4 blocks of 2
            # causal layers; Jet with its default 8 couplings of 2 ViT layers.
            "tarflow": dict(patch_size=4, levels=4, steps=2, heads=4),
            "jet": dict(patch_size=4, levels=8, steps=2, heads=4),
            "bplf": dict(levels=3, steps=8),
            "glow": dict(levels=3, steps=8),
        },
        baseline="bplf",
        hidden=96,
        title="Transformer flows on faces at equal CPU time: TarFlow and Jet vs BPLF and Glow",
        quick_models={
            "tarflow": dict(levels=2, steps=1, heads=2, mlp_ratio=2),
            "jet": dict(levels=2, steps=1, heads=2, mlp_ratio=2),
            "bplf": dict(levels=2, steps=1),
            "glow": dict(levels=2, steps=1),
        },
    ),
}


def default_data() -> Path:
    """FER2013 in the shared data folder (``FLOWKIT_SHARED_DATA`` overrides its location)."""
    shared = os.environ.get("FLOWKIT_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    return Path(shared) / "fer2013.npz"


@dataclass(frozen=True)
class Config:
    suite: str = "transformers"
    data: str = ""
    minutes: float = 5.0
    chunk_seconds: float = 30.0
    image_size: int = 48
    hidden: int = 0  # 0: the suite's
    batch: int = 32
    lr: float = 1e-3
    models: str = ""  # a comma-separated subset of the suite (with its reference); "" = all
    model_lr: str = ""  # per-model learning rates, "name=lr,name=lr" (others: lr)
    warmup: int = 50
    grad_clip: float = 50.0
    n_bits: int = 5
    seed: int = 0
    test_images: int = 0
    curve_images: int = 512
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
    batch=16,
    warmup=5,
    samples=8,
    curve_images=32,
    synthetic_size=160,
)


# ---------------------------------------------------------------------------------- models


def model_arguments(cfg: Config) -> dict[str, dict[str, Any]]:
    """Each model's zoo arguments for this run (the suite's, the quick ones merged over them)."""
    suite = SUITES[cfg.suite]
    chosen = [m.strip() for m in cfg.models.split(",") if m.strip()] or list(suite.models)
    unknown = sorted(set(chosen) - set(suite.models))
    if unknown or suite.reference not in chosen:
        raise SystemExit(
            f"--models: choose among {', '.join(suite.models)} and keep the reference "
            f"{suite.reference} (got {cfg.models!r})"
        )
    return {
        name: {**args, **(suite.quick_models.get(name, {}) if cfg.quick else {})}
        for name, args in suite.models.items()
        if name in chosen
    }


def learning_rates(cfg: Config, names: list[str]) -> dict[str, float]:
    """Each model's learning rate: ``cfg.lr`` unless ``cfg.model_lr`` names another."""
    rates = dict.fromkeys(names, cfg.lr)
    for item in filter(None, (i.strip() for i in cfg.model_lr.split(","))):
        name, _, value = item.partition("=")
        if name not in rates:
            raise SystemExit(f"--model-lr: {name!r} is not one of {', '.join(names)}")
        rates[name] = float(value)
    return rates


def build(name: str, args: dict[str, Any], cfg: Config, hidden: int) -> nn.Module:
    """Zoo model ``name`` at the benchmark's image shape and width ``hidden``."""
    from flowkit import zoo

    wanted = dict(args, in_shape=(1, cfg.image_size, cfg.image_size), hidden=hidden)
    params = inspect.signature(zoo.get("model", name).factory).parameters
    unknown = sorted(set(wanted) - set(params))
    if unknown:
        raise SystemExit(f"zoo model {name} takes no argument(s) {unknown}")
    return zoo.build("model", name, **wanted)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matching_hidden(name: str, args: dict[str, Any], cfg: Config, target: int) -> tuple[int, int]:
    """The width of ``name`` whose parameter count is closest to ``target`` (counts grow with
    the width, so a bisection over widths 1..4096 finds it in ~12 builds) and that count.
    Transformer widths must divide by the head count: only multiples of it are tried."""
    step = int(args.get("heads", 1))
    cache: dict[int, int] = {}

    def params(units: int) -> int:
        if units not in cache:
            cache[units] = count(build(name, args, cfg, units * step))
        return cache[units]

    lo, hi = 1, 4096 // step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if params(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda u: abs(params(u) - target))
    return best * step, params(best)


class Trainee:
    """One model under training: optimizer, warm-up, its own seeded batches and noise, the wall
    time its steps took and its test bits/dim curve."""

    def __init__(
        self, name: str, model: nn.Module, train_set: Any, cfg: Any, lr: float | None = None
    ):
        from flowkit.training.batches import Batches

        self.name, self.model, self.cfg = name, model, cfg
        self.lr = cfg.lr if lr is None else lr
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        self.batches = Batches(train_set.images, train_set.labels, cfg.batch, cfg.seed)
        # The dequantisation noise from a generator of our own, seeded alike: every model sees
        # the same noisy images at the same step.
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.seconds = 0.0
        self.nonfinite_steps = 0
        self.losses: list[float] = []
        self.curve: list[dict[str, float]] = []

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
            group["lr"] = self.lr * min(1.0, (self.step + 1) / max(1, self.cfg.warmup))
        self.model.train()
        bpd = self.model.bits_per_dim(x, n_bits=self.cfg.n_bits).mean()
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(bpd):
            bpd.backward()
            if self.cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
        else:  # counted and reported, the same rule for every model
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

    def record(self, curve_images: Tensor) -> None:
        bpd = float(test_bits_per_dim(self.model, curve_images, self.cfg).mean())
        self.curve.append(dict(seconds=self.seconds, steps=self.step, test_bpd=bpd))


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


def faces(cfg: Any) -> tuple[Any, Tensor]:
    """The training set and the test images (uint8) of ``cfg.data`` (an npz, or "synthetic")
    at ``cfg.image_size``, grey, the trainer's 90/10 split by ``cfg.seed``."""
    from flowkit.data import train_test_sets

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
    return train_set, torch.as_tensor(np.asarray(test_set.images))


def seeded_subset(images: Tensor, n: int, seed: int) -> Tensor:
    """``n`` of ``images`` picked at random (seeded), not a prefix: a file's split may be
    ordered by class. All of them when ``n`` is 0 or at least their number."""
    if not 0 < n < len(images):
        return images
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[pick[:n]]


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


def plot_curves(trainees: dict[str, Trainee], path: Path, title: str) -> None:
    """Test bits/dim on the curve subset against training seconds, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, t in trainees.items():
        seconds = [p["seconds"] / 60 for p in t.curve]
        ax.plot(seconds, [p["test_bpd"] for p in t.curve], marker="o", ms=3, label=name)
    ax.set_xlabel("training wall time of the model (minutes)")
    ax.set_ylabel("test bits/dim (curve subset)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------- report


def table(rows: list[dict[str, Any]], baseline: str) -> str:
    lines = [
        "| model | hidden | params | lr | train s | steps | s/step | train bpd (last 10%) | "
        f"test bpd | ± SE | − {baseline} |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        diff = r.get(f"bpd_minus_{baseline}")
        se = r.get(f"bpd_minus_{baseline}_se")
        shown = "-" if diff is None else f"{diff:+.4f} ± {fmt(se, 4)}"
        lines.append(
            f"| {r['model']} | {r['hidden']} | {r['parameters']:,} | {r['lr']:g} | "
            f"{fmt(r['train_s'], 1)} | "
            f"{r['steps_trained']} | {fmt(r['s_per_step'])} | {fmt(r['train_bpd_end'])} | "
            f"{fmt(r['test_bpd'], 4)} | {fmt(r['test_bpd_se'], 4)} | {shown} |"
        )
    return "\n".join(lines) + "\n"


MARKDOWN_HEADER = """# {title}

Generated by `{command}` (`benchmarks/equal_time.py`; raw JSON beside this file).

Data: `{source}`, {image_size}x{image_size} grey, {n_bits}-bit; {train:,} training and
{test:,} test images. Every model: batch {batch}, Adam (lr in the table) with {warmup} warm-up
steps, gradient clipping {grad_clip}, {minutes:g} minutes of training each in interleaved chunks
of {chunk_seconds:g} s, {threads} torch thread(s), {cpu}. Model arguments: {arguments}; the
reference {reference}'s width is {hidden}, every other width is the one whose parameter count
is closest to it. Test bits/dim: mean over the test images with the same dequantisation noise
for every model; "− {baseline}" is the paired difference (negative: better than {baseline}).

"""


def machine(threads: int) -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------- main


def parse(argv: list[str] | None, suite: str | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="synthetic faces, seconds (tests)")
    if suite is None:
        parser.add_argument("--suite", choices=sorted(SUITES), default="transformers")
    parser.add_argument("--data", default=None, help="FER2013 npz (default ../shared/data)")
    for name, kind in (
        ("minutes", float),
        ("chunk_seconds", float),
        ("image_size", int),
        ("hidden", int),
        ("batch", int),
        ("lr", float),
        ("models", str),
        ("model_lr", str),
        ("warmup", int),
        ("n_bits", int),
        ("seed", int),
        ("test_images", int),
        ("curve_images", int),
        ("temperature", float),
        ("threads", int),
    ):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (.md, .png beside it)")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {"data": str(default_data())}
    values["suite"] = suite or args.suite
    for name in Config.__dataclass_fields__:
        if name not in ("quick", "suite") and getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    if not values.get("hidden"):
        chosen = SUITES[values["suite"]]
        values["hidden"] = chosen.quick_hidden if args.quick else chosen.hidden
    return Config(**values, quick=args.quick), args


def main(
    argv: list[str] | None = None, suite: str | None = None, command: str = "", stem: str = ""
) -> int:
    """Run the benchmark (``suite`` fixed by a wrapper script, which also names the command
    shown in the report and the output ``stem``; otherwise ``--suite``)."""
    from flowkit import zoo
    from flowkit.training.batches import init_batch

    cfg, args = parse(argv, suite)
    chosen = SUITES[cfg.suite]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    missing = [m for m in chosen.models if m not in zoo.names("model")]
    if missing:
        raise SystemExit(f"flowkit has no zoo model {missing} (yet); nothing to compare")
    train_set, test_images = faces(cfg)
    test_images = seeded_subset(test_images, cfg.test_images, cfg.seed)
    curve_images = seeded_subset(test_images, cfg.curve_images, cfg.seed + 3)
    print(f"data: {len(train_set)} train, {len(test_images)} test images", flush=True)

    arguments = model_arguments(cfg)
    rates = learning_rates(cfg, list(arguments))
    hidden = {chosen.reference: cfg.hidden}
    torch.manual_seed(cfg.seed)
    target = count(build(chosen.reference, arguments[chosen.reference], cfg, cfg.hidden))
    for name in arguments:
        if name != chosen.reference:
            hidden[name], _ = matching_hidden(name, arguments[name], cfg, target)
    trainees: dict[str, Trainee] = {}
    for name in arguments:
        torch.manual_seed(cfg.seed)
        model = build(name, arguments[name], cfg, hidden[name])
        trainees[name] = Trainee(name, model, train_set, cfg, rates[name])
        print(f"{name}: hidden {hidden[name]}, {count(model):,} parameters", flush=True)

    # One data-dependent initialisation batch for every model (the trainer's, seeded).
    torch.manual_seed(cfg.seed)
    x0, _ = init_batch(train_set, cfg.batch, cfg.seed, cfg.n_bits, False, torch.device("cpu"))
    order = list(trainees.values())
    for t in order:
        t.initialize(x0)
        t.record(curve_images)
    budget = cfg.minutes * 60.0
    round_ = 0
    while any(t.seconds < budget for t in order):
        for t in order if round_ % 2 == 0 else order[::-1]:
            left = budget - t.seconds
            if left > 0:
                t.run_for(min(cfg.chunk_seconds, left))
                t.record(curve_images)
        round_ += 1
        shown = ", ".join(
            f"{t.name} {t.step} steps {t.seconds:.0f} s test {t.curve[-1]['test_bpd']:.3f}"
            for t in order
        )
        print(f"  {shown}", flush=True)

    results: dict[str, Any] = {"machine": machine(torch.get_num_threads()), "config": asdict(cfg)}
    results["models"] = arguments
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
                lr=t.lr,
                parameters=count(t.model),
                train_s=t.seconds,
                steps_trained=t.step,
                s_per_step=t.seconds / max(1, t.step),
                train_bpd_end=float(np.mean(tail)),
                nonfinite_steps=t.nonfinite_steps,
                test_bpd=mean,
                test_bpd_se=se,
                eval_s=time.perf_counter() - start,
                curve=t.curve,
            )
        )
    for row in rows:
        if row["model"] != chosen.baseline and chosen.baseline in bpd:
            diff, diff_se = mean_and_se(bpd[row["model"]] - bpd[chosen.baseline])
            row[f"bpd_minus_{chosen.baseline}"] = diff
            row[f"bpd_minus_{chosen.baseline}_se"] = diff_se
    results["rows"] = rows
    results["loadavg_end"] = os.getloadavg()

    text = table(rows, chosen.baseline)
    print()
    print(text)
    stem = ("quick-" if cfg.quick else "") + (stem or cfg.suite)
    out = args.out or RESULTS / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    grids = []
    for name, t in trainees.items():
        path = out.with_name(f"{out.stem}-{name}.png")
        sample_grid(t.model, cfg, path)
        grids.append(path)
        print(f"wrote {path}")
    curves = out.with_name(f"{out.stem}-curves.png")
    plot_curves(trainees, curves, chosen.title)
    results["sample_grids"] = [p.name for p in grids]
    results["curves"] = curves.name
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    argv_shown = argv if argv is not None else sys.argv[1:]
    command = command or " ".join(["python -m benchmarks.equal_time", *argv_shown])
    header = MARKDOWN_HEADER.format(
        title=chosen.title,
        command=command,
        train=len(train_set),
        test=len(test_images),
        cpu=results["machine"]["cpu"],
        source=Path(cfg.data).name,
        arguments=", ".join(f"{n} {a}" for n, a in arguments.items()),
        reference=chosen.reference,
        baseline=chosen.baseline,
        **{k: v for k, v in asdict(cfg).items() if k not in ("threads",)},
        threads=torch.get_num_threads(),
    )
    pictures = f"Test bits/dim over training time:\n\n![curves]({curves.name})\n\n" + "".join(
        f"**{name}** (temperature {cfg.temperature}):\n\n![{name} samples]({p.name})\n\n"
        for name, p in zip(trainees, grids, strict=True)
    )
    markdown = out.with_suffix(".md")
    markdown.write_text(header + text + "\n" + pictures)
    print(f"wrote {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
