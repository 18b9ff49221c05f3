"""Expression transfer with a flow, and its numbers: synthetic faces (exact ground truth) and CK+48.

    python examples/expression_transfer.py             # trains small BPLFs (~5-10 min, 2 CPUs)
    python examples/expression_transfer.py --small             # CI smoke run (< 60 s)
    python examples/expression_transfer.py --model run/model.safetensors --datasets synthetic

For each dataset: a BPLF (``--model CKPT``, else a small one trained here on the training
split), the per-expression latent means and the LDA identity/expression space of the training
faces, and an expression classifier (flowkit.metrics, trained on the same training faces).
On held-out people:

* label transfer ``z + (mean_target - mean_source)``: every face to every other expression the
  same person also shows (synthetic: all; CK+48: the expressions the subject posed);
* reference transfer: the expression part of another held-out person's face showing the target
  expression, the identity part of the face.

Reported: SSIM of the edited face to the same person's real target face, against the SSIM of
the unedited source to it (the edit must beat doing nothing); SSIM of edited to source (identity
kept); classifier accuracy on edited faces (target expression recognised) against the
classifier's accuracy on the real target faces (its ceiling) and on the unedited sources; LDA
accuracy on the edited latents; Fréchet distance (classifier features) of edited vs real target
faces. Pictures: ``transfer_<dataset>.png`` (faces x target expressions) and
``reference_<dataset>.png``; numbers in ``transfer.md`` / ``transfer.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------------------------ data
def synthetic_sets(args: argparse.Namespace) -> tuple[Any, Any]:
    """Training people and different held-out people (another seed's population), each
    rendered with every expression: the held-out set is the ground truth for transfer."""
    from flowkit.data import synthetic_emotion_set

    exprs = args.expressions
    train = synthetic_emotion_set(args.synthetic_train, exprs, size=args.image_size, seed=0)
    test = synthetic_emotion_set(args.synthetic_test, exprs, size=args.image_size, seed=1)
    return train, test


def ckplus_sets(args: argparse.Namespace) -> tuple[Any, Any] | None:
    from flowkit import data

    path = Path(args.data_dir) / "ckplus48.npz"
    if not path.is_file():
        return None
    ck = data.load(path, size=args.image_size)
    return ck.split(test_fraction=0.2, seed=0)  # subject-disjoint


def transfer_pairs(test_set: Any, rng: np.random.Generator, limit: int) -> np.ndarray:
    """Rows ``(source, target, reference)``: same person, different expression for source /
    target; a different person with the target expression as reference. One image per
    (person, expression): the peak frame for CK+ sequences."""
    labels = np.asarray(test_set.labels)
    people = np.asarray(test_set.subjects)
    frames = np.asarray(test_set.meta.get("frames", np.zeros(len(labels))))
    best: dict[tuple[str, int], int] = {}
    for i in range(len(labels)):
        key = (str(people[i]), int(labels[i]))
        if key not in best or frames[i] > frames[best[key]]:
            best[key] = i
    by_label: dict[int, list[tuple[str, int]]] = {}
    for (p, y), i in best.items():
        by_label.setdefault(y, []).append((p, i))
    rows = []
    for (p, s), i in best.items():
        for (q, t), j in best.items():
            if q != p or t == s:
                continue
            others = [k for person, k in by_label[t] if person != p]
            if others:
                rows.append((i, j, int(rng.choice(others))))
    rows_arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    if len(rows_arr) > limit:
        rows_arr = rows_arr[np.sort(rng.permutation(len(rows_arr))[:limit])]
    return rows_arr


# ----------------------------------------------------------------------------------- model
def get_model(args: argparse.Namespace, train_set: Any, test_set: Any, seed: int = 0) -> Any:
    if args.model:
        import flowkit

        return flowkit.load(args.model).eval()
    from flowkit.training import TrainConfig, train

    config = TrainConfig(
        model="bplf",
        model_kwargs=dict(levels=args.levels, steps=args.flow_steps, hidden=args.hidden),
        image_size=args.image_size,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=max(1, args.steps // 10),
        n_bits=args.n_bits,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        log_every=0,
        seed=seed,
        device="cpu",
        out=None,
        quality_metrics=False,
        tensorboard=False,
        num_workers=args.threads,
    )
    t0 = time.perf_counter()
    result = train(config, train_set, test_set, progress=False, log=lambda _msg: None)
    bpd = result.metrics.get("test_bpd", float("nan"))
    print(
        f"  trained BPLF ({result.model.num_parameters():,} params, {args.steps} steps) in "
        f"{time.perf_counter() - t0:.0f} s, test bpd {bpd:.3f}"
    )
    return result.model.eval()


# ---------------------------------------------------------------------------------- report
def evaluate(args: argparse.Namespace, name: str, train_set: Any, test_set: Any, out: Path) -> dict:
    from flowkit import metrics
    from flowkit.data import EMOTIONS, postprocess, preprocess
    from flowkit.editing import (
        ExpressionSpace,
        LatentStatistics,
        encode,
        label_transfer,
        reference_transfer,
    )
    from flowkit.metrics import image_grid, save_image

    print(f"{name}: {len(train_set)} train / {len(test_set)} test faces")
    model = get_model(args, train_set, test_set)
    if not args.model:
        model.save(out / f"model_{name}.safetensors")  # reuse with --model
    size = tuple(model.in_shape[1:])
    if tuple(train_set.images.shape[2:]) != size:
        train_set, test_set = train_set.convert(size=size), test_set.convert(size=size)

    def pre(images: np.ndarray) -> torch.Tensor:
        return preprocess(torch.from_numpy(np.ascontiguousarray(images)), args.n_bits, False)

    x_train, y_train = pre(train_set.images), torch.from_numpy(train_set.labels)
    z_train = encode(model, x_train)
    stats = LatentStatistics.from_latents(z_train, y_train)
    space = ExpressionSpace.fit(z_train, y_train)
    t0 = time.perf_counter()
    clf = metrics.train_expression_classifier(
        train_set, epochs=args.classifier_epochs, batch_size=32, seed=0, width=args.classifier_width
    )
    clf.save(out / f"classifier_{name}.safetensors")
    clf_time = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    pairs = transfer_pairs(test_set, rng, args.max_pairs)
    src_i, tgt_i, ref_i = pairs.T
    x_src, x_tgt, x_ref = (
        pre(test_set.images[src_i]),
        pre(test_set.images[tgt_i]),
        pre(test_set.images[ref_i]),
    )
    y_src = torch.from_numpy(test_set.labels[src_i])
    y_tgt = torch.from_numpy(test_set.labels[tgt_i])
    labelled = label_transfer(model, x_src, y_src, y_tgt, stats, alpha=args.alpha)
    referenced = reference_transfer(model, x_src, x_ref, space, alpha=args.alpha)

    res: dict[str, Any] = {
        "pairs": len(pairs),
        "people": len(set(np.asarray(test_set.subjects)[src_i].tolist())),
        "reconstruction_max_abs_error": metrics.reconstruction_error(model, x_src[:64]),
        "classifier_test_accuracy_real": metrics.expression_accuracy(
            clf, pre(test_set.images), test_set.labels
        ),
        "classifier_train_time_s": round(clf_time, 1),
        "ssim_source_to_target": metrics.ssim(x_src, x_tgt),
        "accuracy_on_real_targets": metrics.expression_accuracy(clf, x_tgt, y_tgt),
        "accuracy_of_unedited_sources_as_target": metrics.expression_accuracy(clf, x_src, y_tgt),
    }
    for method, edited in (("label", labelled), ("reference", referenced)):
        res[f"{method}_ssim_to_target"] = metrics.ssim(edited, x_tgt)
        res[f"{method}_ssim_to_source"] = metrics.ssim(edited, x_src)
        res[f"{method}_accuracy"] = metrics.expression_accuracy(clf, edited, y_tgt)
        res[f"{method}_lda_accuracy"] = space.accuracy(encode(model, edited), y_tgt)
        if len(edited) >= 8:
            res[f"{method}_frechet_to_real_targets"] = metrics.frechet_distance(clf, x_tgt, edited)
        per = metrics.ssim_per_image(edited, x_tgt) > metrics.ssim_per_image(x_src, x_tgt)
        res[f"{method}_fraction_closer_than_source"] = float(per.mean())

    # Edit strength: larger alpha moves further along the class-mean direction.
    for alpha in args.alphas:
        edited = label_transfer(model, x_src, y_src, y_tgt, stats, alpha=alpha)
        res[f"label_alpha{alpha:g}_ssim_to_target"] = metrics.ssim(edited, x_tgt)
        res[f"label_alpha{alpha:g}_ssim_to_source"] = metrics.ssim(edited, x_src)
        res[f"label_alpha{alpha:g}_accuracy"] = metrics.expression_accuracy(clf, edited, y_tgt)

    # Pictures: a few held-out faces x every expression of the training set (label transfer).
    classes = stats.present_labels
    # One face per person, cycling through the source expressions.
    people = np.asarray(test_set.subjects)[src_i]
    src_labels = np.asarray(test_set.labels)[src_i]
    rows: list[int] = []
    for r, p in enumerate(dict.fromkeys(people.tolist())):
        mine = np.flatnonzero(people == p)
        want = mine[src_labels[mine] == classes[r % len(classes)]]
        rows.append(int(src_i[want[0] if len(want) else mine[0]]))
        if len(rows) == args.grid_rows:
            break
    xr, yr = pre(test_set.images[rows]), torch.from_numpy(test_set.labels[rows])
    k = len(classes)
    edited = label_transfer(
        model,
        xr.repeat_interleave(k, 0),
        yr.repeat_interleave(k),
        torch.tensor(classes * len(rows)),
        stats,
    )
    tiles = torch.cat([xr.unsqueeze(1), edited.reshape(len(rows), k, *xr.shape[1:])], 1)
    grid = image_grid(
        postprocess(tiles.reshape(-1, *xr.shape[1:]), args.n_bits, True),
        nrow=len(rows),
        row_labels=[EMOTIONS[int(v)] for v in yr],
        col_labels=["input"] + [EMOTIONS[c] for c in classes],
        scale=max(1, 96 // size[0]),
    )
    save_image(grid, out / f"transfer_{name}.png")
    # Reference transfer: source | reference | result | true target, for the first pairs.
    m = min(args.grid_rows * 2, len(pairs))
    quad = torch.stack([x_src[:m], x_ref[:m], referenced[:m], labelled[:m], x_tgt[:m]], 1)
    grid = image_grid(
        postprocess(quad.reshape(-1, *x_src.shape[1:]), args.n_bits, True),
        nrow=m,
        col_labels=["face", "reference", "ref. transfer", "label transfer", "true target"],
        scale=max(1, 96 // size[0]),
    )
    save_image(grid, out / f"reference_{name}.png")
    return res


def to_markdown(results: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [
        "# Expression transfer (flowkit BPLF)",
        "",
        f"Command: `python examples/expression_transfer.py {' '.join(args.argv)}`".rstrip(),
        "",
        "Held-out people only. SSIM: scikit-image, 7x7 window. Accuracy: flowkit.metrics "
        "expression classifier trained on the training split (its accuracy on real held-out "
        "faces is its ceiling).",
        "",
        "| metric | " + " | ".join(results) + " |",
        "| --- |" + " ---: |" * len(results),
    ]
    keys = list(next(iter(results.values())).keys())
    for key in keys:
        cells = []
        for r in results.values():
            v = r.get(key, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a saved flowkit model (else one is trained)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--datasets", nargs="+", default=["synthetic", "ckplus48"])
    p.add_argument("--out", default="transfer_out")
    p.add_argument("--small", action="store_true", help="tiny smoke run (16 px, < 60 s)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--flow-steps", type=int, default=2)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--n-bits", type=int, default=5)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--alphas", type=float, nargs="*", default=[0.5, 1.5, 2.0], help="sweep")
    p.add_argument(
        "--expressions",
        nargs="+",
        default=["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    )
    p.add_argument("--synthetic-train", type=int, default=150, help="training people")
    p.add_argument("--synthetic-test", type=int, default=20, help="held-out people")
    p.add_argument("--classifier-epochs", type=int, default=12)
    p.add_argument("--classifier-width", type=int, default=32)
    p.add_argument("--max-pairs", type=int, default=1000)
    p.add_argument("--grid-rows", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.small:
        args.image_size, args.steps, args.flow_steps, args.hidden = 16, 30, 1, 16
        args.synthetic_train, args.synthetic_test, args.classifier_epochs = 24, 4, 3
        args.classifier_width, args.max_pairs, args.grid_rows = 8, 64, 3
        args.alphas = args.alphas[:1]
    return args


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in args.datasets:
        if name == "synthetic":
            sets = synthetic_sets(args)
        elif name == "ckplus48":
            sets = ckplus_sets(args)
            if sets is None:
                print(f"ckplus48.npz not found in {args.data_dir}: skipping CK+48")
                continue
            if args.small:
                tr, te = sets
                sets = (tr.subset(np.arange(0, len(tr), 6)), te)
        else:
            raise SystemExit(f"unknown dataset {name!r} (synthetic, ckplus48)")
        results[name] = evaluate(args, name, *sets, out)
    (out / "transfer.json").write_text(json.dumps(results, indent=1))
    report = to_markdown(results, args)
    (out / "transfer.md").write_text(report)
    print(report)
    return results


if __name__ == "__main__":
    main()
