"""preprocess / postprocess maths, bits/dim constant, torch Dataset and DataLoader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowkit.data import (
    DataError,
    EmotionSet,
    bits_per_dim,
    dequantization_log_jacobian,
    make_dataloader,
    postprocess,
    preprocess,
    reduce_bits,
)
from flowkit.data.torch_dataset import EmotionDataset

ALL = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)


@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_range_and_formula(n_bits):
    g = torch.Generator().manual_seed(0)
    x = preprocess(ALL, n_bits, generator=g)
    assert x.dtype == torch.float32 and x.shape == ALL.shape
    assert x.min() >= -0.5 and x.max() < 0.5
    k = torch.floor(ALL.double() / 2 ** (8 - n_bits))
    u = (x.double() + 0.5) * 2**n_bits - k  # the dequantisation noise recovered
    assert u.min() >= 0 and u.max() < 1
    centre = preprocess(ALL, n_bits, dequantize=False)
    torch.testing.assert_close(centre.double(), (k + 0.5) / 2**n_bits - 0.5)


@pytest.mark.parametrize("n_bits", [8, 5])
def test_round_trip_exact(n_bits):
    for seed in range(3):
        x = preprocess(ALL, n_bits, generator=torch.Generator().manual_seed(seed))
        back = postprocess(x, n_bits)
        assert back.dtype == torch.uint8
        assert torch.equal(back, reduce_bits(ALL, n_bits))
    if n_bits == 8:
        assert torch.equal(postprocess(preprocess(ALL, 8), 8), ALL)
    assert len(torch.unique(reduce_bits(ALL, n_bits))) == 2**n_bits


def test_numpy_input_and_postprocess_clipping():
    imgs = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    assert torch.equal(postprocess(preprocess(imgs)), torch.from_numpy(imgs))
    out = postprocess(torch.tensor([-3.0, 0.7, float("nan"), 0.4999]), n_bits=5)
    assert out.tolist() == [0, 248, 0, 248]
    full = postprocess(torch.tensor([0.4999]), n_bits=5, full_range=True)
    assert full.tolist() == [255]
    with pytest.raises(DataError):
        preprocess(imgs.astype(np.float32))
    with pytest.raises(DataError):
        preprocess(imgs, n_bits=9)


def test_bits_per_dim_constant():
    d = 3 * 32 * 32
    assert dequantization_log_jacobian(5, d) == pytest.approx(-d * 5 * math.log(2))
    # A uniform density on the [-0.5, 0.5)^D cube has log p = 0: exactly n_bits bits/dim
    # (each of the 2**n levels equally likely).
    assert float(bits_per_dim(torch.tensor(0.0), d, n_bits=5)) == pytest.approx(5.0)
    lp = torch.tensor([-1000.0, 250.0])
    expected = -lp / (d * math.log(2)) + 8
    torch.testing.assert_close(bits_per_dim(lp, d, 8), expected)


def test_dataloader_batches_and_classes():
    rng = np.random.default_rng(0)
    s = EmotionSet(
        images=rng.integers(0, 256, (10, 1, 8, 8), dtype=np.uint8), labels=np.array([3, 7] * 5)
    )
    loader = make_dataloader(s, batch_size=4, n_bits=5, seed=0)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(torch.cat([b[1] for b in batches]).tolist()) == {3, 7}
    ds = EmotionDataset(s, classes=["happy", "contempt"], dequantize=False)
    assert {int(ds[i][1]) for i in range(10)} == {0, 1}
    torch.testing.assert_close(ds[0][0], preprocess(s.images[0], dequantize=False))
    with pytest.raises(DataError, match="contempt"):
        EmotionDataset(s, classes=["happy"])
    order1 = [b[1].tolist() for b in make_dataloader(s, batch_size=3, seed=1)]
    order2 = [b[1].tolist() for b in make_dataloader(s, batch_size=3, seed=1)]
    assert order1 == order2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_bits", range(1, 9))
def test_noise_at_the_top_of_a_bin_stays_in_the_bin(n_bits, dtype):
    """The largest noise torch.rand can draw (the float just below 1) used to round k + u up to
    k + 1, so one pixel in about a million came back one level too bright. Every level, with
    the extreme noises, must come back as itself."""
    from flowkit.data.preprocess import to_model_space

    levels = torch.arange(2**n_bits, dtype=dtype)
    below_one = torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
    for u in (torch.zeros((), dtype=dtype), below_one):
        x = to_model_space(levels, u.expand_as(levels), n_bits)
        assert bool((x >= -0.5).all() and (x < 0.5).all())
        back = postprocess(x, n_bits=n_bits).to(torch.int64)
        assert torch.equal(back, levels.to(torch.int64) << (8 - n_bits))
