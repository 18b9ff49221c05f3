"""Argument parsing and the five subcommands of the ``flowkit`` command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any

HEAVY_COMMANDS = ("train", "eval", "sample", "transfer")

_EPILOG_TRAIN = """\
Precedence: built-in defaults < --config FILE < the run's saved config (--resume) < flags.
Every run writes config.toml/config.json, log.csv, tensorboard/, checkpoints/, samples*.png,
transfer.png, loss.png, metrics.json, model.safetensors into its run folder.

Multi-process / multi-machine: launch the same command with torchrun, e.g.
  torchrun --nproc_per_node 4 -m flowkit train --data fer2013.csv
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
           --rdzv_endpoint HOST:29500 --rdzv_id myrun -m flowkit train --out /shared/runs/x
(--batch-size is per process; only rank 0 writes files; --resume needs the run folder on every
machine, e.g. a shared filesystem.)
"""


def _version() -> str:
    import flowkit

    return flowkit.__version__


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_trained_model_args(parser: argparse.ArgumentParser) -> None:
    """``--debug`` and ``--model``, shared by the subcommands that use a trained model."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks"
    )
    parser.add_argument(
        "--model", required=True, metavar="CKPT", help="model file, checkpoint or run folder"
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--n-bits`` and ``--device``, shared by the subcommands that use a trained model."""
    parser.add_argument(
        "--n-bits", type=int, help="bits of the model's data (default: from the run)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowkit",
        description="Normalizing flows for facial expressions: train BPLF/Glow, sample faces of "
        "an expression, move an expression onto another face, evaluate bits/dim, browse the zoo.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"flowkit {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # ------------------------------------------------------------------------- train
    t = sub.add_parser(
        "train",
        help="train a flow (default: BPLF on the embedded synthetic faces)",
        description="Train a flow by maximum likelihood. With no arguments: a small "
        "class-conditional BPLF on 32x32 synthetic faces (a few minutes on 2 CPU cores).",
        epilog=_EPILOG_TRAIN,
        formatter_class=_Formatter,
    )
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks")
    t.add_argument("--config", metavar="FILE", help="TOML (or JSON) file with TrainConfig keys")
    t.add_argument("--model", help="zoo model: bplf, glow, realnvp (default bplf)")
    t.add_argument(
        "--data",
        metavar="PATH",
        nargs="+",
        help="FER2013 .csv, .npz, Kaggle/class-folder image tree, or several (merged); "
        "default: 'synthetic' (embedded procedural faces)",
    )
    t.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<timestamp>)")
    t.add_argument("--steps", type=int, help="total optimiser steps (default 1500)")
    t.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --out (default: the newest run under runs/) from its last "
        "checkpoint: same step, optimizer, RNG and ActNorm state",
    )
    t.add_argument("--batch-size", type=int, help="images per step and process (default 64)")
    t.add_argument("--lr", type=float, help="Adam learning rate after warm-up (default 1e-3)")
    t.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default 100)")
    t.add_argument("--grad-clip", type=float, help="gradient-norm clip, 0 = off (default 50)")
    t.add_argument("--image-size", type=int, help="square image size (default 32)")
    t.add_argument("--channels", type=int, choices=(1, 3), help="1 grey or 3 RGB (default 1)")
    t.add_argument("--n-bits", type=int, help="bits per pixel modelled, 1..8 (default 5)")
    t.add_argument("--levels", type=int, help="multi-scale levels (default 3)")
    t.add_argument("--steps-per-level", type=int, help="flow steps per level (default 4)")
    t.add_argument("--hidden", type=int, help="conditioner width (default 64)")
    t.add_argument("--conditioner", help="coupling conditioner (conv3x3, glow, inception_a/b)")
    t.add_argument("--synthetic-size", type=int, help="synthetic faces generated (default 4000)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    t.add_argument(
        "--precision", choices=("fp32", "bf16"), help="bf16: conditioners only (default fp32)"
    )
    t.add_argument(
        "--memory-saving",
        action="store_true",
        default=None,
        help="recompute activations from the inverse instead of storing them: same gradients, "
        "far less memory, ~1.3-1.5x the step time",
    )
    t.add_argument("--seed", type=int, help="seed for data split, init and noise (default 0)")
    t.add_argument("--temperature", type=float, help="sample-grid temperature (default 0.7)")
    t.add_argument("--eval-every", type=int, help="test bits/dim period in steps (default 250)")
    t.add_argument("--sample-every", type=int, help="sample-grid period in steps (default 500)")
    t.add_argument("--checkpoint-every", type=int, help="checkpoint period (default 250)")
    t.add_argument("--max-bad-steps", type=int, help="non-finite steps in a row before stopping")
    t.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="any TrainConfig key, VALUE in TOML syntax (e.g. --set lr_schedule='\"constant\"' "
        "--set hflip=true)",
    )
    t.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard events")
    t.add_argument(
        "--no-quality-metrics",
        action="store_true",
        help="skip the expression classifier at the end (transfer.png is still written)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    # ------------------------------------------------------------------------ sample
    s = sub.add_parser(
        "sample",
        help="sample faces of an expression from a trained model",
        description="Draw N faces of one expression from a class-conditional model.",
        formatter_class=_Formatter,
    )
    _add_trained_model_args(s)
    s.add_argument(
        "--expression",
        default="all",
        help="emotion name (angry, disgust, fear, happy, sad, surprise, neutral, contempt) or "
        "'all' (one row per trained expression)",
    )
    s.add_argument("-n", type=int, default=16, help="faces to draw (per row with 'all')")
    s.add_argument("--temperature", type=float, default=0.7, help="prior temperature")
    s.add_argument("--seed", type=int, default=0, help="noise seed")
    _add_run_options(s)
    s.add_argument("--out", default="samples.png", metavar="PNG", help="output image grid")

    # ---------------------------------------------------------------------- transfer
    r = sub.add_parser(
        "transfer",
        help="give a face another expression (by name or from a reference face)",
        description="Encode a face, move its latent to the target expression (class-mean "
        "difference) or take the expression part from a reference face (LDA subspace), decode.",
        formatter_class=_Formatter,
    )
    _add_trained_model_args(r)
    r.add_argument("--image", required=True, metavar="PNG", help="the face to edit")
    target = r.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NAME", help="target expression name")
    target.add_argument("--reference", metavar="PNG", help="face whose expression to copy")
    r.add_argument(
        "--from",
        dest="source",
        metavar="NAME",
        help="the face's expression (default: the model's most likely class)",
    )
    r.add_argument("--alpha", type=float, default=1.0, help="edit strength")
    r.add_argument(
        "--data",
        metavar="PATH",
        nargs="+",
        help="labelled faces to fit the latent statistics on (default: the run's saved "
        "statistics, or its training data)",
    )
    r.add_argument("--resize", action="store_true", help="resize images to the model's size")
    _add_run_options(r)
    r.add_argument("--out", required=True, metavar="PNG", help="edited face")

    # -------------------------------------------------------------------------- eval
    e = sub.add_parser(
        "eval",
        help="bits/dim and quality metrics of a model on a data split",
        description="Test bits/dim (conditional on the label and marginal), reconstruction "
        "error and the flow's own expression recognition accuracy on a split.",
        formatter_class=_Formatter,
    )
    _add_trained_model_args(e)
    e.add_argument(
        "--data",
        metavar="PATH",
        nargs="+",
        help="data to evaluate (default: the run's own data and split)",
    )
    e.add_argument("--split", choices=("test", "train", "all"), default="test")
    e.add_argument("--batch-size", type=int, default=64)
    _add_run_options(e)
    e.add_argument("--seed", type=int, help="split seed (default: the run's)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")

    # --------------------------------------------------------------------------- zoo
    z = sub.add_parser(
        "zoo",
        help="list and describe the layers, conditioners and models in the zoo",
        description="flowkit zoo: all entries; flowkit zoo KIND: one kind; flowkit zoo KIND "
        "NAME: description, signature and example configuration.",
        formatter_class=_Formatter,
    )
    z.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks")
    z.add_argument("kind", nargs="?", help="layer, conditioner or model")
    z.add_argument("name", nargs="?", help="entry name")
    return parser


# --------------------------------------------------------------------------- dispatch
def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return " ".join(text.split())


def run_command(args: argparse.Namespace) -> int:
    from flowkit.errors import FlowkitError

    handlers = {
        "train": cmd_train,
        "sample": cmd_sample,
        "transfer": cmd_transfer,
        "eval": cmd_eval,
        "zoo": cmd_zoo,
    }
    debug = bool(getattr(args, "debug", False))
    try:
        return handlers[args.command](args)
    except BrokenPipeError:  # e.g. `flowkit zoo | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as err:
        if debug:
            raise
        message = _one_line(err) if str(err) else "interrupted"
        print(f"flowkit {args.command}: {message}", file=sys.stderr)
        return 130
    except (FlowkitError, ValueError, FileNotFoundError, OSError, KeyError) as err:
        if debug:
            traceback.print_exc()
            return 2
        print(f"flowkit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------- train
def _train_config(args: argparse.Namespace) -> Any:
    from flowkit.errors import ConfigError
    from flowkit.training.config import TrainConfig, read_config_mapping, tomllib

    values: dict[str, Any] = {}
    if args.config:
        values.update(read_config_mapping(args.config))
    out = args.out
    if args.resume:
        if out is None:
            out = str(_newest_run(Path("runs")))
        saved = Path(out) / "config.json"
        if saved.is_file():
            stored = json.loads(saved.read_text())
            values.update(stored)
    flag_map = {
        "model": args.model,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "grad_clip": args.grad_clip,
        "image_size": args.image_size,
        "channels": args.channels,
        "n_bits": args.n_bits,
        "synthetic_size": args.synthetic_size,
        "device": args.device,
        "precision": args.precision,
        "memory_saving": args.memory_saving,
        "seed": args.seed,
        "temperature": args.temperature,
        "eval_every": args.eval_every,
        "sample_every": args.sample_every,
        "checkpoint_every": args.checkpoint_every,
        "max_bad_steps": args.max_bad_steps,
    }
    if args.data:
        flag_map["data"] = args.data[0] if len(args.data) == 1 else list(args.data)
    values.update({k: v for k, v in flag_map.items() if v is not None})
    kwargs = dict(values.get("model_kwargs", TrainConfig().model_kwargs))
    for key, flag in (
        ("levels", args.levels),
        ("steps", args.steps_per_level),
        ("hidden", args.hidden),
        ("conditioner", args.conditioner),
    ):
        if flag is not None:
            kwargs[key] = flag
    values["model_kwargs"] = kwargs
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = raw  # a bare word: take it as a string
        key = key.strip()
        if key.startswith("model_kwargs."):
            values["model_kwargs"][key.split(".", 1)[1]] = parsed
        else:
            values[key] = parsed
    if args.no_tensorboard:
        values["tensorboard"] = False
    if args.no_quality_metrics:
        values["quality_metrics"] = False
    values["resume"] = bool(args.resume)
    if out is None:
        out = str(_fresh_run_dir(Path("runs")))
    values["out"] = out
    config = TrainConfig.from_dict(values)
    _check_model_name(config.model)
    return config


def _check_model_name(name: str) -> None:
    from flowkit import zoo
    from flowkit.errors import ConfigError

    known = zoo.names("model")
    if name not in known:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(known)}")


def _fresh_run_dir(root: Path) -> Path:
    from flowkit.training.loop import default_run_dir

    base = default_run_dir(root)
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def _newest_run(root: Path) -> Path:
    from flowkit.training.checkpoint import list_checkpoints

    runs = [p for p in root.glob("*") if p.is_dir() and list_checkpoints(p / "checkpoints")]
    if not runs:
        raise FileNotFoundError(
            f"--resume without --out: no run with checkpoints under {root}/; pass --out RUN_DIR"
        )
    return max(runs, key=lambda p: p.stat().st_mtime)


def cmd_train(args: argparse.Namespace) -> int:
    from flowkit.training import train

    config = _train_config(args)
    result = train(config, progress=not args.quiet)
    m = result.metrics
    if m:
        print(
            f"done: {result.step} steps, test bits/dim {m['test_bpd']:.3f}, "
            f"{m.get('wall_time_s', m.get('train_wall_time_s', 0)):.0f} s, "
            f"skipped steps {result.skipped_steps}; run folder {result.run_dir}"
        )
    return 0


# ---------------------------------------------------------------------- model loading
def _device(name: str) -> Any:
    from flowkit.training.loop import resolve_device

    return resolve_device(name)


def _load_model(spec: str, device: Any) -> tuple[Any, dict[str, Any], Path]:
    """(model, run metadata, model file) for a model file, checkpoint folder or run folder."""
    from flowkit.errors import CheckpointError
    from flowkit.training.checkpoint import find_run_meta, load_model_file, resolve_model_path

    path = resolve_model_path(spec)
    try:
        model = load_model_file(path)
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as err:  # a foreign file that the loader did not recognise cleanly
        raise CheckpointError(f"{path} is not a flowkit model ({_one_line(err)})") from err
    model = model.to(device).eval()
    return model, find_run_meta(path), path


def _n_bits(args: argparse.Namespace, meta: dict[str, Any]) -> int:
    if getattr(args, "n_bits", None) is not None:
        return int(args.n_bits)
    return int(meta.get("n_bits", meta.get("config", {}).get("n_bits", 8)))


def _expression(name: str) -> int:
    from flowkit.data import label_index

    return label_index(name)


def _require_classes(model: Any, what: str) -> int:
    from flowkit.errors import ConfigError

    k = getattr(model, "num_classes", None)
    if not k:
        raise ConfigError(f"this model has no class-conditional prior; {what} needs one")
    return int(k)


# --------------------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import EMOTIONS, postprocess
    from flowkit.errors import ConfigError
    from flowkit.training.plots import image_grid, save_image

    if args.n <= 0:
        raise ConfigError(f"-n must be positive, got {args.n}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {args.temperature}")
    device = _device(args.device)
    # Validate the expression before the (slower) model load.
    wanted = None if args.expression == "all" else _expression(args.expression)
    model, meta, _ = _load_model(args.model, device)
    n_bits = _n_bits(args, meta)
    k = _require_classes(model, "sampling an expression")
    if wanted is None:
        trained = meta.get("classes") or list(EMOTIONS[:k])
        classes = [_expression(c) for c in trained]
    else:
        if wanted >= k:
            raise ConfigError(f"the model has {k} classes; {EMOTIONS[wanted]!r} is not one")
        trained = meta.get("classes")
        if trained and EMOTIONS[wanted] not in trained:
            print(
                f"flowkit sample: warning: {EMOTIONS[wanted]!r} was not in the training data "
                f"({', '.join(trained)}); its prior is untrained",
                file=sys.stderr,
            )
        classes = [wanted]
    y = torch.tensor(classes, device=device).repeat_interleave(args.n)
    g = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        x = model.sample(len(y), y, temperature=args.temperature, generator=g)
    images = postprocess(x.float().cpu(), n_bits, full_range=True)
    if len(classes) == 1:
        ncol = min(args.n, 8)
        grid = image_grid(images, nrow=-(-args.n // ncol), scale=2)
    else:
        grid = image_grid(images, nrow=len(classes), row_labels=[EMOTIONS[c] for c in classes])
    out = save_image(grid, args.out)
    what = "all trained expressions" if wanted is None else EMOTIONS[wanted]
    print(f"wrote {len(y)} samples ({what}, temperature {args.temperature}) to {out}")
    return 0


# ------------------------------------------------------------------------- transfer
def _read_face(path: str, model: Any, resize: bool) -> Any:
    import numpy as np

    from flowkit.data import DataError, read_image

    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    c, h, w = model.in_shape
    img = read_image(path, size=(h, w) if resize else None, channels=c)
    if img.shape != (c, h, w):
        raise DataError(
            f"image {path} is {img.shape[1]}x{img.shape[2]}, the model expects {h}x{w} "
            "(pass --resize to resize it)"
        )
    return np.array(img)


def _run_dir_candidates(model_path: Path) -> list[Path]:
    # model file in a run folder, or in runs/x/checkpoints/step-N/
    return [model_path.parent, model_path.parent.parent.parent]


def _editing_tools(
    model: Any,
    meta: dict[str, Any],
    model_path: Path,
    data: list[str] | None,
    n_bits: int,
    device: Any,
    need_space: bool,
) -> tuple[Any, Any]:
    """Latent statistics and (if needed) expression space: saved next to the run, else fitted on
    ``--data`` or the run's own training data."""
    from flowkit.editing import ExpressionSpace, LatentStatistics
    from flowkit.errors import ConfigError
    from flowkit.training.quality import SPACE_FILE, STATS_FILE, fit_editing

    if not data:
        for folder in _run_dir_candidates(model_path):
            stats_path, space_path = folder / STATS_FILE, folder / SPACE_FILE
            if stats_path.is_file() and (not need_space or space_path.is_file()):
                stats = LatentStatistics.load(stats_path)
                space = ExpressionSpace.load(space_path) if need_space else None
                return stats, space
    train_set = _data_for(meta, data, model, split="train")
    if train_set is None:
        raise ConfigError(
            "no latent statistics next to this model and no record of its training data; "
            "pass --data PATH with labelled faces"
        )
    stats, space = fit_editing(model, train_set, n_bits, device)
    if need_space and space is None:
        raise ConfigError("the data has a single expression; reference transfer needs two or more")
    return stats, space


def _data_for(meta: dict[str, Any], data: list[str] | None, model: Any, split: str) -> Any:
    """The EmotionSet to use: ``--data`` or the run's own data, at the model's size."""
    from flowkit.training.config import TrainConfig
    from flowkit.training.loop import prepare_data

    run_config = dict(meta.get("config", {}))
    if not data and not run_config:
        return None
    c, h, _ = model.in_shape
    values = {**run_config, "image_size": h, "channels": c, "resume": False, "out": None}
    if data:
        values["data"] = data[0] if len(data) == 1 else list(data)
    config = TrainConfig.from_dict(values)
    train_set, test_set = prepare_data(config)
    if split == "train":
        return train_set
    if split == "test":
        return test_set
    return train_set.merge(test_set)


def cmd_transfer(args: argparse.Namespace) -> int:
    import torch

    from flowkit.data import EMOTIONS, postprocess, preprocess
    from flowkit.editing import label_transfer, reference_transfer

    device = _device(args.device)
    target = None if args.to is None else _expression(args.to)
    source = None if args.source is None else _expression(args.source)
    model, meta, model_path = _load_model(args.model, device)
    n_bits = _n_bits(args, meta)
    face = _read_face(args.image, model, args.resize)
    x = preprocess(torch.from_numpy(face[None]), n_bits, dequantize=False).to(device)
    if args.reference is not None:
        ref = _read_face(args.reference, model, args.resize)
        x_ref = preprocess(torch.from_numpy(ref[None]), n_bits, dequantize=False).to(device)
        _, space = _editing_tools(model, meta, model_path, args.data, n_bits, device, True)
        edited = reference_transfer(model, x, x_ref, space, alpha=args.alpha)
        how = f"expression of {args.reference}"
    else:
        k = _require_classes(model, "label transfer")
        if source is None:
            source = _most_likely_class(model, x, k, meta)
            print(f"source expression (most likely under the model): {EMOTIONS[source]}")
        stats, _ = _editing_tools(model, meta, model_path, args.data, n_bits, device, False)
        edited = label_transfer(model, x, [source], [target], stats, alpha=args.alpha)
        how = f"{EMOTIONS[source]} -> {EMOTIONS[target]}"
    image = postprocess(edited.float().cpu(), n_bits, full_range=True)[0]
    from PIL import Image

    from flowkit.training.plots import save_image

    arr = image.numpy()
    pil = Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
    out = save_image(pil, args.out)
    print(f"wrote {out} ({how})")
    return 0


def _most_likely_class(model: Any, x: Any, k: int, meta: dict[str, Any]) -> int:
    """argmax_y log p(x | y) over the trained expressions: the class-conditional flow is a
    classifier too."""
    import torch

    from flowkit.data import EMOTIONS

    trained = meta.get("classes") or list(EMOTIONS[:k])
    candidates = [_expression(c) for c in trained]
    with torch.no_grad():
        scores = torch.stack(
            [model.log_prob(x, torch.full((x.shape[0],), c, device=x.device)) for c in candidates],
            dim=1,
        )
    return candidates[int(scores[0].argmax())]


# ----------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from flowkit.data import preprocess
    from flowkit.errors import ConfigError
    from flowkit.training.loop import evaluate_bits_per_dim, reconstruction_error

    device = _device(args.device)
    if args.data:
        for p in args.data:
            if not Path(p).exists():
                raise FileNotFoundError(f"data {p} does not exist")
    model, meta, model_path = _load_model(args.model, device)
    n_bits = _n_bits(args, meta)
    if args.seed is not None:
        meta = {**meta, "config": {**meta.get("config", {}), "seed": args.seed}}
    dataset = _data_for(meta, args.data, model, args.split)
    if dataset is None:
        raise ConfigError("this model has no record of its data; pass --data PATH")
    if tuple(dataset.shape) != tuple(model.in_shape):
        raise ConfigError(f"data shape {dataset.shape} != model input {tuple(model.in_shape)}")
    metrics: dict[str, Any] = {
        "model": str(model_path),
        "split": args.split,
        "images": len(dataset),
    }
    conditional = bool(getattr(model, "num_classes", None))
    metrics["bits_per_dim"] = evaluate_bits_per_dim(
        model, dataset, n_bits, args.batch_size, device=device, conditional=conditional
    )
    if conditional:
        metrics["bits_per_dim_marginal"] = evaluate_bits_per_dim(
            model, dataset, n_bits, args.batch_size, device=device, conditional=False
        )
    n = min(len(dataset), 256)
    x = preprocess(torch.from_numpy(dataset.images[:n]), n_bits, dequantize=False).to(device)
    metrics["reconstruction_max_abs_error"] = reconstruction_error(model, x)
    if conditional:
        k = int(model.num_classes)
        y = torch.from_numpy(np.asarray(dataset.labels[:n], dtype=np.int64))
        trained = meta.get("classes")
        from flowkit.data import EMOTIONS

        candidates = [_expression(c) for c in trained] if trained else list(range(k))
        with torch.no_grad():
            scores = torch.stack(
                [model.log_prob(x, torch.full((n,), c, device=device)) for c in candidates], 1
            )
        pred = torch.tensor(candidates)[scores.argmax(1).cpu()]
        metrics["flow_expression_accuracy"] = float((pred == y).double().mean())
        metrics["expressions"] = [EMOTIONS[c] for c in candidates]
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"{key}: {shown}")
    return 0


# ------------------------------------------------------------------------------ zoo
def cmd_zoo(args: argparse.Namespace) -> int:
    from flowkit import zoo
    from flowkit.errors import ConfigError

    if args.kind is None:
        for kind in zoo.KINDS:
            print(f"{kind}s:")
            for entry in zoo.entries(kind):
                print(f"  {entry.name:<20} {entry.summary[:90]}")
        return 0
    kind = args.kind[:-1] if args.kind.endswith("s") and args.kind[:-1] in zoo.KINDS else args.kind
    if kind not in zoo.KINDS:
        raise ConfigError(f"unknown zoo kind {args.kind!r}; expected one of {', '.join(zoo.KINDS)}")
    if args.name is None:
        for entry in zoo.entries(kind):
            print(f"{entry.name:<20} {entry.summary[:100]}")
        return 0
    print(zoo.describe(kind, args.name))
    return 0
