"""Packaging: the version has one source, and the built wheel installs and runs in a fresh venv.

The build runs ``python -m build --no-isolation`` (no network: the build backend comes from the
current environment) on a copy of the source tree, so the working tree gets no build/ or
egg-info litter. The fresh venv sees the current environment's packages (torch, nflows, ...)
through a ``.pth`` file, not the source tree, so it imports flowkit from the installed wheel.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import flowkit

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".ci-venv",
    "venv",
    "build",
    "dist",
    "site",
    "runs",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.npz",
    "*.pt",
    "*.safetensors",
)


def test_version_single_source():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', pyproject, re.M)
    assert 'version = { attr = "flowkit.__version__" }' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", flowkit.__version__)


def test_changelog_and_license():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{flowkit.__version__}]" in changelog, "CHANGELOG has no entry for this version"
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_cli_version():
    """``flowkit --version`` prints the package version (the console script's entry point)."""
    proc = subprocess.run(
        [sys.executable, "-m", "flowkit", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert flowkit.__version__ in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed: pip install -e '.[dev]'")
    work = tmp_path_factory.mktemp("pkg")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=IGNORE)
    out = work / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"python -m build failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return out


@pytest.mark.slow
def test_sdist_and_wheel_contents(dist):
    version = flowkit.__version__
    wheels = list(dist.glob(f"flowkit-{version}-py3-none-any.whl"))
    sdists = list(dist.glob(f"flowkit-{version}.tar.gz"))
    assert wheels and sdists, sorted(p.name for p in dist.iterdir())
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        metadata = whl.read(f"flowkit-{version}.dist-info/METADATA").decode()
        entry_points = whl.read(f"flowkit-{version}.dist-info/entry_points.txt").decode()
    assert "flowkit/__init__.py" in names
    assert "flowkit/layers/actnorm.py" in names
    assert not any(n.startswith(("tests/", "docs/", "examples/")) for n in names)
    assert any(n.endswith("licenses/LICENSE") for n in names), "LICENSE not in the wheel"
    assert f"Version: {version}" in metadata
    assert "flowkit = flowkit.cli:main" in entry_points
    with tarfile.open(sdists[0]) as sdist:
        members = sdist.getnames()
    assert f"flowkit-{version}/LICENSE" in members
    assert f"flowkit-{version}/pyproject.toml" in members


def _site_packages(prefix: Path) -> Path:
    scheme = "nt" if os.name == "nt" else "posix_prefix"
    paths = sysconfig.get_paths(scheme, vars={"base": str(prefix), "platbase": str(prefix)})
    return Path(paths["purelib"])


@pytest.mark.slow
def test_wheel_installs_in_fresh_venv(dist, tmp_path):
    wheel = next(dist.glob("flowkit-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=os.name != "nt").create(
        env_dir
    )
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    # torch, nflows, ... come from the environment running the tests (a venv's packages are not
    # "system" packages for a venv made from it): list its site-packages, not the source tree.
    here = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    (_site_packages(env_dir) / "_outer_env.pth").write_text("\n".join(here) + "\n")
    install = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install",
            "--no-deps", "--no-index", "--no-build-isolation", str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    where = subprocess.run(
        [str(python), "-c", "import flowkit; print(flowkit.__file__); print(flowkit.__version__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert where.returncode == 0, where.stdout + where.stderr
    location, version = where.stdout.split()
    assert Path(location).resolve().is_relative_to(env_dir.resolve()), location
    assert version == flowkit.__version__

    script = bindir / ("flowkit.exe" if os.name == "nt" else "flowkit")
    assert script.exists(), "the wheel did not install the flowkit console script"
    for args in (["--help"], ["--version"]):
        proc = subprocess.run(
            [str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"flowkit {args[0]}: {proc.stdout + proc.stderr}"
        out = proc.stdout + proc.stderr
        assert (flowkit.__version__ in out) if args == ["--version"] else ("usage" in out.lower())
