"""A new block, model recipe, data reader and CLI command each need one new file and no edit
elsewhere (docs/concepts/layout.md).

The package is copied to a temporary folder, one file of each kind is added to the copy, and a
fresh interpreter that imports the copy must find all four: the block in the zoo and under the
contract checks, the model in the zoo (trainable, and rebuilt by ``flowkit.load`` from its
recorded arguments), the reader in ``flowkit.data.load``, the command in the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import flowkit

NEW_BLOCK = '''
"""Negation, a test block: y = -x, inverse x = -y, log-det 0."""
from torch import Tensor

from flowkit import zoo
from flowkit.layers.base import FlowTransform


@zoo.register("layer", "negate", example=dict(in_shape=(2, 4, 4)))
class Negate(FlowTransform):
    """Forward ``y = -x``; inverse ``x = -y``; log-det 0."""

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return -x, self.zero_logabsdet(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return -y, self.zero_logabsdet(y)
'''

NEW_MODEL = '''
"""A test recipe: a multi-scale flow whose step ends with the negation block."""
from collections.abc import Sequence

from flowkit import zoo
from flowkit.models.multiscale import MultiScaleFlow


@zoo.register("model", "negating_flow", data="image", example=dict(in_shape=(1, 4, 4)))
class NegatingFlow(MultiScaleFlow):
    """Glow-like steps followed by a negation."""

    def __init__(self, in_shape: Sequence[int] = (1, 8, 8), width: int = 8,
                 num_classes: int | None = None):
        super().__init__(in_shape, levels=2, steps=1, hidden=width, num_classes=num_classes,
                         step=["actnorm", "conv1x1", "affine_coupling", "negate"])
'''

NEW_READER = '''
"""A test format: a .faces.npy array of uint8 images, every face labelled neutral."""
from pathlib import Path

import numpy as np

from flowkit.data.emotion_set import EmotionSet
from flowkit.data.labels import label_index
from flowkit.data.readers.registry import Reader, ReadOptions, register


def _read(path: Path, options: ReadOptions) -> EmotionSet:
    images = np.load(path)
    return EmotionSet(images=images, labels=np.full(len(images), label_index("neutral")))


register(Reader(name="faces_npy", detect=lambda p: p.name.endswith(".faces.npy"), read=_read,
                expects="a .faces.npy array", kind="file"))
'''

NEW_COMMAND = '''
"""``flowkit hello``: a test command."""
import argparse

from flowkit.cli.registry import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="world")


def run(args: argparse.Namespace) -> int:
    print(f"hello {args.name}")
    return 0


COMMAND = Command(name="hello", help="say hello", add_arguments=add_arguments, run=run)
'''

CHECK = """
import sys
from pathlib import Path

import numpy as np
import torch

import flowkit
from flowkit import zoo
from flowkit.cli import main
from flowkit.testing import check_block

assert flowkit.__file__.startswith(sys.argv[1]), flowkit.__file__
block = zoo.build("layer", "negate", in_shape=(2, 4, 4))
check_block(block, torch.randn(3, 2, 4, 4))

assert "negating_flow" in zoo.names("model", data="image")
model = zoo.build("model", "negating_flow", in_shape=(1, 8, 8), width=4, num_classes=2)
x = torch.rand(4, 1, 8, 8) - 0.5
model.initialize(x)
model.eval()
model.save(Path(sys.argv[2]) / "m.safetensors")
loaded = flowkit.load(Path(sys.argv[2]) / "m.safetensors").eval()
assert loaded.config == model.config and loaded.config["width"] == 4, loaded.config
y = torch.tensor([0, 1, 0, 1])
assert torch.equal(loaded.log_prob(x, y), model.log_prob(x, y))
from flowkit.training import TrainConfig, build_model

config = TrainConfig(model="negating_flow", model_kwargs={"width": 4}, image_size=16)
assert build_model(config).config["model"] == "negating_flow"

faces = np.random.default_rng(0).integers(0, 256, (5, 1, 16, 16), dtype=np.uint8)
np.save(Path(sys.argv[2]) / "set.faces.npy", faces)
data = flowkit.data.load(Path(sys.argv[2]) / "set.faces.npy")
assert len(data) == 5 and (data.labels == 6).all()

assert main(["hello", "--name", "layout"]) == 0
print("ALL FOUR FOUND")
"""


def test_one_new_file_per_extension(tmp_path: Path) -> None:
    package = Path(flowkit.__file__).parent
    copy = tmp_path / "src" / "flowkit"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {p.relative_to(copy) for p in copy.rglob("*.py")}
    (copy / "layers" / "negate.py").write_text(textwrap.dedent(NEW_BLOCK))
    (copy / "models" / "negating_flow.py").write_text(textwrap.dedent(NEW_MODEL))
    (copy / "data" / "readers" / "faces_npy.py").write_text(textwrap.dedent(NEW_READER))
    (copy / "cli" / "commands" / "hello.py").write_text(textwrap.dedent(NEW_COMMAND))
    after = {p.relative_to(copy) for p in copy.rglob("*.py")}
    assert len(after - before) == 4
    # Every file that was there is unchanged: the four files are the whole change.
    for rel in before:
        assert (copy / rel).read_bytes() == (package / rel).read_bytes()
    env = {**os.environ, "PYTHONPATH": str(copy.parent), "FLOWKIT_NO_MALLOC_TUNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, str(copy), str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hello layout" in proc.stdout and "ALL FOUR FOUND" in proc.stdout
