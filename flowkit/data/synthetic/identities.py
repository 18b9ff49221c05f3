"""Identities: the per-person factors of the synthetic faces, drawn reproducibly per seed.

Identity ``i`` of a seed depends only on ``(seed, i)``: the same person whatever else is drawn.
Units are normalised face units (the image spans about [-1, 1]); colours are RGB 0..255.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from flowkit.data.errors import DataError

# Palettes (RGB 0..255) for identity colours.
_SKIN_LIGHT = np.array([246, 214, 190], np.float32)
_SKIN_DARK = np.array([112, 74, 52], np.float32)
_HAIR = np.array(
    [[30, 24, 20], [74, 48, 30], [120, 82, 48], [196, 160, 96], [150, 62, 30], [150, 150, 150]],
    np.float32,
)
_IRIS = np.array([[70, 44, 26], [52, 90, 140], [70, 110, 60], [40, 30, 25]], np.float32)


@dataclass
class Identities:
    """Identity factors of ``n`` synthetic people (normalised units: the image spans [-1, 1]).

    Every field is a float32 array with ``n`` rows (colours: ``(n, 3)`` RGB 0..255); ``ids``
    are the identity numbers (identity ``i`` of a seed is always the same person).
    """

    ids: np.ndarray
    face_width: np.ndarray
    face_height: np.ndarray
    face_y: np.ndarray
    jaw: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    hair_volume: np.ndarray
    hair_length: np.ndarray
    hairline: np.ndarray
    parting: np.ndarray
    eye_spacing: np.ndarray
    eye_y: np.ndarray
    eye_width: np.ndarray
    eye_height: np.ndarray
    iris: np.ndarray
    brow_thickness: np.ndarray
    brow_length: np.ndarray
    brow_gap: np.ndarray
    nose_length: np.ndarray
    nose_width: np.ndarray
    mouth_y: np.ndarray
    mouth_width: np.ndarray
    lips: np.ndarray
    clothes: np.ndarray
    background: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Identities:
        """Rows selected by an index, slice, index array or mask (repeats allowed)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Identities(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def repeat(self, k: int) -> Identities:
        """Each identity ``k`` times in a row (``a a b b`` for k = 2)."""
        return self[np.repeat(np.arange(len(self)), k)]


def draw_identities(seed: int, n: int, start: int = 0) -> Identities:
    """Identity factors of people ``start .. start+n-1`` of this seed's population.

    Identity ``i`` depends only on ``(seed, i)``, not on ``n`` or on other calls.
    """
    if n < 0 or start < 0:
        raise DataError(f"identities: n and start must be >= 0, got n={n}, start={start}")
    ids = np.arange(start, start + n, dtype=np.int64)
    # One uniform vector per identity from its own stream: reproducible per person.
    u = (
        np.stack([np.random.default_rng([seed, 0x1D, int(i)]).random(32) for i in ids]).astype(
            np.float32
        )
        if n
        else np.zeros((0, 32), np.float32)
    )

    def lerp(j: int, lo: float, hi: float) -> np.ndarray:
        return (lo + (hi - lo) * u[:, j]).astype(np.float32)

    tone = u[:, 4:5] ** 1.3
    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * tone
    skin += (u[:, 5:8] - 0.5) * 14.0  # slight warm/cool variation
    hair = _HAIR[(u[:, 8] * len(_HAIR)).astype(int) % len(_HAIR)]
    hair = hair * (0.8 + 0.4 * u[:, 9:10])
    iris = _IRIS[(u[:, 10] * len(_IRIS)).astype(int) % len(_IRIS)]
    lips = skin * np.array([0.82, 0.56, 0.56], np.float32) + np.array([18, 0, 4], np.float32)
    clothes = 40.0 + 180.0 * u[:, 11:14]
    bg_level = 90.0 + 130.0 * u[:, 14:15]
    background = bg_level + (u[:, 15:18] - 0.5) * 50.0
    face_width = lerp(0, 0.50, 0.61)
    return Identities(
        ids=ids,
        face_width=face_width,
        face_height=lerp(1, 0.66, 0.76),
        face_y=lerp(2, 0.04, 0.10),
        jaw=lerp(3, 0.05, 0.35),
        skin=np.clip(skin, 0, 255).astype(np.float32),
        hair=np.clip(hair, 0, 255).astype(np.float32),
        hair_volume=lerp(19, 0.03, 0.16),
        hair_length=lerp(20, -0.05, 0.75),
        hairline=lerp(21, -0.58, -0.40),
        parting=lerp(22, -0.25, 0.25),
        eye_spacing=lerp(23, 0.19, 0.25) * face_width / 0.555,
        eye_y=lerp(24, -0.10, -0.02),
        eye_width=lerp(25, 0.075, 0.095),
        eye_height=lerp(26, 0.036, 0.048),
        iris=iris.astype(np.float32),
        brow_thickness=lerp(27, 0.022, 0.036),
        brow_length=lerp(28, 0.08, 0.11),
        brow_gap=lerp(29, 0.10, 0.13),
        nose_length=lerp(30, 0.16, 0.24),
        nose_width=lerp(31, 0.045, 0.075),
        mouth_y=lerp(18, 0.34, 0.42),
        mouth_width=lerp(16, 0.15, 0.20),
        lips=np.clip(lips, 0, 255).astype(np.float32),
        clothes=clothes.astype(np.float32),
        background=np.clip(background, 0, 255).astype(np.float32),
    )
