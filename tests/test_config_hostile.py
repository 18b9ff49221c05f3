"""Hostile training settings: one typed schema decides every value, from Python, TOML or --set.

Hypothesis draws a TrainConfig key (or a model argument, or an unknown key) and a TOML value of
any type and size. Whatever it draws, the outcome is one of two, and the same whichever way the
value arrives:

- accepted: every field then holds a value of its annotated type (checked here with this file's
  own table, not with the validator under test), and the trainer is handed that config;
- refused: a :class:`ConfigError` of one line naming the key; through the CLI exit status 2 and
  one stderr line, no traceback, and no run folder created.

The trainer itself is replaced by a recorder, so no example trains anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import math
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowkit import zoo
from flowkit.cli import main
from flowkit.cli.commands import train as train_command
from flowkit.errors import ConfigError
from flowkit.training import TrainConfig
from flowkit.training.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Keys whose value is a path or a folder (a value "works" whatever its text), or which the CLI
# sets itself: drawn like the others, but only their type is checked.
SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
}

LISTED_VALUES = [
    "ten",
    '"fast"',
    "no",
    "off",
    "yes",
    '""',
    "-1",
    "0",
    "1.5",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "99999999999999999999",
    "9223372036854775807",
    "[]",
    "[1, 2]",
    '["a", 3]',
    "{}",
    "{ a = 1 }",
    "true",
    "false",
    "1979-05-27",
    "'synthetic'",
    "=",
    "[",
]
TOML_VALUES = st.one_of(
    st.sampled_from(LISTED_VALUES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).replace("inf", "inf")),
    st.text(alphabet="abc01 .-_\"'[]{}=", max_size=8),
)


def _annotation_allows(name: str, value: typing.Any) -> bool:
    """This file's own reading of TrainConfig's annotations (independent of the validator)."""
    annotation = str(FIELDS[name].type).replace(" ", "")
    optional = annotation.endswith("|None")
    expected = SCALAR_TYPES.get(annotation.removesuffix("|None"))
    if expected is None:
        return True  # data sources and tables: checked for their own rules below
    if optional and value is None:
        return True
    if isinstance(value, bool):
        return bool in expected
    return isinstance(value, expected)


def _assert_accepted_config_is_well_typed(config: TrainConfig) -> None:
    for name in FIELDS:
        value = getattr(config, name)
        assert _annotation_allows(name, value), f"{name}={value!r} accepted against its type"
        if isinstance(value, float):
            assert math.isfinite(value), f"{name}={value!r}: a non-finite number was accepted"
    assert isinstance(config.model_kwargs, dict)
    parameters = inspect.signature(zoo.get("model", config.model).factory).parameters
    for name, value in config.model_kwargs.items():
        assert name in parameters, f"model argument {name!r} accepted but {config.model} has none"
        if name in ("hidden", "levels", "steps"):
            # steps=0 is a flow of squeezes and splits only: allowed on purpose.
            least = 0 if name == "steps" else 1
            assert isinstance(value, int) and not isinstance(value, bool) and value >= least, (
                f"model argument {name}={value!r} accepted"
            )
    assert config.steps >= 1 and config.batch_size >= 1 and config.image_size >= 1
    assert config.seed >= 0


def _parse_toml_value(text: str) -> typing.Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def _assert_one_line_naming(err: Exception, key: str) -> None:
    message = str(err)
    assert "\n" not in message.strip(), message
    leaf = key.split(".")[-1]
    assert leaf in message or key in message, f"message does not name {key!r}: {message}"


def _decide(key: str, make: typing.Callable[[], TrainConfig]) -> TrainConfig | None:
    """The config ``make`` builds, checked to be well typed, or ``None`` when it was refused
    in one line naming ``key``."""
    try:
        config = make()
    except ConfigError as err:
        _assert_one_line_naming(err, key)
        return None
    _assert_accepted_config_is_well_typed(config)
    return config


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(set(FIELDS) - {"out", "resume"})), text=TOML_VALUES)
def test_python_and_toml_values_are_accepted_well_typed_or_refused_in_one_line(
    key: str, text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    value = _parse_toml_value(text)
    if value is None:
        return  # not a TOML value: the file reader's concern (next test)
    from_python = _decide(key, lambda: TrainConfig.from_dict({key: value}))
    # The same value written in a TOML file decides the same way.
    path = tmp_path_factory.mktemp("toml") / "config.toml"
    path.write_text(f"{key} = {text}\n")
    from_file = _decide(key, lambda: load_config(path))
    assert (from_python is None) == (from_file is None), f"{key} = {text}: Python and TOML differ"
    if from_python is not None and from_file is not None:
        assert getattr(from_file, key) == getattr(from_python, key)


def test_every_setting_decides_every_listed_value() -> None:
    """Exhaustive over keys x the listed hostile values (hypothesis samples the same space
    with random numbers and text on top)."""
    for key in sorted(set(FIELDS) - {"out", "resume"}):
        for text in LISTED_VALUES:
            value = _parse_toml_value(text)
            if value is not None:
                _decide(key, lambda key=key, value=value: TrainConfig.from_dict({key: value}))


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=40))
def test_a_damaged_config_file_is_one_line_naming_the_file(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("toml") / "settings.toml"
    path.write_text(text + "\n= ][\n")  # never valid TOML
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "settings.toml" in message and "\n" not in message.strip()


class _Recorded(Exception):
    """Raised by the stand-in trainer so the CLI stops right after validation."""


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.one_of(
        st.sampled_from(sorted(set(FIELDS) - {"out", "resume", "model_kwargs"})),
        st.sampled_from(["model_kwargs.hidden", "model_kwargs.levels", "model_kwargs.steps"]),
        st.sampled_from(["model_kwargs.bogus", "no_such_key", "model_kwargs.in_shape"]),
    ),
    text=TOML_VALUES,
)
def test_cli_set_refuses_in_one_line_and_creates_nothing(
    key: str,
    text: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    handed: list[TrainConfig] = []

    def recorder(config: TrainConfig, progress: bool = True) -> None:
        handed.append(config)
        raise _Recorded

    original = train_command.train
    train_command.train = recorder  # type: ignore[assignment]
    try:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                status = main(["train", "--out", str(run), "--set", f"{key}={text}"])
        except _Recorded:
            status = None
    finally:
        train_command.train = original  # type: ignore[assignment]
    err = stderr.getvalue()
    if status is None:
        (config,) = handed
        _assert_accepted_config_is_well_typed(config)
        return
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowkit train:"), err
    assert "Traceback" not in err
    leaf = key.split(".")[-1]
    assert leaf in err or "--set" in err, err
    assert not run.exists(), "a refused configuration created the run folder"
    assert sorted(p.name for p in Path(root).iterdir()) == []
