"""Spline couplings on faces at equal CPU time: flowkit's ``nsf_glow`` against the affine ``glow``.

    python -m benchmarks.spline_images                  # FER2013 48x48, 5 minutes per model
    python -m benchmarks.spline_images --minutes 15     # longer budget per model
    python -m benchmarks.spline_images --quick          # synthetic faces, seconds (tests)

The ``splines`` suite of :mod:`benchmarks.equal_time` (see there for the protocol): both models
of the same layout (3 levels x 4 steps, squeeze, split with a learned prior), ``nsf_glow`` with
rational-quadratic spline couplings at ``--hidden`` (8 bins, tail bound 3), the affine ``glow``
with the width whose parameter count is closest to it (a spline's conditioner outputs ``3K - 1``
values per transformed channel instead of 2, so at equal width it has more parameters).
Writes ``benchmarks/results/spline_images.json``, ``.md``, ``spline_images-<model>.png`` and
``spline_images-curves.png`` (``quick-spline_images.*`` with ``--quick`` unless ``--out``).
"""

from __future__ import annotations

import sys

from benchmarks import equal_time


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m benchmarks.spline_images", *argv])
    return equal_time.main(argv, suite="splines", command=command, stem="spline_images")


if __name__ == "__main__":
    sys.exit(main())
