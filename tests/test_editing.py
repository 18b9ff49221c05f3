"""flowkit.editing on stand-in flows (linear: closed-form references) and on synthetic faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from flowkit.editing import (
    ExpressionSpace,
    LatentStatistics,
    as_labels,
    classify,
    decode,
    encode,
    interpolate,
    interpolate_faces,
    label_transfer,
    reference_transfer,
)
from flowkit.layers import ActNorm, FlowTransform


class AffineFlattenFlow(FlowTransform):
    """Stand-in flow: ActNorm, then ``z = W flatten(y) + b`` with a fixed random invertible W.

    An affine flow makes latent-space edits exactly predictable in pixel space: moving ``z`` by
    ``mean_z[t] - mean_z[s]`` moves ``x`` by ``mean_x[t] - mean_x[s]``.
    """

    def __init__(self, in_shape: tuple[int, int, int], seed: int = 0):
        super().__init__(in_shape)
        self.norm = ActNorm(in_shape)
        d = int(np.prod(in_shape))
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 + 2 * torch.eye(
            d, dtype=torch.float64
        )
        self.register_buffer("weight", w)
        self.register_buffer("bias", torch.randn(d, generator=g, dtype=torch.float64))

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (int(np.prod(self.in_shape)),)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, ld = self.norm(x)
        z = y.reshape(len(x), -1) @ self.weight.T + self.bias
        return z, ld + torch.linalg.slogdet(self.weight)[1]

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = torch.linalg.solve(self.weight, (z - self.bias).T).T.reshape(len(z), *self.in_shape)
        x, ld = self.norm.inverse(y)
        return x, ld - torch.linalg.slogdet(self.weight)[1]


def _toy_faces(n_per_class: int = 30, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 toy images (1, 4, 4): identity noise + a per-class pattern. Returns x, y, the
    class patterns (K, 1, 4, 4)."""
    g = torch.Generator().manual_seed(seed)
    patterns = 0.15 * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(n_per_class)
    identity = 0.05 * torch.randn(len(y), 1, 4, 4, generator=g, dtype=torch.float64)
    return identity + patterns[y], y, patterns


@pytest.fixture
def flow() -> AffineFlattenFlow:
    torch.manual_seed(0)
    f = AffineFlattenFlow((1, 4, 4)).to(torch.float64)
    x, _, _ = _toy_faces()
    f.train()
    f(x)  # data-dependent ActNorm init
    return f.eval()


def test_encode_decode_roundtrip_and_batching(flow: AffineFlattenFlow) -> None:
    x, _, _ = _toy_faces()
    z = encode(flow, x, batch_size=7)
    assert z.shape == (len(x), 16)
    torch.testing.assert_close(z, flow(x)[0])
    torch.testing.assert_close(decode(flow, z, batch_size=5), x, atol=1e-10, rtol=0)


def test_encode_restores_training_mode(flow: AffineFlattenFlow) -> None:
    flow.train()
    encode(flow, _toy_faces()[0][:4])
    assert flow.training


def test_latent_statistics_match_brute_force(flow: AffineFlattenFlow) -> None:
    x, y, _ = _toy_faces()
    stats = LatentStatistics.fit(flow, x, y, batch_size=8)
    z = flow(x)[0]
    for k in range(3):
        torch.testing.assert_close(stats.mean(k), z[y == k].mean(0))
    assert stats.counts.tolist() == [30, 30, 30]
    torch.testing.assert_close(stats.mean([2, 0]), torch.stack([stats.mean(2), stats.mean(0)]))
    torch.testing.assert_close(stats.direction(0, 1), stats.mean(1) - stats.mean(0))


def test_latent_statistics_missing_label_raises() -> None:
    stats = LatentStatistics.from_latents(torch.randn(6, 3), torch.tensor([0, 0, 2, 2, 2, 0]))
    assert stats.present_labels == [0, 2]
    with pytest.raises(ValueError, match="label"):
        stats.mean(1)


def test_label_transfer_closed_form_on_affine_flow(flow: AffineFlattenFlow) -> None:
    # Affine flow: x' = x + alpha * (mean_x[target] - mean_x[source]) exactly.
    x, y, _ = _toy_faces()
    stats = LatentStatistics.fit(flow, x, y)
    src = x[y == 0][:5]
    for alpha in (0.0, 0.5, 1.0):
        edited = label_transfer(flow, src, 0, 2, stats, alpha=alpha, clamp=False)
        expected = src + alpha * (x[y == 2].mean(0) - x[y == 0].mean(0))
        torch.testing.assert_close(edited, expected, atol=1e-9, rtol=0)


def test_label_transfer_per_row_labels_and_names(flow: AffineFlattenFlow) -> None:
    x, y, _ = _toy_faces()
    stats = LatentStatistics.fit(flow, x, y)
    rows = x[[0, 40, 80]]
    src, tgt = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    edited = label_transfer(flow, rows, src, tgt, stats, clamp=False)
    for i in range(3):
        one = label_transfer(flow, rows[i : i + 1], int(src[i]), int(tgt[i]), stats, clamp=False)
        torch.testing.assert_close(edited[i : i + 1], one)
    # Emotion names map through flowkit.data.labels (0 angry, 1 disgust, 2 fear).
    torch.testing.assert_close(
        label_transfer(flow, rows, ["angry", "disgust", "fear"], "disgust", stats, clamp=False),
        label_transfer(flow, rows, src, 1, stats, clamp=False),
    )


def test_label_transfer_clamps_to_data_range(flow: AffineFlattenFlow) -> None:
    x, y, _ = _toy_faces()
    stats = LatentStatistics.fit(flow, x, y)
    edited = label_transfer(flow, x[:4], 0, 1, stats, alpha=40.0)
    assert edited.min() >= -0.5 and edited.max() < 0.5


def test_interpolate_endpoints(flow: AffineFlattenFlow) -> None:
    x, y, _ = _toy_faces()
    stats = LatentStatistics.fit(flow, x, y)
    frames = interpolate(flow, x[:3], 0, 2, stats, num=5, clamp=False)
    assert frames.shape == (5, 3, 1, 4, 4)
    torch.testing.assert_close(frames[0], x[:3], atol=1e-9, rtol=0)
    torch.testing.assert_close(frames[-1], label_transfer(flow, x[:3], 0, 2, stats, clamp=False))
    # Affine flow: frames are evenly spaced in pixel space.
    steps = frames[1:] - frames[:-1]
    torch.testing.assert_close(steps, steps[:1].expand_as(steps), atol=1e-9, rtol=0)
    path = interpolate_faces(flow, x[:2], x[40:42], num=3, clamp=False)
    torch.testing.assert_close(path[1], (x[:2] + x[40:42]) / 2, atol=1e-9, rtol=0)


def _gaussian_latents(n_per_class: int = 200, d: int = 12, seed: int = 0):
    """Latents = identity noise (isotropic) + class offsets inside a known 2-D subspace."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))
    offsets = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64) @ q.T
    y = torch.arange(3).repeat_interleave(n_per_class)
    z = torch.randn(len(y), d, generator=g, dtype=torch.float64) + offsets[y]
    return z, y, q


def test_expression_space_recovers_expression_subspace() -> None:
    z, y, q = _gaussian_latents()
    space = ExpressionSpace.fit(z, y)
    e = space.basis
    assert e.shape == (12, 2)
    torch.testing.assert_close(e.T @ e, torch.eye(2, dtype=e.dtype), atol=1e-10, rtol=0)
    # Principal angles between span(E) and the true subspace are small: singular values ~ 1.
    cosines = torch.linalg.svdvals(e.T @ q)
    assert cosines.min() > 0.95
    assert space.accuracy(z, y) > 0.9


def test_expression_space_split_and_swap() -> None:
    z, y, _ = _gaussian_latents()
    space = ExpressionSpace.fit(z, y)
    expr, ident = space.split(z)
    torch.testing.assert_close(expr + ident, z)
    # identity part has no component along the expression directions (about the centre).
    torch.testing.assert_close(
        (ident - space.center) @ space.basis,
        torch.zeros(len(z), 2, dtype=z.dtype),
        atol=1e-9,
        rtol=0,
    )
    face, ref = z[:5], z[-5:]
    swapped = space.swap(face, ref)
    torch.testing.assert_close(space.coordinates(swapped), space.coordinates(ref))
    torch.testing.assert_close(space.identity(swapped), space.identity(face))
    # One reference row broadcasts to every face.
    torch.testing.assert_close(space.swap(face, ref[:1])[2], space.swap(face[2:3], ref[:1])[0])
    assert (space.classify(swapped) == 2).all()


def test_expression_space_rejects_one_class_and_bad_directions() -> None:
    z, y, _ = _gaussian_latents(20)
    with pytest.raises(ValueError):
        ExpressionSpace.fit(z, torch.zeros(len(z), dtype=torch.int64))
    with pytest.raises(ValueError):
        ExpressionSpace.fit(z, y, n_directions=3)
    assert ExpressionSpace.fit(z, y, n_directions=1).num_directions == 1
    assert ExpressionSpace.fit(z, y, shrinkage=None).num_directions == 2


def test_expression_space_two_classes_classify() -> None:
    z, y, _ = _gaussian_latents()
    keep = y < 2
    space = ExpressionSpace.fit(z[keep], y[keep] * 3)  # labels 0 and 3
    assert set(space.classify(z[keep]).tolist()) <= {0, 3}
    assert space.accuracy(z[keep], y[keep] * 3) > 0.9


def test_reference_transfer_on_affine_flow(flow: AffineFlattenFlow) -> None:
    x, y, _ = _toy_faces(60)
    z = encode(flow, x)
    space = ExpressionSpace.fit(z, y)
    faces, refs = x[y == 0][:6], x[y == 2][:6]
    out = reference_transfer(flow, faces, refs, space, clamp=False)
    assert out.shape == faces.shape
    # Latent of the result: identity from the face, expression from the reference.
    z_out = encode(flow, out)
    torch.testing.assert_close(space.identity(z_out), space.identity(encode(flow, faces)))
    torch.testing.assert_close(space.coordinates(z_out), space.coordinates(encode(flow, refs)))
    assert (classify(flow, out, space) == 2).float().mean() >= 0.8
    torch.testing.assert_close(
        reference_transfer(flow, faces, refs, space, alpha=0.0, clamp=False),
        faces,
        atol=1e-9,
        rtol=0,
    )
    with pytest.raises(ValueError):
        reference_transfer(flow, faces, refs[:2], space)


def test_statistics_and_space_save_load(tmp_path, flow: AffineFlattenFlow) -> None:
    x, y, _ = _toy_faces()
    z = encode(flow, x)
    stats = LatentStatistics.from_latents(z, y)
    stats.save(tmp_path / "stats.safetensors")
    loaded = LatentStatistics.load(tmp_path / "stats.safetensors")
    torch.testing.assert_close(loaded.means, stats.means)
    space = ExpressionSpace.fit(z, y)
    space.save(tmp_path / "space.safetensors")
    back = ExpressionSpace.load(tmp_path / "space.safetensors")
    assert torch.equal(back.classify(z), space.classify(z))


def test_as_labels() -> None:
    assert as_labels(3, 4).tolist() == [3, 3, 3, 3]
    assert as_labels("happy", 2).tolist() == [3, 3]
    assert as_labels(np.array([1, 2]), 2).tolist() == [1, 2]
    assert as_labels(torch.tensor([5]), 3).tolist() == [5, 5, 5]
    with pytest.raises(ValueError):
        as_labels([1, 2, 3], 2)


def test_damaged_editing_files_are_refused_naming_them(tmp_path) -> None:
    """A damaged, incomplete or non-finite statistics / space file is a CheckpointError that
    names the file (it was a SafetensorError traceback from `flowkit transfer`)."""
    import torch
    from safetensors.torch import save_file

    from flowkit.editing import ExpressionSpace, LatentStatistics
    from flowkit.errors import CheckpointError

    stats = LatentStatistics.from_latents(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    good = tmp_path / "stats.safetensors"
    stats.save(good)
    torch.testing.assert_close(LatentStatistics.load(good).means, stats.means)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(good.read_bytes()[:40])
    incomplete = tmp_path / "incomplete.safetensors"
    save_file({"means": stats.means}, str(incomplete))
    non_finite = tmp_path / "nan.safetensors"
    save_file({**stats.state_dict(), "means": torch.full_like(stats.means, float("nan"))},
              str(non_finite))  # fmt: skip
    for path in (damaged, incomplete, non_finite, tmp_path / "missing.safetensors"):
        with pytest.raises(CheckpointError, match=path.name):
            LatentStatistics.load(path)
        with pytest.raises(CheckpointError, match=path.name):
            ExpressionSpace.load(path)
