"""Procedural synthetic faces: identity and expression as separate, known factors.

The embedded default data set of flowkit: no download, any size (32/48/64 px), grey or RGB,
deterministic per seed, and, since any identity can be rendered with any expression, exact
ground truth for expression transfer.

* **Identity** factors (:class:`Identities`): face width/height and jaw, skin tone, hair
  colour/volume/length/hairline/parting, eye spacing/height/size and iris colour, brow
  thickness/length/gap, nose length/width, mouth position/width and lip colour, ears,
  neck, clothes and background colour.
* **Expression** factors (:data:`EXPRESSION_FACTORS`): mouth curve, opening (top/bottom),
  width, one-sided smirk, one-sided upper-lip raise, teeth, brow raise/tilt/inward
  shift/asymmetry, eye openness, nose wrinkle and smile folds. :data:`EXPRESSION_TABLE`
  holds one canonical setting per emotion of :data:`flowkit.data.labels.EMOTIONS`;
  ``intensity`` interpolates from neutral (0) to the full expression (1).

Rendering is vectorised over the batch with NumPy: each part is a signed-distance function
(negative inside) turned into coverage ``clip(0.5 - d_pixels, 0, 1)``, which anti-aliases
every edge over about one pixel, and painted over the canvas front to back. Identity parts
never depend on expression factors, so two renders of one identity with different expressions
differ only around the eyes, brows, nose and mouth (see :meth:`SyntheticFaces.expression_boxes`).

Nuisance (per sample, reproducible from ``seed``): expression intensity jitter, small
per-factor jitter, a sub-pixel to ~1 px shift, and Gaussian pixel noise. Turn it off with
``nuisance=False`` for clean ground truth.

The package, one concept per module: :mod:`.identities` (who), :mod:`.expressions` (which
expression), :mod:`.shapes` (rasterising primitives), :mod:`.face` (the face layout),
:mod:`.renderer` (:class:`SyntheticFaces`: grid, nuisance, chunks), :mod:`.dataset`
(:func:`synthetic_emotion_set`) and :mod:`.speed` (:func:`benchmark`).
"""

from flowkit.data.synthetic.dataset import synthetic_emotion_set
from flowkit.data.synthetic.expressions import (
    EXPRESSION_FACTORS,
    EXPRESSION_TABLE,
    expression_params,
)
from flowkit.data.synthetic.identities import Identities
from flowkit.data.synthetic.renderer import SyntheticFaces
from flowkit.data.synthetic.speed import benchmark

__all__ = [
    "EXPRESSION_FACTORS",
    "EXPRESSION_TABLE",
    "Identities",
    "SyntheticFaces",
    "benchmark",
    "expression_params",
    "synthetic_emotion_set",
]
