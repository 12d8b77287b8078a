"""Shared fixtures: a tiny untrained checkpoint (the pipeline must run with any weights that
build_model produces) and the location of the optional shared data."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from ensam_infer.model import build_model, save_checkpoint

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


def shared_case(name: str) -> tuple[Path, Path]:
    img = SHARED_DATA / "real" / "imgs" / f"{name}.npz"
    gts = SHARED_DATA / "real" / "gts" / f"{name}.npz"
    if not img.is_file():
        pytest.skip(f"shared data not present ({img})")
    return img, gts
