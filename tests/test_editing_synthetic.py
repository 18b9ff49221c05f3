"""End-to-end expression transfer on synthetic faces, where the true target image is known.

A small BPLF is trained briefly on training people; on different held-out people, label transfer
must bring a face closer (SSIM) to the same person's real target-expression face than the
unedited face is, and the project's expression classifier must recognise the target expression
in most edited faces.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

EXPRESSIONS = ("neutral", "happy", "surprise", "angry")


@pytest.fixture(scope="module")
def trained() -> dict:
    training = pytest.importorskip("flowkit.training")
    from flowkit.data import preprocess, synthetic_emotion_set
    from flowkit.editing import ExpressionSpace, LatentStatistics, encode
    from flowkit.metrics import train_expression_classifier

    train_set = synthetic_emotion_set(60, EXPRESSIONS, size=16, seed=0)
    test_set = synthetic_emotion_set(8, EXPRESSIONS, size=16, seed=1)  # other people
    config = training.TrainConfig(
        model="bplf",
        model_kwargs=dict(levels=2, steps=1, hidden=16),
        image_size=16,
        steps=120,
        batch_size=32,
        lr=3e-3,
        warmup_steps=10,
        n_bits=5,
        eval_every=0,
        sample_every=0,
        checkpoint_every=0,
        log_every=0,
        out=None,
        quality_metrics=False,
        tensorboard=False,
        seed=0,
        device="cpu",
    )
    model = training.train(config, train_set, test_set, progress=False, log=lambda m: None).model
    x = preprocess(torch.from_numpy(train_set.images), 5, False)
    y = torch.from_numpy(train_set.labels)
    z = encode(model, x)
    clf = train_expression_classifier(train_set, epochs=20, batch_size=16, width=16, seed=0)
    # Held-out faces: identity-major rows, one column per expression.
    xt = preprocess(torch.from_numpy(test_set.images), 5, False)
    k = len(EXPRESSIONS)
    return {
        "model": model,
        "stats": LatentStatistics.from_latents(z, y),
        "space": ExpressionSpace.fit(z, y),
        "clf": clf,
        "x": xt.reshape(-1, k, *xt.shape[1:]),
        "y": torch.from_numpy(test_set.labels).reshape(-1, k),
    }


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(s, t) for s in range(k) for t in range(k) if s != t]


def test_label_transfer_beats_unedited_source_and_is_recognised(trained: dict) -> None:
    from flowkit.editing import label_transfer
    from flowkit.metrics import expression_accuracy, reconstruction_error, ssim

    x, y = trained["x"], trained["y"]
    pairs = _pairs(x.shape[1])
    src = torch.cat([x[:, s] for s, _ in pairs])
    tgt = torch.cat([x[:, t] for _, t in pairs])
    ys = torch.cat([y[:, s] for s, _ in pairs])
    yt = torch.cat([y[:, t] for _, t in pairs])
    edited = label_transfer(trained["model"], src, ys, yt, trained["stats"])
    assert ssim(edited, tgt) > ssim(src, tgt) + 0.02
    acc = expression_accuracy(trained["clf"], edited, yt)
    ceiling = expression_accuracy(trained["clf"], tgt, yt)
    assert acc > 0.5, (acc, ceiling)
    assert acc > expression_accuracy(trained["clf"], src, yt) + 0.3
    assert reconstruction_error(trained["model"], src) < 1e-4


def test_reference_transfer_moves_towards_target(trained: dict) -> None:
    from flowkit.editing import encode, reference_transfer
    from flowkit.metrics import ssim

    x, y = trained["x"], trained["y"]
    pairs = _pairs(x.shape[1])
    src = torch.cat([x[:, s] for s, _ in pairs])
    tgt = torch.cat([x[:, t] for _, t in pairs])
    # Reference: the next held-out person showing the target expression.
    ref = torch.cat([x.roll(1, dims=0)[:, t] for _, t in pairs])
    yt = torch.cat([y[:, t] for _, t in pairs])
    edited = reference_transfer(trained["model"], src, ref, trained["space"])
    assert ssim(edited, tgt) > ssim(src, tgt)
    # The LDA on latents recognises the reference's expression in the swapped latent.
    space = trained["space"]
    swapped = space.swap(encode(trained["model"], src), encode(trained["model"], ref))
    assert space.accuracy(swapped, yt) > 0.5
