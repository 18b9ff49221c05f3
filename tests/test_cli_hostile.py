"""Hostile command lines and damaged runs (issue #17): every refusal is exit status 2, one line
on stderr starting ``flowkit <command>:``, no traceback, and leaves the disk as it was.

Numeric flags of ``train``, ``sample`` and ``eval`` get values drawn by hypothesis (negative,
zero, huge, NaN, infinities, words, empty); a value may be accepted, but then it must run (or,
for ``train``, reach its first step) without a traceback. The rest are one check per item of
the issue: resource bounds refused before allocation, damaged ``config.json`` / ``log.csv``
named, resume traps, one-line warnings, a full disk, a ``latest`` pointer out of the run, the
names of untrained expressions, folders given as files, and a stop signal under DDP.
"""

from __future__ import annotations

import errno
import faulthandler
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flowkit import limits
from flowkit.cli import main, run_command
from flowkit.training import checkpoint as ckpt
from flowkit.training import loop, setup

# A run small enough to train in about a second: 56 training faces of 16x16, a one-step flow.
TRAIN_SET = 56
TINY = [
    "--synthetic-size", "60", "--image-size", "16", "--batch-size", "16",
    "--levels", "1", "--steps-per-level", "1", "--hidden", "4",
    "--eval-every", "0", "--sample-every", "0", "--quiet",
    "--no-quality-metrics", "--no-tensorboard",
]  # fmt: skip


class ReachedTraining(BaseException):
    """Raised where the first training step would be built: the command line was accepted.
    A BaseException, so no error handler of the CLI turns it into an exit status."""


def _stop_before_training(*_args: object, **_kwargs: object) -> None:
    raise ReachedTraining


@contextmanager
def no_training() -> Iterator[None]:
    """Let ``flowkit train`` do all its checks (data, model, initialisation) but stop before
    the first step, so an accepted huge value (``--steps 10**20``) costs nothing."""
    threads = torch.get_num_threads()  # --num-workers sets them for the whole process
    try:
        with mock.patch.object(loop, "Stepper", _stop_before_training):
            yield
    finally:
        torch.set_num_threads(threads)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (folders: ``dir``)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = "dir" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return found


def cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int | str, str, str]:
    """(exit status, stdout, stderr) of ``flowkit ARGV`` run in this process; ``"trained"``
    when ``train`` reached its first step under :func:`no_training`."""
    capsys.readouterr()  # forget the previous example's output
    try:
        code: int | str = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code if isinstance(stop.code, int) else 1
    except ReachedTraining:
        code = "trained"
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int | str, err: str, command: str, *needles: str) -> str:
    """The refusal contract; returns the one line."""
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"flowkit {command}:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_clean(err: str, command: str) -> None:
    """What an accepted command may print on stderr: one-line warnings, no traceback."""
    assert "Traceback" not in err, err
    for line in err.splitlines():
        assert line.startswith(f"flowkit {command}: warning:"), line


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A trained run (2 steps, a log row per step, a checkpoint at step 2), made once."""
    run = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLOWKIT_NO_MALLOC_TUNING", "1")
        code = main(["train", *TINY, "--steps", "2", "--set", "log_every=1", "--out", str(run)])
    assert code == 0
    yield run


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the trained run to damage."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


# ------------------------------------------------------------------ hostile numeric flags
TRAIN_FLAGS = [
    "--batch-size", "--steps", "--image-size", "--lr", "--seed", "--n-bits", "--test-fraction",
    "--warmup-steps", "--min-lr-ratio", "--grad-clip", "--pair-weight", "--pair-batch",
    "--eval-every", "--sample-every", "--checkpoint-every", "--log-every", "--eval-batches",
    "--keep-checkpoints", "--temperature", "--samples-per-class", "--max-bad-steps",
    "--num-workers", "--levels", "--hidden", "--steps-per-level",
]  # fmt: skip
SAMPLE_FLAGS = ["-n", "--temperature", "--seed", "--n-bits"]
EVAL_FLAGS = ["--batch-size", "--seed", "--n-bits", "--max-transfers"]

HOSTILE = st.one_of(
    st.integers(max_value=0).map(str),  # negative and zero
    st.integers(min_value=10**6, max_value=10**40).map(str),  # huge
    st.sampled_from(
        [
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e309",
            "-1e309",
            "",
            " ",
            "abc",
            "0x10",
            "1_000_000_000",
            "1.5",
            "-0.0",
            "1e300",
            "½",
            "--",
            "٣",
        ]
    ),  # fmt: skip
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


def _number(text: str) -> float | None:
    """``text`` as Python reads a number, else None."""
    try:
        return float(text)
    except ValueError:
        return None


def _whole(text: str) -> int:
    """``text`` as Python reads a whole number, else 0."""
    try:
        return int(text)
    except ValueError:
        return 0


def _check_hostile(code: int | str, err: str, command: str, value: str) -> None:
    """Refused by the contract or accepted cleanly; a value that is no number, or is
    negative, is always refused (every numeric flag of these commands is >= 0)."""
    event(f"{command}: {'accepted' if code in (0, 'trained') else 'refused'}")
    number = _number(value)
    if number is None or (math.isfinite(number) and number < 0):
        assert_refused(code, err, command)
    elif code == 2:
        assert_refused(code, err, command)
    else:
        assert code in (0, "trained"), (code, err)
        assert_clean(err, command)


HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HYPOTHESIS
@given(flag=st.sampled_from(TRAIN_FLAGS), value=HOSTILE)
def test_train_numeric_flags_survive_hostile_values(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused or accepted, nothing is left on disk: a refused run creates no --out (nor its
    parents), an accepted one is stopped before its first step, which writes nothing yet."""
    root = tmp_path / f"h{time.monotonic_ns()}"
    root.mkdir()
    before = snapshot(tmp_path)
    with no_training():
        code, _, err = cli(capsys, ["train", *TINY, flag, value, "--out", str(root / "a/run")])
    _check_hostile(code, err, "train", value)
    assert snapshot(tmp_path) == before


@HYPOTHESIS
@given(flag=st.sampled_from(SAMPLE_FLAGS), value=HOSTILE)
def test_sample_numeric_flags_survive_hostile_values(
    flag: str, value: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grid.png"
    out.unlink(missing_ok=True)
    before = snapshot(run_dir)
    code, _, err = cli(capsys, ["sample", "--model", str(run_dir), flag, value, "--out", str(out)])
    _check_hostile(code, err, "sample", value)
    assert out.exists() == (code == 0)
    assert snapshot(run_dir) == before
    if flag == "-n" and _whole(value) > limits.MAX_SAMPLES:
        assert_refused(code, err, "sample", str(limits.MAX_SAMPLES))  # it says the limit


@HYPOTHESIS
@given(flag=st.sampled_from(EVAL_FLAGS), value=HOSTILE)
def test_eval_numeric_flags_survive_hostile_values(
    flag: str, value: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(run_dir)
    code, out, err = cli(capsys, ["eval", "--model", str(run_dir), flag, value])
    _check_hostile(code, err, "eval", value)
    if code == 0:
        bpd = float(out.split("bits_per_dim: ")[1].split()[0])
        assert math.isfinite(bpd) and bpd != 0  # not the "0.0000" of an empty evaluation
    assert snapshot(run_dir) == before


# ------------------------------------------------------------------------ resource bounds
def test_batch_larger_than_the_training_set_is_refused_before_allocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--batch-size 100000000 on 56 faces was killed by the kernel at 23 GB: refused, naming
    the training-set size, before any batch is built, and no run folder is left."""
    built = mock.Mock(side_effect=AssertionError("a batch was built"))
    with mock.patch.object(loop, "Batches", built), no_training():
        argv = ["train", *TINY, "--batch-size", "100000000", "--out", str(tmp_path / "run")]
        code, _, err = cli(capsys, argv)
    assert_refused(code, err, "train", "batch_size 100000000", f"({TRAIN_SET} images)")
    assert not built.called and list(tmp_path.iterdir()) == []
    with no_training():  # the training set itself is a batch
        code, _, err = cli(capsys, ["train", *TINY, "--batch-size", str(TRAIN_SET),
                                    "--out", str(tmp_path / "ok")])  # fmt: skip
    assert code == "trained", err


def test_huge_image_size_is_refused_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    read = mock.Mock(side_effect=AssertionError("data was read"))
    with mock.patch.object(setup, "train_test_sets", read):
        argv = ["train", *TINY, "--image-size", "100000", "--out", str(tmp_path / "run")]
        code, _, err = cli(capsys, argv)
    assert_refused(code, err, "train", "image_size", str(limits.MAX_IMAGE_SIDE))
    assert not read.called and list(tmp_path.iterdir()) == []


def test_sample_request_over_the_limit_is_refused_before_the_model_is_read(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowkit.cli import options

    loaded = mock.Mock(side_effect=AssertionError("the model was loaded"))
    out = str(tmp_path / "s.png")
    with mock.patch.object(options, "load_model", loaded):
        code, _, err = cli(capsys, ["sample", "--model", str(run_dir), "-n", "1000000000",
                                    "--out", out])  # fmt: skip
        assert_refused(code, err, "sample", "-n", str(limits.MAX_SAMPLES))
        # 2000 per row is fine for one expression, not for the run's 8 rows.
        per_row = limits.MAX_SAMPLES // 8 + 1
        code, _, err = cli(capsys, ["sample", "--model", str(run_dir), "-n", str(per_row),
                                    "--out", out])  # fmt: skip
        assert_refused(code, err, "sample", f"{per_row} x 8", str(limits.MAX_SAMPLES))
    assert not loaded.called and not (tmp_path / "s.png").exists()


def test_a_config_sample_grid_over_the_limit_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The final sample grid draws samples_per_class per expression: refused at the start,
    not after the whole training."""
    with no_training():
        code, _, err = cli(capsys, ["train", *TINY, "--samples-per-class", "100000",
                                    "--out", str(tmp_path / "run")])  # fmt: skip
    assert_refused(code, err, "train", "samples_per_class", str(limits.MAX_SAMPLES))


# ------------------------------------------------------------------ damaged runs, resume
def test_corrupt_config_json_is_named_and_nothing_changes(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for damage, what in (("garbage", "not valid JSON"), ("[1, 2]", "holds a list"),
                         ("{}", "names no model"),
                         ('{"model": "bplf", "lr": "fast"}', "lr must be")):  # fmt: skip
        (run_copy / "config.json").write_text(damage)
        before = snapshot(run_copy)
        code, _, err = cli(
            capsys, ["train", "--resume", "--quiet", "--out", str(run_copy), "--steps", "3"]
        )
        assert_refused(code, err, "train", str(run_copy / "config.json"), what)
        assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("garbage,line", "step 'garbage'"),
        ("1,abc,,1e-05,1.0,0,0.5", "train_bpd 'abc'"),
        ("2,3.3", "fewer values"),
        ("1,3.3,,1e-05,1.0,0,0.5,7,8", "more values"),
    ],
)
def test_garbage_in_log_csv_is_named_and_nothing_changes(
    line: str, what: str, run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = run_copy / "log.csv"
    rows = log.read_text().splitlines()
    assert len(rows) == 3  # the header and steps 1, 2
    log.write_text("\n".join([*rows[:2], line, *rows[2:]]) + "\n")
    before = snapshot(run_copy)
    code, _, err = cli(
        capsys, ["train", "--resume", "--quiet", "--out", str(run_copy), "--steps", "3"]
    )
    assert_refused(code, err, "train", f"{log} line 3", what, "nothing was changed")
    assert snapshot(run_copy) == before


def test_resume_over_unreadable_checkpoints_is_one_line(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each unreadable checkpoint used to be warned about before the error: when none loads,
    the error alone names them (and why the newest failed)."""
    state = run_copy / "checkpoints" / "step-000002" / ckpt.STATE_FILE
    state.write_bytes(b"damaged")
    before = snapshot(run_copy)
    argv = ["train", "--resume", "--quiet", "--out", str(run_copy), "--steps", "3"]
    code, _, err = cli(capsys, argv)
    assert_refused(code, err, "train", "step-000002", "training_state.pt", "nothing was changed")
    assert snapshot(run_copy) == before


def test_resume_with_steps_below_the_checkpoint_is_refused(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(run_copy)
    code, _, err = cli(
        capsys, ["train", "--resume", "--quiet", "--out", str(run_copy), "--steps", "1"]
    )
    assert_refused(code, err, "train", "at step 2", "--steps 1", "nothing was changed")
    assert snapshot(run_copy) == before


def test_resume_with_another_world_size_warns_in_one_line(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_file = run_copy / "checkpoints" / "step-000002" / ckpt.STATE_FILE
    state = torch.load(state_file, weights_only=True)
    assert state["world_size"] == 1
    state["world_size"] = 4
    torch.save(state, state_file)
    code, out, err = cli(
        capsys, ["train", "--resume", "--quiet", "--out", str(run_copy), "--steps", "3"]
    )
    assert code == 0, err
    assert "at step 2" in out
    assert_clean(err, "train")
    assert len(err.splitlines()) == 1 and "trained by 4 process(es) with 1" in err


def test_warnings_are_one_line_and_only_while_the_cli_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from flowkit.cli import registry

    def noisy(_args: argparse.Namespace) -> int:
        warnings.warn("first\nsecond", UserWarning, stacklevel=1)
        return 0

    original = warnings.showwarning
    command = registry.Command(name="noisy", help="", add_arguments=lambda _p: None, run=noisy)
    with mock.patch.object(registry, "get", lambda _name: command):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            assert run_command(argparse.Namespace(command="noisy")) == 0
    assert capsys.readouterr().err == "flowkit noisy: warning: first second\n"
    assert warnings.showwarning is original  # the library's warnings are left alone


def test_a_full_disk_names_the_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # write() names no file

    run = tmp_path / "run"
    with mock.patch.object(ckpt.torch, "save", full):
        code, _, err = cli(capsys, ["train", *TINY, "--steps", "1", "--out", str(run)])
    assert_refused(code, err, "train", f"no space left on device in {run}", "--out")
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []  # the half-written checkpoint does not hold on to the space


def test_sample_refuses_a_latest_pointer_outside_the_run(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(run_copy / "checkpoints" / "step-000002", elsewhere / "step-000002")
    (run_copy / "model.safetensors").unlink()  # so the run folder is resolved by its pointer
    pointer = run_copy / "checkpoints" / ckpt.LATEST_FILE
    out = tmp_path / "s.png"
    for target in ("../../elsewhere/step-000002", str(elsewhere / "step-000002")):
        pointer.write_text(target + "\n")
        code, _, err = cli(capsys, ["sample", "--model", str(run_copy), "--out", str(out)])
        assert_refused(code, err, "sample", str(pointer), "outside")
    assert not out.exists()
    pointer.write_text("step-000002\n")  # its own checkpoint is followed as before
    assert ckpt.resolve_model_path(run_copy).parent.name == "step-000002"


def test_transfer_from_an_untrained_expression_names_it(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    faces = tmp_path / "two.npz"
    np.savez(faces, images=rng.integers(0, 256, (40, 16, 16), dtype=np.uint8),
             labels=np.array(["happy", "sad"] * 20))  # fmt: skip
    from PIL import Image

    face = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(face)
    base = ["transfer", "--model", str(run_dir), "--image", str(face), "--data", str(faces),
            "--out", str(tmp_path / "t.png")]  # fmt: skip
    code, _, err = cli(capsys, [*base, "--from", "contempt", "--to", "happy"])
    line = assert_refused(code, err, "transfer", "contempt", "happy, sad", "--from")
    assert "[" not in line  # names, not label numbers
    code, _, err = cli(capsys, [*base, "--from", "sad", "--to", "fear"])
    assert_refused(code, err, "transfer", "target expression fear", "--to")


def test_a_folder_given_as_a_file_is_called_a_folder(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "t.png")
    for argv, command in (
        (["transfer", "--model", str(run_dir), "--image", str(tmp_path), "--to", "happy",
          "--out", out], "transfer"),
        (["train", "--config", str(tmp_path), "--out", str(tmp_path / "run")], "train"),
    ):  # fmt: skip
        code, _, err = cli(capsys, argv)
        assert_refused(code, err, command, f"{tmp_path} is a folder, not a file")
    assert list(tmp_path.iterdir()) == []


def test_train_help_shows_each_default_once_and_never_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, ["train", "--help"])
    assert code == 0
    text = " ".join(out.split())
    assert "(default: None)" not in text
    assert text.count("(default: 64)") == 2  # --batch-size and --hidden, once each
    for chunk in text.split(" --")[1:]:
        assert chunk.count("(default:") <= 1, chunk


# ------------------------------------------------------------------ a stop signal under DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _signalled_rank(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a 2-process gloo run in which only rank 1 receives SIGTERM, during its
    second step; writes how it stopped."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    # Should this rank hang, its stacks say where (the test quotes them).
    stacks = open(Path(out) / f"rank{rank}.stacks", "w")  # noqa: SIM115 (open until exit)
    faulthandler.dump_traceback_later(150, file=stacks)
    from flowkit.training import TrainConfig, TrainingInterrupted, train

    real = loop.Stepper

    class SignalledStepper(real):  # type: ignore[misc, valid-type]
        def __call__(self, step: int):  # type: ignore[no-untyped-def]
            outcome = super().__call__(step)
            if rank == 1 and step == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # as torchrun would, to this rank only
            return outcome

    loop.Stepper = SignalledStepper  # type: ignore[misc]
    config = TrainConfig(
        model_kwargs={"levels": 1, "steps": 1, "hidden": 4},
        image_size=16,
        synthetic_size=60,
        batch_size=8,
        steps=50,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        log_every=5,
        quality_metrics=False,
        tensorboard=False,
        device="cpu",
        out=str(Path(out) / "run"),
    )
    try:
        train(config, progress=False, log=lambda _m: None)
        stopped = "not stopped"
    except TrainingInterrupted as err:
        stopped = str(err)
    (Path(out) / f"rank{rank}.txt").write_text(stopped)


def test_a_sigterm_to_one_rank_stops_every_rank_after_the_same_step(tmp_path: Path) -> None:
    """Under torchrun a SIGTERM reaches the ranks at different moments; the stop is decided
    together (an all-reduce of the flag), so both ranks stop after the same step and the
    checkpoint is of that step. Before, rank 1 stopped alone and rank 0 waited in the next
    step's all-reduce for a peer that was gone (or gloo crashed). The signal arrives in step
    2; the trainer looks for it where it reads the steps' numbers back, at the next log row
    (log_every=5), so both stop after step 5."""
    import torch.multiprocessing as mp

    context = mp.spawn(_signalled_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 300  # generous: a loaded CI machine is slow to spawn
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                stacks = [(tmp_path / f"rank{r}.stacks").read_text() for r in (0, 1)]
                pytest.fail("the ranks did not finish; their stacks:\n" + "\n".join(stacks))
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    said = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert all("stopped at step 5" in s for s in said), said
    assert said[1].startswith("SIGTERM") and "another process" in said[0]
    saved = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert saved is not None and saved.step == 5


def _rank_in_a_locked_folder(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a 2-process gloo run whose folder another live training holds."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    from flowkit.errors import FlowkitError
    from flowkit.training import TrainConfig, train

    config = TrainConfig(
        model_kwargs={"levels": 1, "steps": 1, "hidden": 4},
        image_size=16,
        synthetic_size=60,
        batch_size=8,
        steps=2,
        quality_metrics=False,
        tensorboard=False,
        device="cpu",
        out=str(Path(out) / "run"),
    )
    try:
        train(config, progress=False, log=lambda _m: None)
        outcome = "trained"
    except FlowkitError as err:
        outcome = str(err)
    (Path(out) / f"rank{rank}.txt").write_text(outcome)


def test_a_refusal_on_rank_zero_stops_every_rank(tmp_path: Path) -> None:
    """Only rank 0 checks the run folder (lock, checkpoints, log). Its refusal is shared, so
    rank 1 stops with it instead of waiting for a peer that has gone."""
    import torch.multiprocessing as mp

    run = tmp_path / "run"
    run.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname()}  # this test: alive
    (run / ".lock").write_text(json.dumps(holder))
    before = snapshot(run)
    context = mp.spawn(
        _rank_in_a_locked_folder, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False
    )
    deadline = time.monotonic() + 300  # generous: a loaded CI machine is slow to spawn
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, "rank 1 waits for rank 0, which has gone"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    said = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert str(os.getpid()) in said[0], said  # the lock's holder is named
    assert said[1].startswith("rank 0 could not start") and str(os.getpid()) in said[1], said
    assert snapshot(run) == before  # the holder's folder is untouched
