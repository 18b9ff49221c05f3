"""Sample quality of one trained run under several sampling settings, against the Gaussian floor.

Training once and sweeping how it samples (temperature, guidance weight, denoising) is how the
recipes in ``examples/configs`` were chosen. Each setting gets the full report of
:func:`flowkit.metrics.sample_report.sample_report` (its files and a sample grid in
``RUN/sweep/T<t>_g<w>_d<s>/``); the script prints one table and writes ``RUN/sweep/sweep.json``::

    python -m benchmarks.sample_sweep runs/fer2013 --settings 0.7,0,0 0.7,0,1 0.85,4,1

A setting is ``temperature,guidance,denoise`` (denoise 1 removes the run's ``noise_std``). The
classifier is the run's own (trained on its training faces once, then reused). Settings chosen
on the test split, as here, favour the chosen one slightly: report them with that caveat.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import cpu_name, fmt
from flowkit.cli import options
from flowkit.metrics import load_or_train_classifier, sample_grid, save_image
from flowkit.metrics.sample_report import CLASSIFIER_FILE, headline, sample_report

COLUMNS = (
    ("sample_frechet", "FD"),
    ("sample_frechet_gaussian_floor", "FD floor"),
    ("sample_frechet_ratio", "FD ratio"),
    ("sample_recognised_share", "recognised"),
    ("sample_recognised_share_gaussian_floor", "recognised floor"),
    ("classifier_accuracy_on_compared_test_faces", "real accuracy"),
    ("sample_precision", "precision"),
    ("sample_recall", "recall"),
)


def parse_setting(text: str) -> tuple[float, float, bool]:
    """``"0.85,4,1"`` -> (temperature 0.85, guidance 4, denoise on)."""
    try:
        t, w, d = (float(v) for v in text.split(","))
    except ValueError:
        message = f"expected temperature,guidance,denoise, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return t, w, bool(d)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder of flowkit train")
    parser.add_argument("--settings", nargs="+", type=parse_setting, required=True)
    parser.add_argument("--per-class", type=int, default=128)
    args = parser.parse_args(argv)
    model, meta, _ = options.load_model(str(args.run), torch.device("cpu"))
    train_set = options.data_for(meta, None, model, "train")
    test_set = options.data_for(meta, None, model, "test")
    if train_set is None or test_set is None:
        raise SystemExit(f"{args.run}: no record of the run's data")
    classes = [options.expression(c) for c in meta["classes"]]
    config = meta["config"]
    t0 = time.perf_counter()
    judge = load_or_train_classifier(
        args.run / CLASSIFIER_FILE, train_set, epochs=12, batch_size=32, seed=config["seed"]
    )
    rows = []
    for temperature, guidance, denoise in args.settings:
        sampling = {
            "temperature": temperature,
            "guidance": guidance,
            "denoise": float(config["noise_std"]) if denoise else 0.0,
        }
        out = args.run / "sweep" / f"T{temperature:g}_g{guidance:g}_d{int(denoise)}"
        out.mkdir(parents=True, exist_ok=True)
        report = sample_report(
            model,
            train_set,
            test_set,
            classes,
            judge,
            n_bits=config["n_bits"],
            sampling=sampling,
            seed=config["seed"] + 1,
            per_class=args.per_class,
            out_dir=out,
        )
        grid = sample_grid(model, classes, 8, n_bits=config["n_bits"], seed=0, **sampling)
        save_image(grid, out / "samples.png")
        rows.append({"sampling": sampling, **headline(report), "folder": str(out)})
        print(f"done {out.name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    header = ["T", "guidance", "denoise", *(name for _, name in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        s = row["sampling"]
        cells = [fmt(s["temperature"], 2), fmt(s["guidance"], 1), fmt(s["denoise"], 3)]
        cells += [fmt(row[key]) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    result = {"run": str(args.run), "cpu": cpu_name(), "rows": rows, "table": table}
    (args.run / "sweep" / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
