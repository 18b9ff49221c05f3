"""The ``flowkit`` command line: subcommands end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import flowkit
from flowkit import cli
from flowkit.training import TrainConfig, build_model

TINY_FLAGS = [
    "--image-size", "16", "--levels", "2", "--steps-per-level", "1", "--hidden", "8",
    "--synthetic-size", "80", "--batch-size", "8", "--no-tensorboard", "--no-quality-metrics",
    "--quiet",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", FLOWKIT_NO_MALLOC_TUNING="1")
    return env


def flowkit_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowkit", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained but initialised) class-conditional 16x16 BPLF saved as a model file."""
    import torch

    config = TrainConfig(
        image_size=16, model_kwargs={"levels": 2, "steps": 1, "hidden": 8}, out=None
    )
    model = build_model(config)
    model.initialize(torch.rand(32, 1, 16, 16) - 0.5, torch.arange(32) % 8)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    model.save(str(path))
    return path


def _face(path: Path, size: int) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------ basics
def test_version_and_help() -> None:
    done = flowkit_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"flowkit {flowkit.__version__}"
    parser = cli.build_parser()
    text = parser.format_help()
    for command in ("train", "sample", "transfer", "eval", "zoo"):
        assert command in text
    sub = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse internals
    train_help = sub["train"].format_help()
    for flag in ("--config", "--model", "--data", "--out", "--steps", "--resume", "--device"):
        assert flag in train_help
    assert "torchrun" in train_help


def test_zoo_lists_and_describes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["zoo"]) == 0
    listing = capsys.readouterr().out
    assert "bplf" in listing and "actnorm" in listing
    assert cli.main(["zoo", "layer", "actnorm"]) == 0
    assert "example" in capsys.readouterr().out
    assert cli.main(["zoo", "gadget"]) == 2
    assert "unknown zoo kind" in capsys.readouterr().err


def test_malloc_tuning_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "FLOWKIT_MALLOC_TUNED"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("FLOWKIT_NO_MALLOC_TUNING", raising=False)
    import platform

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert cli._wants_malloc_tuning(["train"]) is expected
    assert cli._wants_malloc_tuning(["zoo"]) is False
    assert cli._wants_malloc_tuning(["train", "--help"]) is False
    monkeypatch.setenv("FLOWKIT_NO_MALLOC_TUNING", "1")
    assert cli._wants_malloc_tuning(["train"]) is False
    monkeypatch.delenv("FLOWKIT_NO_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert cli._wants_malloc_tuning(["train"]) is False


def test_memory_saving_train_reexecs_with_huge_page_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory-saving training starts with LOW_MEMORY_ENV (glibc thresholds left alone), any
    other heavy command with the raised thresholds; the choice reads flags, --set and configs."""
    from flowkit import allocator

    monkeypatch.chdir(tmp_path)
    for key in (*allocator.MALLOC_ENV, *allocator.LOW_MEMORY_ENV):
        monkeypatch.delenv(key, raising=False)
    calls: list[dict[str, str]] = []

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append(env)

    monkeypatch.setattr(cli.os, "execve", fake_execve)
    config = tmp_path / "c.toml"
    config.write_text("memory_saving = true\n")
    cases = {
        ("train", "--memory-saving"): True,
        ("train", "--set", "memory_saving=true"): True,
        ("train", "--config", str(config)): True,
        ("train",): False,
        ("train", "--steps", "oops"): False,  # unparsable: the real run reports it
        ("eval", "--model", "x"): False,
    }
    for argv, saving in cases.items():
        assert cli._memory_saving_requested(argv) is saving, argv
        cli._reexec_with_malloc_tuning(argv)
        env = calls.pop()
        wanted, other = (
            (allocator.LOW_MEMORY_ENV, allocator.MALLOC_ENV)
            if saving
            else (allocator.MALLOC_ENV, allocator.LOW_MEMORY_ENV)
        )
        assert allocator.env_active(wanted, env), argv
        assert not any(env.get(k) == v for k, v in other.items()), argv
        assert env["FLOWKIT_MALLOC_TUNED"] == "1"
    assert not list(tmp_path.glob("runs")), "deciding must not create a run folder"


def test_malloc_reexec_sets_variables(tmp_path: Path) -> None:
    """`flowkit eval` re-executes itself once with the allocator variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FLOWKIT_"))}
    env["OMP_NUM_THREADS"] = "1"
    code = (
        "import os, sys; from flowkit import cli; from flowkit.cli import commands\n"
        "def show(args):\n"
        "    env = os.environ\n"
        "    print(env.get('MALLOC_MMAP_THRESHOLD_'), env.get('FLOWKIT_MALLOC_TUNED'))\n"
        "    return 0\n"
        "commands.cmd_eval = show\n"
        "sys.argv = ['flowkit', 'eval', '--model', 'x']\n"
        "sys.exit(cli.main())\n"
    )
    # The re-exec runs `python -m flowkit`, not this snippet, so observe it through the child:
    # the snippet's own process either prints (no re-exec) or is replaced by the real CLI.
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    import platform

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        # Replaced by `python -m flowkit eval --model x`: the real command reports the missing
        # model, proving the process was re-executed (the patched handler never ran).
        assert done.returncode == 2 and "model x does not exist" in done.stderr
    else:
        assert done.stdout.split() == ["None", "None"]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "case",
    [
        "missing_model",
        "foreign_model",
        "unknown_expression",
        "unknown_model",
        "missing_data",
        "transfer_without_subjects",
        "bad_max_transfers",
    ],
)
def test_bad_input_gives_one_line_error(case: str, model_file: Path, tmp_path: Path) -> None:
    if case == "missing_model":
        done = flowkit_cli("sample", "--model", str(tmp_path / "nope.safetensors"))
        assert_one_line_error(done, "nope.safetensors", "does not exist")
    elif case == "foreign_model":
        foreign = _face(tmp_path / "face.png", 16)
        done = flowkit_cli("sample", "--model", str(foreign), "--out", str(tmp_path / "s.png"))
        assert_one_line_error(done, "face.png")
    elif case == "unknown_expression":
        done = flowkit_cli("sample", "--model", str(model_file), "--expression", "grumpy")
        assert_one_line_error(done, "grumpy", "happy")
    elif case == "transfer_without_subjects":
        faces = tmp_path / "faces.npz"  # labelled faces, no subject ids (like FER2013)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (24, 16, 16), dtype=np.uint8)
        names = np.array(["angry", "happy", "sad", "surprise"])
        np.savez(faces, images=images, labels=np.arange(24) % 4, label_names=names)
        done = flowkit_cli(
            "eval", "--model", str(model_file), "--data", str(faces), "--transfer",
            "--out", str(tmp_path / "t"),
        )  # fmt: skip
        assert_one_line_error(done, "subject ids")
    elif case == "bad_max_transfers":
        done = flowkit_cli(
            "eval", "--model", str(model_file), "--transfer", "--max-transfers", "0"
        )  # fmt: skip
        assert_one_line_error(done, "--max-transfers")
    elif case == "unknown_model":
        done = flowkit_cli("train", "--model", "wavenet", "--out", str(tmp_path / "r"))
        assert_one_line_error(done, "wavenet", "bplf")
        assert not (tmp_path / "r").exists()
    else:
        done = flowkit_cli("train", "--data", str(tmp_path / "fer.csv"), *TINY_FLAGS)
        assert_one_line_error(done, "fer.csv", "does not exist")


def test_wrong_image_size_gives_one_line_error(model_file: Path, tmp_path: Path) -> None:
    face = _face(tmp_path / "big.png", 20)
    done = flowkit_cli(
        "transfer", "--model", str(model_file), "--image", str(face), "--to", "happy",
        "--from", "neutral", "--out", str(tmp_path / "t.png"),
    )  # fmt: skip
    assert_one_line_error(done, "20x20", "16x16")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    done = flowkit_cli("--debug", "sample", "--model", str(tmp_path / "nope"))
    assert done.returncode != 0 and "Traceback" in done.stderr


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_then_sample_transfer_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    config = tmp_path / "c.toml"
    config.write_text("steps = 6\nwarmup_steps = 2\neval_every = 3\nsample_every = 3\n")
    done = flowkit_cli("train", "--config", str(config), "--out", str(run), *TINY_FLAGS)
    assert done.returncode == 0, done.stderr
    assert "test bits/dim" in done.stdout
    for name in ("samples.png", "transfer.png", "loss.png", "metrics.json", "config.toml"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 6 and saved["image_size"] == 16  # file and flags both applied

    out = tmp_path / "happy.png"
    assert cli.main(["sample", "--model", str(run), "--expression", "happy", "-n", "4",
                     "--out", str(out)]) == 0  # fmt: skip
    assert Image.open(out).size[0] > 16
    face = _face(tmp_path / "face.png", 16)
    edited = tmp_path / "edited.png"
    assert cli.main(["transfer", "--model", str(run), "--image", str(face), "--to", "surprise",
                     "--out", str(edited)]) == 0  # fmt: skip
    assert Image.open(edited).size == (16, 16)
    ref = tmp_path / "ref.png"
    assert cli.main(["transfer", "--model", str(run / "model.safetensors"), "--image", str(face),
                     "--reference", str(face), "--out", str(ref)]) == 0  # fmt: skip
    assert Image.open(ref).size == (16, 16)
    capsys.readouterr()
    assert cli.main(["eval", "--model", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["split"] == "test" and 0 < metrics["bits_per_dim"] < 8
    assert metrics["reconstruction_max_abs_error"] < 1e-3


def test_class_context_pair_training_then_transfer_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A model whose blocks see the class, trained with the pair term from a config file,
    trains to the end, edits from the command line and runs the transfer benchmark."""
    run = tmp_path / "run"
    config = tmp_path / "c.toml"
    config.write_text(
        "steps = 4\nwarmup_steps = 1\npair_weight = 1.0\npair_batch = 4\n"
        "[model_kwargs]\nclass_context = true\n"
    )
    done = flowkit_cli("train", "--config", str(config), "--out", str(run), *TINY_FLAGS)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "config.json").read_text())["pair_weight"] == 1.0
    face = _face(tmp_path / "face.png", 16)
    for target in (["--to", "surprise"], ["--reference", str(face)]):
        edited = tmp_path / "edited.png"
        argv = ["transfer", "--model", str(run), "--image", str(face), *target]
        assert cli.main([*argv, "--out", str(edited)]) == 0
        assert Image.open(edited).size == (16, 16)
    capsys.readouterr()
    argv = ["eval", "--model", str(run), "--transfer", "--max-transfers", "12", "--json"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["info"]["transfers"] <= 12
    assert {"pixel mean shift", "label_transfer condition"} <= set(report["summary"])
    for name in ("report.json", "report.md", "grid.png"):
        assert (run / "transfer" / name).is_file(), name


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "m", "--batch-size", "-3"],
        ["eval", "--model", "m", "--batch-size", "0"],
        ["eval", "--model", "m", "--batch-size", "abc"],
        ["sample", "--model", "m", "-n", "0"],
        ["sample", "--model", "m", "--temperature", "nan"],
        ["transfer", "--model", "m", "--image", "f.png", "--to", "happy", "--alpha", "nan"],
        ["transfer", "--model", "m", "--image", "f.png", "--to", "happy", "--alpha", "inf"],
        ["eval", "--model", "m", "--transfer", "--max-transfers", "0"],
        ["sample", "--model", "m", "--out", "grid"],
        ["sample", "--model", "m", "--out", "."],
        ["no-such-command"],
    ],
)
def test_bad_flag_values_are_one_line_with_status_2(
    argv: list[str], capsys: pytest.CaptureFixture
) -> None:
    """Values argparse rejects (by type: counts >= 1, finite numbers) end in one line on
    stderr naming the flag, exit status 2, before anything is loaded."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    named = argv[-2] if len(argv) > 1 else "COMMAND"  # the flag (or command) at fault
    assert named in lines[0], lines[0]
