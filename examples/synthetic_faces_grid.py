"""Render a grid of synthetic faces: rows = identities, columns = the 8 expressions.

    python examples/synthetic_faces_grid.py --out faces.png --size 48 --rows 5 --rgb
    python examples/synthetic_faces_grid.py --benchmark          # faces/second on one core

The same identity appears in every column of its row: the synthetic set's ground truth for
expression transfer.
"""

from __future__ import annotations

import argparse
import os

# Single-threaded numerics for an honest one-core number (must precede numpy's import).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from flowkit.data import EMOTIONS, SyntheticFaces  # noqa: E402
from flowkit.data.synthetic import benchmark  # noqa: E402


def grid(size: int, rows: int, channels: int, seed: int, scale: int, nuisance: bool) -> Image.Image:
    """Render ``rows`` identities x 8 expressions, upscaled ``scale`` times, with labels."""
    faces = SyntheticFaces(size=size, channels=channels, seed=seed)
    people = faces.identities(rows)
    images = faces.render(people.repeat(len(EMOTIONS)), list(EMOTIONS) * rows, nuisance=nuisance)
    cols, cell, pad, head = len(EMOTIONS), size * scale, 4, 18
    canvas = Image.new(
        "RGB", (cols * (cell + pad) + pad, head + rows * (cell + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(EMOTIONS):
        draw.text((pad + j * (cell + pad) + 2, 3), name, fill="black")
    for i in range(rows):
        for j in range(cols):
            img = images[i * cols + j]
            arr = img[0] if channels == 1 else img.transpose(1, 2, 0)
            tile = Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
            tile = tile.resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (pad + j * (cell + pad), head + pad + i * (cell + pad)))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="synthetic_faces_grid.png", help="PNG to write")
    parser.add_argument("--size", type=int, default=48, help="face size in pixels (32/48/64)")
    parser.add_argument("--rows", type=int, default=5, help="number of identities")
    parser.add_argument("--rgb", action="store_true", help="colour instead of grey")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=3, help="upscaling of each face")
    parser.add_argument("--nuisance", action="store_true", help="add jitter, shift and noise")
    parser.add_argument("--benchmark", action="store_true", help="measure faces/second")
    parser.add_argument("--small", action="store_true", help="2 identities at 32px (CI)")
    args = parser.parse_args()
    if args.small:
        args.size, args.rows = 32, 2

    channels = 3 if args.rgb else 1
    img = grid(args.size, args.rows, channels, args.seed, args.scale, args.nuisance)
    img.save(args.out)
    print(
        f"wrote {args.out} ({args.rows} identities x {len(EMOTIONS)} expressions, "
        f"{args.size}px, {'RGB' if args.rgb else 'grey'})"
    )
    if args.benchmark:
        rate = benchmark(size=args.size, channels=channels, n=2000, repeats=3)
        print(
            f"rendering speed: {rate:,.0f} faces/second at {args.size}px "
            f"({'RGB' if args.rgb else 'grey'}, one core, nuisance on)"
        )


if __name__ == "__main__":
    main()
