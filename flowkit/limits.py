"""The bounded-work guarantee: the largest request flowkit accepts, in one place.

Every entry point that could be asked for unbounded work (a model file, a batch, a sample
request, an image size) checks its request against these numbers *before* it allocates, and
refuses a larger one with a :class:`~flowkit.errors.ConfigError` (or
:class:`~flowkit.errors.CheckpointError` for files) whose message says the limit. The values are
chosen so that the largest accepted request fits in a few GiB on a laptop while leaving every
realistic use far inside them (docs/concepts/limits.md gives the reasoning):

- a model has at most :data:`MAX_MODEL_PARAMETERS` values (4 GiB of float32), a model file at
  most :data:`MAX_MODEL_TENSORS` tensors and :data:`MAX_MODEL_FILE_BYTES` bytes, and its
  configuration is checked against the file's tensor list before a single weight is allocated;
- images are at most :data:`MAX_IMAGE_SIDE` pixels on a side, and a run generates at most
  :data:`MAX_SYNTHETIC_FACES` synthetic faces;
- one sampling request draws at most :data:`MAX_SAMPLES` images, computed in chunks of
  :data:`SAMPLE_CHUNK`;
- a training batch is never larger than the training set it is drawn from.
"""

from __future__ import annotations

MAX_MODEL_PARAMETERS = 1 << 30
"""Values (parameters and buffers) in one model: 1,073,741,824, 4 GiB as float32. flowkit's
largest recipes have a few million."""

MAX_MODEL_TENSORS = 100_000
"""Named tensors in one model file. A 48-level Glow of 32 steps has about 10,000."""

MAX_MODEL_FILE_BYTES = 8 * MAX_MODEL_PARAMETERS + (100 << 20)
"""Largest model file read: every value as float64 plus a 100 MiB header."""

MAX_IMAGE_SIDE = 1024
"""Pixels on a side of the images a model is trained on or draws (1024 x 1024 is far beyond
what a flow trains on a CPU; a batch of 64 such RGB images is already 800 MiB as float32)."""

MAX_SYNTHETIC_FACES = 100_000
"""Synthetic faces generated for one run (``synthetic_size``): 25 times the default, about
100 MiB at 32 x 32 and a few minutes of rendering; real data sets are read, not generated."""

MAX_SAMPLES = 10_000
"""Images one sampling request (``flowkit sample -n``, rows included) draws: a 100 x 100 grid."""

SAMPLE_CHUNK = 256
"""Images drawn per forward pass when a request is larger, so memory stays that of one chunk."""
