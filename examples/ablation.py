"""Reproduce the BPLF thesis's ablations at CPU scale: conditioner, PCA, bi-parallel linear half.

    python examples/ablation.py                          # full run (~15-20 min, 2 shared CPUs)
    python examples/ablation.py --small                  # CI smoke run (16 px, few steps, < 60 s)
    python examples/ablation.py --data-dir ../shared/data --steps 300 --seeds 0 1 2

Arms (every arm gets the same data, steps, batch size, learning-rate schedule and seeds):

* conditioner: ``conv3x3`` (BPLF default) vs ``glow`` vs ``inception_a`` vs ``inception_b``:
  parameters, forward FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``), test
  bits/dim over training;
* PCA on/off (``BPLF(pca=...)``, the input patch-PCA projection): steps until the training
  bits/dim (EMA) reaches a threshold both arms reach;
* bi-parallel linear half on/off (``BPLF(linear=...)``): final test bits/dim.

Datasets: CK+48 (subject-disjoint split) and a FER2013 subset (its given train/test split),
found in ``--data-dir`` or ``<repo>/../shared/data``; synthetic faces when absent. Writes
``ablation.md`` (tables), ``ablation.json`` (every number and curve) and PNG convergence plots
into ``--out``. Training goes through :func:`flowkit.training.train` (no files, no progress bar).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CONDITIONERS = ("conv3x3", "glow", "inception_a", "inception_b")
# name -> (group tags, BPLF overrides); "base" is the thesis's BPLF (conv3x3, PCA, linear half).
ARMS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "conv3x3": (("conditioner", "pca", "linear"), {}),
    "glow": (("conditioner",), {"conditioner": "glow"}),
    "inception_a": (("conditioner",), {"conditioner": "inception_a"}),
    "inception_b": (("conditioner",), {"conditioner": "inception_b"}),
    "no_pca": (("pca",), {"pca": False}),
    "no_linear": (("linear",), {"linear": False}),
}


# ------------------------------------------------------------------------------------ data
def load_datasets(args: argparse.Namespace) -> dict[str, tuple[Any, Any]]:
    """name -> (train, test) EmotionSets at ``args.image_size``."""
    from flowkit import data

    size = args.image_size
    rng = np.random.default_rng(0)
    out: dict[str, tuple[Any, Any]] = {}
    root = Path(args.data_dir)
    ck_path, fer_path = root / "ckplus48.npz", root / "fer2013.npz"
    if "ckplus48" in args.datasets and ck_path.is_file():
        ck = data.load(ck_path, size=size)
        train, test = ck.split(test_fraction=0.2, seed=0)
        if args.small:
            train = train.subset(rng.permutation(len(train))[:128])
            test = test.subset(rng.permutation(len(test))[:64])
        out["CK+48"] = (train, test)
    if "fer2013" in args.datasets and fer_path.is_file():
        fer = data.load(fer_path, size=size)
        flat = fer.images.reshape(len(fer), -1)
        ok = flat.std(axis=1) > 0  # 12 blank images (see the data README)
        split = np.asarray(fer.given_split)
        tr_idx = rng.permutation(np.flatnonzero(ok & (split == "train")))[: args.fer_train]
        te_idx = rng.permutation(np.flatnonzero(ok & (split == "test")))[: args.fer_test]
        out[f"FER2013 ({len(tr_idx)}/{len(te_idx)})"] = (fer.subset(tr_idx), fer.subset(te_idx))
    if not out:
        n = 24 if args.small else 300
        faces = data.synthetic_emotion_set(n, size=size, seed=0)
        out["synthetic"] = faces.split(test_fraction=0.2, seed=0)
    return out


# ----------------------------------------------------------------------------- one arm
def count_flops(model: torch.nn.Module, in_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one image (data -> latent), counted by torch's FlopCounterMode (a
    multiply-add counts as 2; invertible-layer bookkeeping outside matmul/conv is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.rand(1, *in_shape) - 0.5
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def ema(values: list[float], beta: float = 0.9) -> np.ndarray:
    out, m = [], None
    for v in values:
        m = v if m is None else beta * m + (1 - beta) * v
        out.append(m)
    return np.asarray(out)


def run_arm(
    args: argparse.Namespace, overrides: dict[str, Any], seed: int, train_set: Any, test_set: Any
) -> dict[str, Any]:
    from flowkit.metrics import bits_per_dim
    from flowkit.training import TrainConfig, train

    model_kwargs = dict(levels=args.levels, steps=args.flow_steps, hidden=args.hidden)
    model_kwargs.update(overrides)
    config = TrainConfig(
        model="bplf",
        model_kwargs=model_kwargs,
        data="synthetic",  # unused: the sets are passed in
        image_size=args.image_size,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=max(1, args.steps // 10),
        n_bits=args.n_bits,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        sample_every=0,
        checkpoint_every=0,
        log_every=0,
        seed=seed,
        device=args.device,
        out=None,
        quality_metrics=False,
        tensorboard=False,
        num_workers=args.threads,
    )
    t0 = time.perf_counter()
    result = train(config, train_set, test_set, progress=False, log=lambda _msg: None)
    wall = time.perf_counter() - t0
    hist = result.history
    model = result.model.cpu()
    return {
        "seed": seed,
        "params": int(model.num_parameters()),
        "flops": count_flops(model, model.in_shape),
        "train_bpd": [float(h["train_bpd"]) for h in hist],
        "eval_steps": [int(h["step"]) for h in hist if "test_bpd" in h],
        "test_curve": [float(h["test_bpd"]) for h in hist if "test_bpd" in h],
        # Same dequantisation noise for every arm (seed 0) on the whole test set.
        "test_bpd": bits_per_dim(model, test_set, n_bits=args.n_bits, batch_size=128, seed=0),
        "wall_s": wall,
        "s_per_step": float(hist[-1]["wall_time_s"]) / max(1, len(hist)),
        "skipped_steps": int(result.skipped_steps),
    }


# -------------------------------------------------------------------------------- report
def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def steps_to(curve: np.ndarray, threshold: float) -> int | None:
    hit = np.flatnonzero(curve <= threshold)
    return int(hit[0]) + 1 if hit.size else None


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> str:
    lines = [
        "# BPLF ablations (CPU scale)",
        "",
        f"Command: `python examples/ablation.py {' '.join(args.argv)}`".rstrip(),
        "",
        f"Setup: BPLF {args.image_size}x{args.image_size} grey, {args.n_bits}-bit, levels="
        f"{args.levels}, steps/level={args.flow_steps}, hidden={args.hidden}, class-conditional "
        f"prior; {args.steps} Adam steps of batch {args.batch_size}, lr {args.lr} (warm-up + "
        f"cosine); seeds {args.seeds}. Test bits/dim: whole test set, fixed dequantisation "
        "noise; mean ± std over seeds. FLOPs: forward of one image (FlopCounterMode).",
        "",
    ]
    for dataset, arms in results.items():
        lines += [f"## {dataset}", ""]
        lines += [
            "| arm | params | MFLOPs/img | test bpd (final) | best eval bpd | s/step |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, runs in arms.items():
            lines.append(
                f"| {name} | {runs[0]['params']:,} | {runs[0]['flops'] / 1e6:.1f} | "
                f"{mean_std([r['test_bpd'] for r in runs])} | "
                f"{mean_std([min(r['test_curve']) for r in runs])} | "
                f"{np.mean([r['s_per_step'] for r in runs]):.2f} |"
            )
        lines.append("")
        # Steps until the smoothed training bpd reaches levels every arm of the pair reaches
        # (the worst arm's final value plus a margin): the thesis's convergence-speed claim.
        for group, (a, b) in {
            "pca": ("conv3x3", "no_pca"),
            "linear": ("conv3x3", "no_linear"),
        }.items():
            if a not in arms or b not in arms:
                continue
            curves = {n: [ema(r["train_bpd"]) for r in arms[n]] for n in (a, b)}
            worst_final = max(c[-1] for cs in curves.values() for c in cs)
            for margin in (0.5, 0.2, 0.05):
                threshold = worst_final + margin
                reach = {n: [steps_to(c, threshold) for c in cs] for n, cs in curves.items()}
                cells = ", ".join(
                    f"{n}: {np.mean([s for s in v if s is not None]):.0f}"
                    + (f" (per seed {v})" if len(v) > 1 else "")
                    for n, v in reach.items()
                )
                lines.append(
                    f"- {group}: steps until train bpd (EMA 0.9) <= {threshold:.3f} (worst final "
                    f"+ {margin}): {cells}"
                )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, list[dict[str, Any]]]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    groups = {
        "conditioner": [n for n in ARMS if "conditioner" in ARMS[n][0]],
        "pca_linear": ["conv3x3", "no_pca", "no_linear"],
    }
    for group, names in groups.items():
        fig, axes = plt.subplots(
            2, len(results), figsize=(5.5 * len(results), 7.5), squeeze=False, sharex=True
        )
        for j, (dataset, arms) in enumerate(results.items()):
            for name in names:
                if name not in arms:
                    continue
                runs = arms[name]
                steps = np.asarray(runs[0]["eval_steps"])
                test = np.asarray([r["test_curve"] for r in runs])
                line = axes[0, j].plot(steps, test.mean(0), marker="o", ms=3, label=name)[0]
                if len(runs) > 1:
                    axes[0, j].fill_between(
                        steps, test.min(0), test.max(0), color=line.get_color(), alpha=0.2
                    )
                train = np.asarray([ema(r["train_bpd"]) for r in runs]).mean(0)
                axes[1, j].plot(np.arange(1, len(train) + 1), train, label=name)
            axes[0, j].set_title(f"{dataset}: test bits/dim")
            axes[1, j].set_title(f"{dataset}: train bits/dim (EMA)")
            axes[1, j].set_xlabel("step")
            for ax in axes[:, j]:
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
                lo = min(min(min(r["test_curve"]) for r in arms[n]) for n in names if n in arms)
                ax.set_ylim(lo - 0.1, lo + 1.5)
        fig.tight_layout()
        path = out / f"{group}_convergence.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--out", default="ablation_out")
    p.add_argument("--small", action="store_true", help="tiny smoke run (16 px, 1 seed, < 60 s)")
    p.add_argument("--datasets", nargs="+", default=["ckplus48", "fer2013"])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--flow-steps", type=int, default=2, help="flow steps per level")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--n-bits", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--fer-seeds", type=int, nargs="+", default=None, help="default: first seed")
    p.add_argument("--fer-train", type=int, default=3000)
    p.add_argument("--fer-test", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is best on shared CPUs)"
    )
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    if args.small:
        args.image_size, args.steps, args.batch_size = 16, 12, 16
        args.levels, args.flow_steps, args.hidden = 2, 1, 8
        args.seeds, args.fer_seeds = args.seeds[:1], args.seeds[:1]
        args.fer_train, args.fer_test, args.eval_every, args.eval_batches = 128, 64, 6, 2
    if args.fer_seeds is None:
        args.fer_seeds = args.seeds[:1]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    datasets = load_datasets(args)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for dataset, (train_set, test_set) in datasets.items():
        seeds = args.fer_seeds if dataset.startswith("FER") else args.seeds
        print(f"{dataset}: {len(train_set)} train / {len(test_set)} test, seeds {seeds}")
        results[dataset] = {}
        for name in args.arms:
            runs = []
            for seed in seeds:
                r = run_arm(args, ARMS[name][1], seed, train_set, test_set)
                runs.append(r)
                print(
                    f"  {name:12s} seed {seed}: test bpd {r['test_bpd']:.3f}  params "
                    f"{r['params']:,}  {r['flops'] / 1e6:.1f} MFLOPs  {r['wall_s']:.0f} s",
                    flush=True,
                )
            results[dataset][name] = runs
            # Rewrite the report after every arm: a long run can be inspected (or cut) midway.
            (out / "ablation.json").write_text(json.dumps(results, indent=1))
    report = summarise(results, args)
    report += f"\nTotal wall time: {time.perf_counter() - t0:.0f} s.\n"
    (out / "ablation.md").write_text(report)
    paths = plot(results, out)
    print(report)
    print("wrote", out / "ablation.md", *paths)
    return results


if __name__ == "__main__":
    main()
