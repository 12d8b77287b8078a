"""Shared fixtures: a tiny untrained checkpoint (the pipeline must run with any weights that
build_model produces) and the sample organ phantom with its objects' boxes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ensam_infer.model import build_model, save_checkpoint
from ensam_infer.samples import SAMPLES, make_phantom


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(build_model("ensam_tiny"), path)
    return path


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return build_model("ensam_tiny").eval()


@pytest.fixture(autouse=True)
def _quiet_untrained_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
        yield


@pytest.fixture(scope="session")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """The organs sample's (image, labels), as `python -m ensam_infer samples` makes it."""
    shape, kinds, _ = SAMPLES["Sample_phantom_organs"]
    return make_phantom(shape, np.random.default_rng(0), kinds)


def mask_bbox(mask: np.ndarray) -> tuple[int, ...]:
    """(z0, y0, x0, z1, y1, x1) of a mask, inclusive: a user's box drawn tight around it."""
    idx = np.nonzero(mask)
    return tuple(int(v.min()) for v in idx) + tuple(int(v.max()) for v in idx)


# The blend rule's scene (tests of the session and of the container cache): a 48 x 128 x 128
# volume is pooled 1 x 4 x 4 at BLEND_CAP, a crop around the large object 1 x 2 x 2; the large
# object spans 12 x 11 x 11 pooled voxels of the whole volume's view (blended), the thin one
# 20 x 1.5 x 1.5 (not).
BLEND_CAP = 131072
BLEND_LARGE = (slice(10, 22), slice(30, 74), slice(30, 74))
BLEND_THIN = (slice(10, 30), slice(60, 66), slice(60, 66))


def blend_image(*objects: tuple[slice, slice, slice]) -> np.ndarray:
    """The blend scene's image: `objects` bright on a dark background."""
    image = np.full((48, 128, 128), 30, np.uint8)
    for region in objects:
        image[region] = 220
    return image
