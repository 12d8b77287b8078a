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
