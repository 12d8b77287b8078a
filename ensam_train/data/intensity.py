"""Random intensity changes for real training images (uint8, 0 = background).

Synthesized images get a random intensity per label, so the network never sees one contrast
twice; real cases arrive with the contrast of their scanner and sequence. Drawn from the
training split many times over (60 % of the real-heavy mix), a real case teaches its own
appearance: a soft-tissue sarcoma is mid-grey in most training MR cases, and the same tumour
bright on another sequence is then a different object. A random gamma and, now and then, an
inverted contrast keep the shape and the prompts' meaning while the grey values move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RealIntensity", "gamma_lut", "random_intensity"]


@dataclass(frozen=True)
class RealIntensity:
    """How real images are changed: with probability `p` at all; then a gamma of
    exp(N(0, `gamma_sigma`)) (clipped to [1/`gamma_max`, `gamma_max`]) and, with
    probability `p_invert`, the positive grey values inverted."""

    p: float = 0.8
    gamma_sigma: float = 0.4
    gamma_max: float = 2.5
    p_invert: float = 0.2

    @classmethod
    def from_config(cls, value: dict | None) -> RealIntensity | None:
        """The config's ``data.real_intensity`` (None or {} is off: real images unchanged)."""
        if not value:
            return None
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown real_intensity keys: {sorted(unknown)}")
        return cls(**value)


def gamma_lut(gamma: float) -> np.ndarray:
    """A 256-entry uint8 lookup table for v → 255 (v / 255)^gamma (0 stays 0, 255 stays 255)."""
    return np.rint(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)


def random_intensity(
    image: np.ndarray, rng: np.random.Generator, settings: RealIntensity
) -> np.ndarray:
    """A new uint8 image: `image` with a random gamma and maybe inverted positive values.

    Zero stays zero and positive stays positive: the network input treats voxels <= 0 as
    background (`ensam_infer.roi.scale_intensity`), and air or padding outside a field of
    view must not turn into tissue, nor dim tissue into background. Inverted values map
    1..255 onto 255..1. Always three draws from `rng`, whatever is applied, so the example
    stream stays a pure function of its seed."""
    apply, invert = rng.random(2)
    gamma = float(np.exp(rng.normal(0.0, settings.gamma_sigma)))
    if apply >= settings.p:
        return image
    gamma = float(np.clip(gamma, 1.0 / settings.gamma_max, settings.gamma_max))
    lut = gamma_lut(gamma)
    lut[1:] = np.maximum(lut[1:], 1)  # a dim tissue voxel must not become background
    if invert < settings.p_invert:
        lut[1:] = 256 - lut[1:].astype(np.int16)
    return lut[image]
