"""Training loop, config, checkpoints, resume (incl. SIGKILL), non-finite handling, DDP."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import flowkit
from flowkit.errors import ConfigError
from flowkit.training import (
    TrainConfig,
    TrainingDiverged,
    latest_checkpoint,
    learning_rate,
    list_checkpoints,
    load_config,
    loop,
    save_config,
    train,
)
from flowkit.training import checkpoint as ckpt
from flowkit.training.config import tomllib  # tomllib, or tomli on Python 3.10

TINY_MODEL = {"levels": 2, "steps": 1, "hidden": 8}


def tiny_config(out: Path | None, **changes) -> TrainConfig:
    """A BPLF small enough to train a step in milliseconds, on 16x16 synthetic faces."""
    values = dict(
        model="bplf",
        model_kwargs=dict(TINY_MODEL),
        image_size=16,
        synthetic_size=160,
        steps=12,
        batch_size=16,
        lr=3e-3,
        warmup_steps=2,
        eval_every=6,
        eval_batches=2,
        sample_every=6,
        checkpoint_every=4,
        log_every=1,
        samples_per_class=2,
        quality_metrics=False,
        tensorboard=False,
        out=None if out is None else str(out),
    )
    values.update(changes)
    return TrainConfig(**values)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", FLOWKIT_NO_MALLOC_TUNING="1", PYTHONUNBUFFERED="1")
    return env


# ------------------------------------------------------------------------------ config
def test_config_toml_and_json_roundtrip(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", data=["a.npz", "b.csv"], lr=2.5e-4)
    for name in ("c.toml", "c.json"):
        save_config(config, tmp_path / name)
        assert load_config(tmp_path / name) == config
    parsed = tomllib.loads((tmp_path / "c.toml").read_text())
    assert parsed["model_kwargs"] == TINY_MODEL and parsed["lr"] == 2.5e-4


def test_config_accepts_train_table_and_rejects_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[train]\nsteps = 7\nmodel = "glow"\n[model_kwargs]\nhidden = 4\n')
    config = load_config(path)
    assert (config.steps, config.model, config.model_kwargs) == (7, "glow", {"hidden": 4})
    path.write_text("stepz = 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_config(path)
    with pytest.raises(ConfigError, match="n_bits"):
        TrainConfig(n_bits=9)
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="num_classes"):
        TrainConfig(model_kwargs={"num_classes": 3})
    with pytest.raises(ConfigError, match="memory_saving"):
        TrainConfig(memory_saving="yes")


def test_memory_saving_training_takes_the_same_steps(tmp_path: Path) -> None:
    """Recomputed activations give ordinary backprop's gradients, so three Adam steps from the
    same seed land on the same weights (to float32 round-off of the reconstruction)."""
    common = dict(steps=3, eval_every=0, sample_every=0, checkpoint_every=0)
    plain = train(tiny_config(None, **common), progress=False, log=lambda _m: None)
    saving = train(
        tiny_config(None, memory_saving=True, **common), progress=False, log=lambda _m: None
    )
    assert saving.model.memory_saving is True and plain.model.memory_saving is False
    assert [h["train_bpd"] for h in saving.history] == pytest.approx(
        [h["train_bpd"] for h in plain.history], rel=1e-5
    )
    moved = 0.0
    for (name, a), b in zip(
        plain.model.state_dict().items(), saving.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    # The comparison means something only if training moved the weights: rebuild the same
    # seeded initial model (its data-independent weights) and measure how far they went.
    loop.seed_everything(tiny_config(None).seed)
    start = loop.build_model(tiny_config(None)).state_dict()
    for name, value in plain.model.state_dict().items():
        if value.is_floating_point() and start[name].shape == value.shape:
            moved = max(moved, float((value - start[name]).abs().max()))
    assert moved > 1e-3


def test_memory_saving_needs_a_multiscale_model() -> None:
    with pytest.raises(ConfigError, match="'mine' has no memory-saving option"):
        loop._enable_memory_saving(torch.nn.Linear(2, 2), "mine")


def test_trainer_rejects_a_vector_model_by_name() -> None:
    config = TrainConfig(model="realnvp_vector", steps=1, quality_metrics=False)
    with pytest.raises(ConfigError, match="'realnvp_vector' is not an image model.*glow"):
        train(config, progress=False, log=lambda _m: None)


def test_learning_rate_warmup_then_cosine() -> None:
    config = TrainConfig(lr=1e-3, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 60) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half-way
    assert learning_rate(config, 110) == pytest.approx(1e-4)
    constant = config.replace(lr_schedule="constant")
    assert learning_rate(constant, 100) == pytest.approx(1e-3)


# -------------------------------------------------------------------------- checkpoints
def test_rng_state_roundtrip_through_weights_only_file(tmp_path: Path) -> None:
    import random

    state = ckpt.capture_rng_state()
    torch.save({"rng": state}, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"]
    ckpt.restore_rng_state(loaded)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == again[0] and expected[1] == again[1]
    assert torch.equal(expected[2], again[2])


def test_checkpoints_are_pruned_and_a_corrupt_newest_falls_back(tmp_path: Path) -> None:
    from flowkit.training import build_model

    model = build_model(tiny_config(None))
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003", "step-000002"]
    assert (tmp_path / "latest").read_text().strip() == "step-000003"
    newest = tmp_path / "step-000003" / ckpt.MODEL_FILE
    newest.write_bytes(newest.read_bytes()[:100])  # a torn write of the newest file
    with pytest.warns(UserWarning, match="step-000003"):
        found = latest_checkpoint(tmp_path)
    assert found is not None and found.step == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# ------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_train_writes_run_folder_and_loss_decreases(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny_config(run, steps=40, eval_every=20, sample_every=20, tensorboard=True)
    result = train(config, progress=False, log=lambda _m: None)
    losses = [h["train_bpd"] for h in result.history]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.1
    for name in (
        "config.toml",
        "config.json",
        "log.csv",
        "loss.png",
        "samples.png",
        "samples_step20.png",
        "metrics.json",
        "model.safetensors",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    # "auto" precision is written as what the run used (see tests/test_auto_precision.py).
    assert metrics["precision"] in ("fp32", "bf16")
    assert load_config(run / "config.toml") == dataclasses.replace(
        config, precision=metrics["precision"]
    )
    assert metrics["steps"] == 40 and metrics["skipped_steps"] == 0
    assert math.isfinite(metrics["test_bpd"]) and 0 < metrics["test_bpd"] < config.n_bits
    assert metrics["reconstruction_max_abs_error"] < 1e-3
    found = latest_checkpoint(run / "checkpoints")
    assert found is not None and found.step == 40
    import flowkit

    reloaded = flowkit.load(run / "model.safetensors")
    for a, b in zip(
        reloaded.state_dict().values(), result.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    with open(run / "log.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == sorted(steps) and steps[-1] == 40


def test_train_without_out_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = train(tiny_config(None, steps=3, eval_every=0), progress=False)
    assert result.run_dir is None and result.step == 3
    assert math.isfinite(result.metrics["test_bpd"])
    assert list(tmp_path.iterdir()) == []


def test_existing_run_folder_needs_resume(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", steps=2, sample_every=0, eval_every=0)
    train(config, progress=False, log=lambda _m: None)
    with pytest.raises(ConfigError, match="--resume"):
        train(config, progress=False, log=lambda _m: None)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, precision: str) -> None:
    # Constant lr: a cosine schedule depends on the total step count, which differs here. bf16:
    # what "auto" chooses for models of real size on bf16 hardware (channels-last conditioner
    # weights, bf16 autocast in the steps).
    common = dict(
        lr_schedule="constant",
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        precision=precision,
    )
    straight = train(tiny_config(tmp_path / "a", steps=8, **common), progress=False, log=print)
    first = tiny_config(tmp_path / "b", steps=4, **common)
    train(first, progress=False, log=print)
    resumed = train(first.replace(steps=8, resume=True), progress=False, log=print)
    assert resumed.step == 8
    a = [h["train_bpd"] for h in straight.history]
    b = [h["train_bpd"] for h in resumed.history]
    # The resumed history is rebuilt from log.csv (5 decimals) and continues exactly.
    assert b[:4] == pytest.approx(a[:4], abs=1e-5) and a[4:] == b[4:]
    for (name, x), y in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["precision"] == precision
    # The saved model is the float32 model, whatever the steps ran in: it loads and inverts.
    loaded = flowkit.load(tmp_path / "b" / "model.safetensors").eval()
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    x = torch.rand(4, 1, 16, 16) - 0.5
    with torch.no_grad():
        z, _ = loaded(x, torch.arange(4))
        assert (loaded.inverse(z, torch.arange(4))[0] - x).abs().max() < 1e-4


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "flowkit",
        "train",
        "--out",
        str(run),
        "--steps",
        "400",
        "--image-size",
        "16",
        "--levels",
        "2",
        "--steps-per-level",
        "1",
        "--hidden",
        "8",
        "--batch-size",
        "8",
        "--synthetic-size",
        "80",
        "--checkpoint-every",
        "3",
        "--eval-every",
        "0",
        "--sample-every",
        "0",
        "--no-tensorboard",
        "--no-quality-metrics",
        "--quiet",
        "--set",
        "log_every=1",
    ]
    proc = subprocess.Popen(
        cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            found = list_checkpoints(run / "checkpoints")
            if found and int(found[0].name.split("-")[1]) >= 6:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = latest_checkpoint(run / "checkpoints")
    assert saved is not None and saved.step >= 6
    assert bool(next(b for n, b in saved.model.named_buffers() if n.endswith("initialized")))
    resume = cmd[:]
    resume[resume.index("400")] = str(saved.step + 6)
    done = subprocess.run(
        [*resume, "--resume"], env=_child_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"at step {saved.step}" in done.stdout
    final = latest_checkpoint(run / "checkpoints")
    assert final is not None and final.step == saved.step + 6
    assert int(final.state["step"]) == saved.step + 6
    with open(run / "log.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == list(range(1, saved.step + 7))  # no gaps, no duplicates


# --------------------------------------------------------------------- non-finite losses
def _nan_at(calls: set[int] | None, monkeypatch) -> dict[str, int]:
    """Make the model's bits_per_dim NaN on the given call numbers (None: from call 3 on)."""
    counter = {"n": 0}
    real_build = loop.build_model

    def build(config):
        model = real_build(config)
        original = model.bits_per_dim

        def patched(x, y=None, n_bits=8):
            counter["n"] += 1
            out = original(x, y, n_bits=n_bits)
            bad = counter["n"] >= 3 if calls is None else counter["n"] in calls
            return out * float("nan") if bad else out

        model.bits_per_dim = patched
        return model

    monkeypatch.setattr(loop, "build_model", build)
    return counter


def test_non_finite_steps_are_skipped_and_counted(tmp_path: Path, monkeypatch) -> None:
    _nan_at({3, 4}, monkeypatch)
    config = tiny_config(None, steps=8, eval_every=0)
    result = train(config, progress=False)
    assert result.skipped_steps == 2
    losses = [h["train_bpd"] for h in result.history]
    assert [i for i, v in enumerate(losses) if not math.isfinite(v)] == [2, 3]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_too_many_non_finite_steps_stop_with_last_good_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    _nan_at(None, monkeypatch)
    config = tiny_config(tmp_path / "run", steps=20, checkpoint_every=2, eval_every=0)
    with pytest.raises(TrainingDiverged) as info:
        train(config, progress=False, log=lambda _m: None)
    message = str(info.value)
    assert "step 7" in message and "5 non-finite" in message
    assert str(tmp_path / "run" / "checkpoints" / "step-000002") in message
    good = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert good is not None and good.step == 2


# ---------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The default BPLF, and the transformer flows of the zoo (TarFlow with memory-saving backprop,
# whose recomputation must see the same parameters on every rank).
DDP_MODELS = {
    "bplf": {},
    # What "auto" chooses on bf16 hardware for models of real size: channels-last bf16 steps.
    "bplf_bf16": dict(precision="bf16"),
    "tarflow": dict(
        model="tarflow",
        model_kwargs=dict(levels=2, steps=1, hidden=8, heads=2, patch_size=4),
        memory_saving=True,
    ),
    "jet": dict(model="jet", model_kwargs=dict(levels=2, steps=1, hidden=8, heads=2, patch_size=4)),
}


def _ddp_worker(rank: int, world: int, port: int, out: str, model: str = "bplf") -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    config = tiny_config(
        Path(out) / "run", steps=4, eval_every=2, sample_every=0, device="cpu", **DDP_MODELS[model]
    )
    result = train(config, progress=False, log=lambda _m: None)
    torch.save(
        {
            "state": result.model.state_dict(),
            "losses": [h["train_bpd"] for h in result.history],
        },
        Path(out) / f"rank{rank}.pt",
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", list(DDP_MODELS))
def test_ddp_two_cpu_processes_hold_identical_weights(tmp_path: Path, model: str) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), model), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["losses"] == r1["losses"] and all(math.isfinite(v) for v in r0["losses"])
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), name
    assert (tmp_path / "run" / "metrics.json").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4
    # The ranks trained (one model, one optimizer): the weights left their initial values.
    assert r0["losses"][-1] < r0["losses"][0]


def test_resume_over_unreadable_checkpoints_changes_nothing(tmp_path: Path) -> None:
    """When no checkpoint of a run can be read, --resume stops and names them; it does not
    start at step 0 over the folder (which would prune and overwrite the old ones)."""
    import warnings

    from flowkit.errors import CheckpointError

    config = tiny_config(tmp_path / "run", steps=2, sample_every=0, eval_every=0)
    train(config, progress=False, log=lambda _m: None)
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert checkpoints
    for folder in checkpoints:
        for file in folder.iterdir():
            file.write_bytes(b"damaged")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each unreadable checkpoint is also warned about
        with pytest.raises(CheckpointError, match="nothing was changed") as caught:
            train(config.replace(resume=True, steps=4), progress=False, log=lambda _m: None)
    assert checkpoints[-1].name in str(caught.value)
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "setting",
    [
        {"hflip": "no"},
        {"tensorboard": "off"},
        {"steps": "ten"},
        {"steps": True},
        {"seed": 1.5},
        {"lr": "fast"},
        {"out": 3},
        {"data": 3},
        {"data": []},
        {"model_kwargs": "x"},
        {"seed": -1},
    ],
)
def test_config_values_are_checked_by_type(setting: dict) -> None:
    """One typed rule: a value of the wrong type is refused in one sentence naming the key
    (before, "no" was taken as true and "ten" ended in a traceback)."""
    (key,) = setting
    with pytest.raises(ConfigError, match=f"config: {key} must be"):
        TrainConfig(**setting)


def test_config_types_accept_what_they_should() -> None:
    config = TrainConfig(lr=1, out=None, data=["a.npz", Path("b.npz")], hflip=True)
    assert config.lr == 1 and config.hflip is True


def test_run_folder_lock_refuses_a_second_training_and_ignores_a_dead_one(tmp_path: Path) -> None:
    """One training per --out: a lock held by a live process refuses the second training,
    naming it; a lock left by a dead process (SIGKILL) is taken over; a finished or failed
    training leaves no lock."""
    from flowkit.training.lock import LOCK_FILE

    run = tmp_path / "run"
    config = tiny_config(run, steps=2, sample_every=0, eval_every=0)
    train(config, progress=False, log=lambda _m: None)
    assert not (run / LOCK_FILE).exists()
    # A live holder on this machine: the parent process (pytest's launcher, or init).
    holder = os.getppid()
    (run / LOCK_FILE).write_text(json.dumps({"pid": holder, "host": socket.gethostname()}))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=f"process {holder}"):
        train(config.replace(resume=True, steps=3), progress=False, log=lambda _m: None)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # A dead holder: a process that has exited.
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(done.stdout)
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    resumed = train(config.replace(resume=True, steps=3), progress=False, log=lambda _m: None)
    assert resumed.step == 3 and not (run / LOCK_FILE).exists()


def test_training_steps_read_nothing_back_from_the_device(monkeypatch) -> None:
    """No `.item()`, `bool()`, `float()` or `.tolist()` of a tensor inside a step (on a GPU each
    waits for the step to finish): the loss and gradient norm stay tensors, a fused Adam skips
    a non-finite update on the device, the data-initialised blocks remember that they are, and
    the loop reads the numbers of all steps since the last read-back in one transfer."""
    from flowkit.training import loop

    reads: list[str] = []
    inside = {"step": False}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if inside["step"]:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    real = loop.Stepper

    class Watched(real):  # type: ignore[misc, valid-type]
        def __call__(self, step: int):  # type: ignore[no-untyped-def]
            inside["step"] = True
            try:
                return super().__call__(step)
            finally:
                inside["step"] = False

    monkeypatch.setattr(loop, "Stepper", Watched)
    read_back: list[int] = []
    real_read = loop.read_steps
    monkeypatch.setattr(loop, "read_steps", lambda p: read_back.append(len(p)) or real_read(p))
    config = tiny_config(
        None, steps=12, log_every=5, eval_every=0, sample_every=0, checkpoint_every=0
    )
    result = train(config, progress=False, log=lambda _m: None)
    assert reads == []
    # One transfer per log row (steps 5 and 10) and at the end, for the steps since the last.
    assert read_back == [5, 5, 2]
    assert [h["step"] for h in result.history] == list(range(1, 13))
    assert all(math.isfinite(h["train_bpd"]) for h in result.history)


def test_a_non_finite_step_leaves_a_fused_adam_and_the_model_untouched() -> None:
    """The device-side skip: parameters, Adam's moments and its step count are those before
    the step, bit for bit, as when the host skipped the update."""
    from flowkit.training.step import make_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = make_optimizer(model, 0.1)
    assert all(group["fused"] for group in optimizer.param_groups)
    x = torch.randn(4, 3)
    model(x).square().mean().backward()
    optimizer.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for s in optimizer.state.values() for k, v in s.items() if k != "step"}
    steps = [float(s["step"]) for s in optimizer.state.values()]

    from flowkit.training.step import Stepper

    stepper = Stepper.__new__(Stepper)
    stepper.optimizer = optimizer
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    stepper._update_unless_nonfinite(torch.tensor(False))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    after = {k: v for s in optimizer.state.values() for k, v in s.items() if k != "step"}
    assert all(torch.equal(after[k], moments[k]) for k in moments)
    assert [float(s["step"]) for s in optimizer.state.values()] == steps
    assert not hasattr(optimizer, "found_inf")
