"""Neural spline flows and masked autoregressive flows on 2-D densities: flowkit, nflows and zuko.

    python -m benchmarks.density2d                 # 2 datasets x 3 flows x 3 libraries, seed 0
    python -m benchmarks.density2d --seeds 0,1,2   # several seeds (mean and spread across them)
    python -m benchmarks.density2d --quick         # smoke mode for the tests (seconds)

Two densities, both standardised with the training set's mean and standard deviation:

* *moons*: ``sklearn.datasets.make_moons`` with noise 0.05;
* *checkerboard*: 8 squares of a 4x4 board (FFJORD's toy density), uniform on them.

For each, two flows, built at the same size in every library (number of transforms, hidden
width, two hidden layers, spline bins and tail bound):

* **nsf** (rational-quadratic spline couplings, Durkan et al. 2019): flowkit's ``nsf_vector``
  zoo model; nflows' ``PiecewiseRationalQuadraticCouplingTransform`` with alternating masks and
  an MLP of the same shape as flowkit's ``mlp`` conditioner; zuko's ``NSF`` with ``passes=2``
  (coupling, not fully autoregressive), built through ``zuko.flows.MAF`` exactly as
  ``zuko.flows.NSF`` builds itself but with the spline's bound set (zuko fixes it at 5);
* **maf** (masked affine autoregressive, Papamakarios et al. 2017): flowkit's ``maf_vector``;
  nflows' ``MaskedAffineAutoregressiveTransform`` (MADE without residual blocks, one hidden
  block: two hidden layers) with ``ReversePermutation`` between; zuko's ``MAF``;
* **maf_spline** (autoregressive rational-quadratic splines, Durkan et al. 2019): flowkit's
  ``maf_spline_vector``; nflows' ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform``
  (the same MADE); zuko's ``NSF`` as it comes (fully autoregressive), bound set as above.

In 2-D, zuko's two-pass coupling *is* its fully autoregressive transform (one feature per
pass), so its nsf and maf_spline rows coincide; unlike nflows' and flowkit's couplings, zuko
also transforms the first half (with parameters that depend on no input). Parameter counts of
masked networks (nflows' MADE, zuko's) include the weights their masks zero.

Each library builds its flow the way its users write it: flowkit's recipes add an ActNorm and
an LU linear map per step (a handful of parameters in 2-D), nflows and zuko permute. Every
model gets the same training points, the same batches in the same order, Adam with the same
learning rate and cosine decay, the same number of steps and the same seed before it is built.
Training is interleaved step by step (A B C D E F A B C ...; the first library rotates), so a
change of machine load hits every library alike; each library's steps are timed on their own.

Reported per (dataset, flow, library): test NLL in nats per point (mean over a held-out set of
fresh points in standardised coordinates, with its standard error), the NLL difference to
flowkit on the same test points (paired standard error), parameter count, training wall time
and its ratio to flowkit's (above 1: flowkit is faster). The NLL of the true density on the
same points is the floor no model reaches. With several seeds the table shows the mean over
seeds and the spread (standard error across seeds).

Writes ``benchmarks/results/density2d.json`` (every run and the summary), ``density2d.md`` (the
table) and ``density2d.png`` (the learned densities, one image per library x flow x dataset, for
the first seed). ``--quick`` writes ``quick-density2d.*`` instead unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import cpu_name, fmt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LIBRARIES = ("flowkit", "nflows", "zuko")
FLOWS = ("nsf", "maf", "maf_spline")
DATASETS = ("moons", "checkerboard")
FLOWKIT_MODELS = {"nsf": "nsf_vector", "maf": "maf_vector", "maf_spline": "maf_spline_vector"}
#: flowkit's ``mlp`` conditioner has two hidden layers (Linear-act-Linear-act-Linear); the other
#: libraries' networks are built with the same depth.
HIDDEN_LAYERS = 2
MOONS_NOISE = 0.05


@dataclass(frozen=True)
class Config:
    """One benchmark configuration (the same for every library)."""

    steps: int = 2000
    batch: int = 256
    lr: float = 1e-3
    transforms: int = 5
    hidden: int = 64
    bins: int = 8
    tail_bound: float = 3.0
    n_train: int = 20_000
    n_test: int = 10_000
    grid: int = 160
    threads: int = 1
    seeds: tuple[int, ...] = (0,)
    datasets: tuple[str, ...] = DATASETS
    flows: tuple[str, ...] = FLOWS
    libraries: tuple[str, ...] = LIBRARIES
    quick: bool = False


QUICK = dict(
    steps=25, batch=128, transforms=2, hidden=16, bins=4, n_train=1000, n_test=1000, grid=40
)


# ---------------------------------------------------------------------------------- data


def sample_moons(n: int, seed: int) -> np.ndarray:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_samples=n, noise=MOONS_NOISE, random_state=seed)
    return x


def sample_checkerboard(n: int, seed: int) -> np.ndarray:
    """FFJORD's checkerboard: x1 uniform on [-2, 2), x2 on the 2 of 4 unit rows that make a
    checkerboard with x1's column, both scaled by 2 (8 squares of side 2, density 1/32)."""
    rng = np.random.default_rng(seed)
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * 2


SAMPLERS: dict[str, Callable[[int, int], np.ndarray]] = {
    "moons": sample_moons,
    "checkerboard": sample_checkerboard,
}


def true_log_density(name: str, x: np.ndarray) -> np.ndarray:
    """``log p(x)`` of the exact density in the sampler's own coordinates."""
    if name == "checkerboard":
        col = np.floor(x[:, 0] / 2)
        row = np.floor(x[:, 1] / 2)
        inside = (np.abs(x) < 4).all(axis=1) & ((col + row) % 2 == 0)
        return np.where(inside, -math.log(32.0), -np.inf)
    # make_moons puts points evenly in angle t on two half circles, outer (cos t, sin t) and
    # inner (1 - cos t, 0.5 - sin t), and adds N(0, noise^2) per coordinate: a mixture,
    # integrated numerically in t (as examples/two_moons.py does).
    t = torch.linspace(0, math.pi, 4000, dtype=torch.float64)
    centres = torch.cat(
        [torch.stack([t.cos(), t.sin()], 1), torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)]
    )
    d2 = torch.cdist(torch.as_tensor(x, dtype=torch.float64), centres).square()
    log_p = (
        torch.logsumexp(-d2 / (2 * MOONS_NOISE**2), dim=1)
        - math.log(len(centres))
        - math.log(2 * math.pi * MOONS_NOISE**2)
    )
    return log_p.numpy()


@dataclass
class Dataset:
    name: str
    train: Tensor  # standardised, float32
    test: Tensor
    true_nll: float  # of the test points, standardised coordinates
    mean: list[float]
    std: list[float]


def make_dataset(name: str, n_train: int, n_test: int, seed: int) -> Dataset:
    """Training and (independently drawn) test points, standardised with the training set's
    statistics; the true density is moved to the same coordinates (``-log p`` gains
    ``sum log std``: ``p_std(y) = p(x) * prod(std)``)."""
    sampler = SAMPLERS[name]
    raw_train = sampler(n_train, seed)
    raw_test = sampler(n_test, seed + 10_000)
    mean, std = raw_train.mean(0), raw_train.std(0)
    true_nll = float(-true_log_density(name, raw_test).mean() - np.log(std).sum())

    def standardise(a: np.ndarray) -> Tensor:
        return torch.as_tensor((a - mean) / std, dtype=torch.float32)

    return Dataset(
        name, standardise(raw_train), standardise(raw_test), true_nll, mean.tolist(), std.tolist()
    )


# ---------------------------------------------------------------------------------- models


class CouplingMLP(nn.Module):
    """The shape of flowkit's ``mlp`` conditioner (Linear-ReLU-Linear-ReLU-Linear), with the
    ``(x, context)`` call nflows' couplings make (nflows' own ``MLP`` takes no context)."""

    def __init__(self, in_features: int, out_features: int, hidden: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_features, hidden), nn.ReLU()]
        for _ in range(HIDDEN_LAYERS - 1):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, out_features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


class CouplingMLPFactory:
    """``transform_net_create_fn`` for nflows couplings (a class, not a lambda: picklable)."""

    def __init__(self, hidden: int):
        self.hidden = hidden

    def __call__(self, in_features: int, out_features: int) -> CouplingMLP:
        return CouplingMLP(in_features, out_features, self.hidden)


@dataclass
class Built:
    """A model of one library with a uniform ``log_prob``."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    notes: list[str] = field(default_factory=list)


def build_flowkit(flow: str, cfg: Config, features: int) -> Built:
    from flowkit import zoo

    name = FLOWKIT_MODELS[flow]
    if name not in zoo.names("model"):
        raise LookupError(f"flowkit has no zoo model {name!r} (yet)")
    wanted: dict[str, Any] = dict(
        features=features,
        steps=cfg.transforms,
        hidden=cfg.hidden,
        hidden_layers=HIDDEN_LAYERS,
        bins=cfg.bins,
        tail_bound=cfg.tail_bound,
    )
    if flow == "maf":  # an affine MAF has no spline
        wanted = {k: v for k, v in wanted.items() if k not in ("bins", "tail_bound")}
    if flow == "nsf":  # the coupling's `mlp` conditioner has HIDDEN_LAYERS by construction
        del wanted["hidden_layers"]
    params = inspect.signature(zoo.get("model", name).factory).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in wanted.items() if takes_all or k in params}
    notes = [
        f"flowkit {name} takes no {k!r}; its default is used" for k in wanted if k not in kwargs
    ]
    model = zoo.build("model", name, **kwargs)
    return Built(model, model.log_prob, notes)


def build_nflows(flow: str, cfg: Config, features: int) -> Built:
    import torch.nn.functional as F
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import (
        CompositeTransform,
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        PiecewiseRationalQuadraticCouplingTransform,
        ReversePermutation,
    )
    from nflows.utils import create_alternating_binary_mask

    layers: list[nn.Module] = []
    for k in range(cfg.transforms):
        if flow == "nsf":
            # Alternating masks: every feature is transformed every other step (in 2-D the
            # same as a ReversePermutation between identically masked couplings).
            layers.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask=create_alternating_binary_mask(features, even=k % 2 == 0),
                    transform_net_create_fn=CouplingMLPFactory(cfg.hidden),
                    num_bins=cfg.bins,
                    tails="linear",
                    tail_bound=cfg.tail_bound,
                )
            )
        else:
            # MADE without residual blocks and one hidden block: in -> h -> h -> out, the depth
            # of the other libraries' networks.
            made = dict(
                features=features,
                hidden_features=cfg.hidden,
                num_blocks=HIDDEN_LAYERS - 1,
                use_residual_blocks=False,
                activation=F.relu,
            )
            if flow == "maf":
                layer: nn.Module = MaskedAffineAutoregressiveTransform(**made)
            else:
                layer = MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    **made, num_bins=cfg.bins, tails="linear", tail_bound=cfg.tail_bound
                )
            layers += [layer, ReversePermutation(features)]
    model = Flow(CompositeTransform(layers), StandardNormal([features]))
    return Built(model, model.log_prob)


def build_zuko(flow: str, cfg: Config, features: int) -> Built:
    import zuko

    hidden = (cfg.hidden,) * HIDDEN_LAYERS
    if flow in ("nsf", "maf_spline"):
        from zuko.transforms import MonotonicRQSTransform

        # What zuko.flows.NSF(features, bins=..., passes=...) builds, with the spline's
        # domain [-tail_bound, tail_bound] instead of zuko's fixed [-5, 5]; slope 1e-3 is
        # NSF's default minimum derivative (nflows' too). passes=2: coupling; the default
        # (one pass per feature): fully autoregressive.
        passes = {"passes": 2} if flow == "nsf" else {}
        model: nn.Module = zuko.flows.MAF(
            features=features,
            transforms=cfg.transforms,
            hidden_features=hidden,
            univariate=partial(MonotonicRQSTransform, bound=cfg.tail_bound, slope=1e-3),
            shapes=[(cfg.bins,), (cfg.bins,), (cfg.bins - 1,)],
            **passes,
        )
    else:
        model = zuko.flows.MAF(features=features, transforms=cfg.transforms, hidden_features=hidden)

    def log_prob(x: Tensor) -> Tensor:
        return model().log_prob(x)

    return Built(model, log_prob)


BUILDERS: dict[str, Callable[[str, Config, int], Built]] = {
    "flowkit": build_flowkit,
    "nflows": build_nflows,
    "zuko": build_zuko,
}


def library_available(library: str) -> str | None:
    """``None`` when the library imports, else why not (its rows are then skipped)."""
    try:
        __import__(library)
    except ImportError as err:
        print(f"note: cannot import {library}: {err}", flush=True)
        return f"{library} is not installed: its rows are skipped"
    return None


# ---------------------------------------------------------------------------------- training


class Trainee:
    """One model being trained: its optimizer, schedule and the time its own steps took."""

    def __init__(self, library: str, flow: str, built: Built, cfg: Config):
        self.library, self.flow, self.built = library, flow, built
        self.model = built.module
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cfg.steps)
        self.seconds = 0.0
        self.nonfinite_steps = 0
        self.last_loss = math.nan

    def initialize(self, x: Tensor) -> None:
        """flowkit's data-dependent init (ActNorm) on a first batch; timed as training."""
        start = time.perf_counter()
        init = getattr(self.model, "initialize", None)
        if callable(init):
            init(x)
        self.seconds += time.perf_counter() - start

    def step(self, x: Tensor) -> None:
        start = time.perf_counter()
        self.model.train()
        loss = -self.built.log_prob(x).mean()
        self.optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            self.optimizer.step()
        else:  # counted and reported; the same rule for every library
            self.nonfinite_steps += 1
        self.schedule.step()
        self.seconds += time.perf_counter() - start
        self.last_loss = float(loss.detach())

    @torch.no_grad()
    def nll(self, x: Tensor, chunk: int = 4096) -> Tensor:
        """Per-point ``-log p(x)`` in nats (float64), eval mode."""
        self.model.eval()
        parts = [-self.built.log_prob(c).double() for c in x.split(chunk)]
        return torch.cat(parts)


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mean_and_se(values: Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean (nan-propagating: a non-finite NLL shows as such)."""
    n = values.numel()
    mean = float(values.mean())
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return mean, se


def train_group(
    data: Dataset, seed: int, cfg: Config, skipped: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, Trainee]]:
    """Build every (flow, library) model of one dataset and seed, train them interleaved step
    by step on the same batches, and evaluate them on the same test points."""
    features = data.train.shape[1]
    rows: list[dict[str, Any]] = []
    trainees: dict[str, Trainee] = {}
    for flow in cfg.flows:
        for library in cfg.libraries:
            key = f"{library}/{flow}"
            base = dict(dataset=data.name, flow=flow, library=library, seed=seed)
            if library in skipped:
                rows.append(dict(base, skipped=skipped[library]))
                continue
            torch.manual_seed(seed)  # the same seed before every build
            try:
                built = BUILDERS[library](flow, cfg, features)
            except Exception as err:  # noqa: BLE001 - one broken build must not end the run
                rows.append(dict(base, error=f"{type(err).__name__}: {err}"))
                continue
            trainees[key] = Trainee(library, flow, built, cfg)
            rows.append(dict(base, key=key))

    batches = torch.Generator().manual_seed(seed)
    init_batch = data.train[torch.randperm(len(data.train), generator=batches)[:1024]]
    for trainee in trainees.values():
        trainee.initialize(init_batch)
    keys = list(trainees)
    for step in range(cfg.steps):
        x = data.train[torch.randint(len(data.train), (cfg.batch,), generator=batches)]
        # Rotate who goes first, so no library always runs right after the batch is drawn.
        shift = step % max(1, len(keys))
        for key in keys[shift:] + keys[:shift]:
            trainees[key].step(x)

    nlls = {key: t.nll(data.test) for key, t in trainees.items()}
    for row in rows:
        key = row.pop("key", None)
        if key is None:
            continue
        t = trainees[key]
        nll, se = mean_and_se(nlls[key])
        reference = nlls.get(f"flowkit/{t.flow}")
        diff, diff_se = (
            mean_and_se(nlls[key] - reference) if reference is not None else (None, None)
        )
        flowkit_s = trainees[f"flowkit/{t.flow}"].seconds if reference is not None else None
        row.update(
            test_nll=nll,
            test_nll_se=se,
            nll_minus_flowkit=diff,
            nll_minus_flowkit_se=diff_se,
            parameters=parameters(t.model),
            train_s=t.seconds,
            time_x_flowkit=t.seconds / flowkit_s if flowkit_s else None,
            final_train_loss=t.last_loss,
            nonfinite_steps=t.nonfinite_steps,
            true_nll=data.true_nll,
            notes=t.built.notes,
        )
    return rows, trainees


# ---------------------------------------------------------------------------------- report


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def spread_of(values: list[float], single: float | None) -> float | None:
    """The uncertainty of a mean over seeds: across seeds for several, ``single`` (the test-set
    standard error of the one run) for one."""
    if len(values) > 1:
        return statistics.stdev(values) / math.sqrt(len(values))
    return single if values else None


def summarize(runs: list[dict[str, Any]], cfg: Config) -> list[dict[str, Any]]:
    """One row per (dataset, flow, library): means over seeds; the NLL's uncertainty is the
    test-set standard error for one seed, the standard error across seeds for several."""
    summary = []
    for dataset in cfg.datasets:
        for flow in cfg.flows:
            for library in cfg.libraries:
                rows = [
                    r
                    for r in runs
                    if (r["dataset"], r["flow"], r["library"]) == (dataset, flow, library)
                ]
                done = [r for r in rows if "test_nll" in r]
                base = dict(dataset=dataset, flow=flow, library=library, seeds=len(done))
                if not done:
                    why = next((r.get("skipped") or r.get("error") for r in rows), "not run")
                    summary.append(dict(base, note=why))
                    continue
                nll = [r["test_nll"] for r in done]
                spread = spread_of(nll, done[0]["test_nll_se"])
                diffs = [r["nll_minus_flowkit"] for r in done if r["nll_minus_flowkit"] is not None]
                ratios = [r["time_x_flowkit"] for r in done if r["time_x_flowkit"] is not None]
                summary.append(
                    dict(
                        base,
                        test_nll=statistics.fmean(nll),
                        test_nll_se=spread,
                        nll_minus_flowkit=statistics.fmean(diffs) if diffs else None,
                        nll_minus_flowkit_se=spread_of(diffs, done[0]["nll_minus_flowkit_se"]),
                        parameters=done[0]["parameters"],
                        train_s=statistics.fmean(r["train_s"] for r in done),
                        time_x_flowkit=statistics.fmean(ratios) if ratios else None,
                        nonfinite_steps=sum(r["nonfinite_steps"] for r in done),
                        true_nll=statistics.fmean(r["true_nll"] for r in done),
                    )
                )
    return summary


def table(summary: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table (also what is printed)."""
    lines = [
        "| dataset | flow | library | test NLL (nats) | ± SE | NLL − flowkit | params | "
        "train s | time × flowkit |",
        "|" + "---|" * 9,
    ]
    truths: dict[str, float] = {}
    for row in summary:
        if "note" in row:
            lines.append(
                f"| {row['dataset']} | {row['flow']} | {row['library']} | {row['note']} | | | | | |"
            )
            continue
        truths[row["dataset"]] = row["true_nll"]
        diff = (
            "-"
            if row["library"] == "flowkit" or row["nll_minus_flowkit"] is None
            else f"{row['nll_minus_flowkit']:+.3f} ± {fmt(row['nll_minus_flowkit_se'])}"
        )
        lines.append(
            f"| {row['dataset']} | {row['flow']} | {row['library']} | {fmt(row['test_nll'])} | "
            f"{fmt(row['test_nll_se'])} | {diff} | {row['parameters']:,} | "
            f"{fmt(row['train_s'], 1)} | {fmt(row['time_x_flowkit'], 2)} |"
        )
    for dataset, truth in truths.items():
        lines.append(f"| {dataset} | true density | - | {fmt(truth)} | | | | | |")
    return "\n".join(lines) + "\n"


def plot(
    datasets: dict[str, Dataset],
    trained: dict[str, dict[str, Trainee]],
    nll: dict[tuple[str, str], float],
    cfg: Config,
    path: Path,
) -> bool:
    """The learned densities: one row per (dataset, flow), the training points and then one
    column per library, so the libraries' versions of a flow sit side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, flow) for name in datasets for flow in cfg.flows]
    if not rows:
        return False
    columns = len(cfg.libraries) + 1
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(2.2 * columns, 2.3 * len(rows)), squeeze=False
    )
    for i, (name, flow) in enumerate(rows):
        data = datasets[name]
        lim = float(data.test.abs().max()) * 1.05
        ticks = torch.linspace(-lim, lim, cfg.grid)
        gy, gx = torch.meshgrid(ticks, ticks, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
        shown = data.train[:3000].numpy()
        axes[i, 0].scatter(shown[:, 0], shown[:, 1], s=0.5, alpha=0.4, color="tab:blue")
        axes[i, 0].set_xlim(-lim, lim)
        axes[i, 0].set_ylim(-lim, lim)
        axes[i, 0].set_title(f"{name} data (true {data.true_nll:.3f})", fontsize=8)
        axes[i, 0].set_ylabel(f"{name}, {flow}", fontsize=9)
        for j, library in enumerate(cfg.libraries, start=1):
            ax = axes[i, j]
            key = f"{library}/{flow}"
            trainee = trained.get(name, {}).get(key)
            if trainee is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(f"{library} {flow}", fontsize=8)
                continue
            density = (-trainee.nll(grid)).exp().reshape(cfg.grid, cfg.grid).float()
            density = torch.nan_to_num(density, nan=0.0, posinf=0.0)
            ax.imshow(
                density.numpy(),
                origin="lower",
                extent=(-lim, lim, -lim, lim),
                cmap="magma",
                interpolation="nearest",
            )
            ax.set_title(f"{library} {flow}: {nll[(name, key)]:.3f}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
    fig.suptitle("learned densities (titles: test NLL in nats, first seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine(threads: int) -> dict[str, Any]:
    cpu = cpu_name()
    versions: dict[str, str] = {"torch": torch.__version__, "python": platform.python_version()}
    for lib in ("zuko", "sklearn"):
        try:
            versions[lib] = __import__(lib).__version__
        except (ImportError, AttributeError):
            pass
    try:
        from importlib.metadata import version

        versions["nflows"] = version("nflows")
        versions["flowkit"] = version("flowkit")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "loadavg_start": os.getloadavg(),
        **versions,
    }


MARKDOWN_HEADER = """# NSF and MAF on 2-D densities: flowkit, nflows, zuko

Generated by `{command}` (`benchmarks/density2d.py`; raw JSON beside this file).

Same size in every library: {transforms} transforms, hidden width {hidden}, {layers} hidden layers,
{bins} spline bins, tail bound {tail_bound}. Same {steps} Adam steps (lr {lr}, cosine decay) on
batches of {batch} from {n_train:,} training points, interleaved step by step; test NLL over
{n_test:,} fresh points in standardised coordinates. "± SE": {se_note}. "NLL − flowkit": the
paired difference on the same test points (negative: better than flowkit). "time × flowkit":
training wall time over flowkit's (above 1: flowkit is faster). {threads} torch thread(s);
{cpu}.

"""


# ---------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Config()
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (tests)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--steps", type=int, default=None, help=f"default {defaults.steps}")
    parser.add_argument("--batch", type=int, default=None, help=f"default {defaults.batch}")
    parser.add_argument("--lr", type=float, default=None, help=f"default {defaults.lr}")
    parser.add_argument("--transforms", type=int, default=None, help="flow steps")
    parser.add_argument("--hidden", type=int, default=None, help="hidden width")
    parser.add_argument("--bins", type=int, default=None, help="spline bins")
    parser.add_argument("--tail-bound", type=float, default=None, help="spline domain bound")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--flows", default=",".join(FLOWS))
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--out", type=Path, default=None, help="JSON path (.md, .png beside it)")
    args = parser.parse_args(argv)

    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in (
        "steps",
        "batch",
        "lr",
        "transforms",
        "hidden",
        "bins",
        "tail_bound",
        "n_train",
        "n_test",
        "threads",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)

    def names(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
        chosen = tuple(s for s in text.split(",") if s)
        unknown = [s for s in chosen if s not in allowed]
        if unknown:
            parser.error(f"unknown {what} {unknown}; choose from {list(allowed)}")
        return chosen

    cfg = Config(
        **values,
        seeds=tuple(int(s) for s in args.seeds.split(",") if s),
        datasets=names(args.datasets, DATASETS, "dataset"),
        flows=names(args.flows, FLOWS, "flow"),
        libraries=names(args.libraries, LIBRARIES, "library"),
        quick=args.quick,
    )
    if "flowkit" not in cfg.libraries:
        parser.error("flowkit is the reference of the ratios; keep it in --libraries")
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(argv)
    torch.set_num_threads(cfg.threads)
    # nflows' spline couplings warn on every build that a network not initialised to zero may
    # start far from the identity; that is how nflows users build them, so the note is noise.
    warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")
    skipped = {lib: why for lib in cfg.libraries if (why := library_available(lib))}
    for why in skipped.values():
        print(f"note: {why}", flush=True)
    results: dict[str, Any] = {
        "machine": machine(cfg.threads),
        "config": asdict(cfg),
        "hidden_layers": HIDDEN_LAYERS,
        "notes": sorted(skipped.values()),
        "datasets": {},
        "runs": [],
    }
    print(f"machine: {results['machine']}", flush=True)
    first: dict[str, dict[str, Trainee]] = {}
    datasets: dict[str, Dataset] = {}
    for seed in cfg.seeds:
        for name in cfg.datasets:
            data = make_dataset(name, cfg.n_train, cfg.n_test, seed)
            start = time.perf_counter()
            rows, trainees = train_group(data, seed, cfg, skipped)
            took = time.perf_counter() - start
            print(f"{name} seed {seed}: {len(trainees)} models in {took:.1f} s", flush=True)
            for row in rows:
                shown = {k: v for k, v in row.items() if k not in ("dataset", "seed", "notes")}
                print(f"  {json.dumps(shown)}", flush=True)
            results["runs"].extend(rows)
            if seed == cfg.seeds[0]:
                first[name], datasets[name] = trainees, data
                results["datasets"][name] = dict(
                    true_nll=data.true_nll, mean=data.mean, std=data.std
                )
    notes = {n for r in results["runs"] for n in r.get("notes", [])}
    results["notes"] = sorted(set(results["notes"]) | notes)
    results["summary"] = summarize(results["runs"], cfg)
    results["loadavg_end"] = os.getloadavg()

    text = table(results["summary"])
    print()
    print(text)
    for note in results["notes"]:
        print(f"note: {note}")
    out = args.out or RESULTS / ("quick-density2d.json" if cfg.quick else "density2d.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    nll = {
        (r["dataset"], f"{r['library']}/{r['flow']}"): r["test_nll"]
        for r in results["runs"]
        if r["seed"] == cfg.seeds[0] and "test_nll" in r
    }
    figure = out.with_suffix(".png")
    if plot(datasets, first, nll, cfg, figure):
        print(f"wrote {figure}")
    command = " ".join(
        ["python -m benchmarks.density2d", *(argv if argv is not None else sys.argv[1:])]
    )
    header = MARKDOWN_HEADER.format(
        command=command,
        layers=HIDDEN_LAYERS,
        se_note=(
            "standard error of the mean over the test points"
            if len(cfg.seeds) == 1
            else f"standard error across {len(cfg.seeds)} seeds"
        ),
        cpu=results["machine"]["cpu"],
        **{k: v for k, v in asdict(cfg).items() if k != "seeds"},
    )
    notes_md = "".join(f"- {n}\n" for n in results["notes"])
    markdown = out.with_suffix(".md")
    markdown.write_text(
        header
        + f"![learned densities]({figure.name})\n\n"
        + text
        + ("\n" + notes_md if notes_md else "")
    )
    print(f"wrote {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
