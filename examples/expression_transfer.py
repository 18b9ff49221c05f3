"""Expression transfer benchmark on synthetic faces and CK+48: a thin driver of
:func:`flowkit.metrics.transfer.run_transfer_benchmark`.

    python examples/expression_transfer.py                     # trains the recipe per dataset
    python examples/expression_transfer.py --small             # CI smoke run (< 60 s, 2 CPUs)
    python examples/expression_transfer.py --model run/model.safetensors --datasets synthetic
    python examples/expression_transfer.py --config my_train.toml --steps 3000 --out transfer_out

For each dataset the subject-disjoint split of :func:`flowkit.data.train_test_sets` (CK+48 from
``../shared/data/ckplus48.npz``; skipped when absent) and a model: ``--model``, else one trained
here (``--config``, else ``examples/configs/transfer_ckplus.toml``: a BPLF with
``class_context=True`` and pair-consistency training). The benchmark
transfers every held-out face to every other expression of its subject with each method that
applies to the model and with the pixel / PCA mean-shift and unedited baselines, and scores them
against the subject's real faces (SSIM, target recognised, identity kept, artifacts) with paired
subject-bootstrap intervals; the definitions are in :mod:`flowkit.metrics.transfer`.

Writes ``OUT/<dataset>/`` (``report.json``, ``report.md``, ``grid.png``, and
``model.safetensors`` when trained here), ``OUT/transfer.md`` and ``OUT/transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowkit.metrics.transfer import TransferReport
    from flowkit.training import TrainConfig

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECIPE = Path(__file__).resolve().parent / "configs" / "transfer_ckplus.toml"
"""The recommended transfer model (class_context BPLF with pair-consistency training): the
model trained here unless ``--config`` names another."""
DATASETS = ("synthetic", "ckplus48")
SMALL_MODEL = {"levels": 2, "steps": 1, "hidden": 8, "class_context": True}


def train_config(args: argparse.Namespace, data: str, size: int, channels: int = 1) -> TrainConfig:
    """The run's TrainConfig: ``--config``, else the recipe (``--small``: a tiny one), with the
    data and split fixed here and no run folder."""
    from flowkit.training import TrainConfig, load_config

    split = dict(data=data, image_size=size, channels=channels, test_fraction=0.2, seed=0)
    quiet = dict(out=None, quality_metrics=False, tensorboard=False, eval_every=0)
    if not args.small:
        config = load_config(args.config or RECIPE).replace(**split, **quiet)
        return config.replace(steps=args.steps) if args.steps else config
    return TrainConfig(
        model="bplf",
        model_kwargs=dict(SMALL_MODEL),
        hflip=True,
        n_bits=5,
        steps=args.steps or 30,
        batch_size=16,
        pair_weight=1.0,
        pair_batch=4,
        sample_every=0,
        checkpoint_every=0,
        synthetic_size=160,  # 20 people, 8 expressions each
        **split,
        **quiet,
    )


def run_dataset(args: argparse.Namespace, name: str, out: Path) -> TransferReport | None:
    """Split, model, benchmark and save one dataset; its report (None: data missing)."""
    import flowkit
    from flowkit.metrics.transfer import run_transfer_benchmark
    from flowkit.training import prepare_data, resolve_model_path, train

    data = "synthetic"
    if name == "ckplus48":
        path = Path(args.data_dir) / "ckplus48.npz"
        if not path.is_file():
            print(f"ckplus48: {path} not found, skipping CK+48")
            return None
        data = str(path)
    model = flowkit.load(resolve_model_path(args.model)).eval() if args.model else None
    channels, size = (model.in_shape[0], model.in_shape[1]) if model else (1, args.image_size)
    config = train_config(args, data, size, channels)
    train_set, test_set = prepare_data(config)  # the split the trainer uses
    print(f"{name}: {len(train_set)} train / {len(test_set)} held-out faces")
    if model is None:
        t0 = time.perf_counter()
        result = train(config, train_set=train_set, test_set=test_set, progress=False)
        model = result.model.eval()
        print(
            f"{name}: trained {config.model} for {config.steps} steps in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        (out / name).mkdir(parents=True, exist_ok=True)
        model.save(str(out / name / "model.safetensors"), metadata={"n_bits": config.n_bits})
    report = run_transfer_benchmark(
        model,
        train_set,
        test_set,
        n_bits=config.n_bits,
        max_tasks=args.max_transfers,
        progress=print,
        **({"classifier_epochs": 2} if args.small else {}),
    )
    report.save(out / name)
    print(report.markdown())
    return report


def nested(markdown: str) -> str:
    """A report's Markdown under a dataset heading: its title dropped, its headings one deeper."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines).strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--model", metavar="CKPT", help="a trained flowkit model (else one is trained)")
    p.add_argument(
        "--config", metavar="TOML", help=f"TrainConfig of the model trained here (default {RECIPE})"
    )
    p.add_argument("--steps", type=int, help="training steps (default: the config's; --small 30)")
    p.add_argument("--out", default="transfer_out", metavar="DIR")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder of ckplus48.npz")
    p.add_argument("--max-transfers", type=int, metavar="N", help="seeded subset (default: all)")
    p.add_argument("--small", action="store_true", help="CI smoke run: synthetic, 16 px, tiny")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.image_size = 32
    if args.small:
        args.datasets, args.image_size = ["synthetic"], 16
        args.max_transfers = args.max_transfers or 40
    return args


def main(argv: list[str] | None = None) -> dict[str, TransferReport]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, TransferReport] = {}
    for name in args.datasets:
        report = run_dataset(args, name, out)
        if report is not None:
            reports[name] = report
    lines = [
        "# Expression transfer benchmark",
        "",
        f"Command: `python examples/expression_transfer.py {' '.join(args.argv)}`".rstrip(),
    ]
    for name, report in reports.items():
        lines += ["", f"## {name}", "", nested(report.markdown())]
    (out / "transfer.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {name: report.as_dict() for name, report in reports.items()}
    (out / "transfer.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'transfer.md'} and {out / 'transfer.json'}")
    return reports


if __name__ == "__main__":
    main()
