"""Packed training data (a GPU burst's copy): the sampler draws the same volumes from it."""

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ensam_train.data.sampler import VolumeSampler
from ensam_train.pack import pack_training_data
from ensam_train.splits import case_files, load_split


def _label_map(path: Path, shape=(40, 70, 60), spacing_xyz=(0.8, 0.8, 2.5)) -> None:
    labels = np.zeros(shape, np.uint8)
    labels[5:30, 10:50, 8:40] = 1
    labels[12:20, 20:35, 15:30] = 2
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing_xyz)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _real_case(root: Path, case: str, shape=(30, 140, 120)) -> None:
    rng = np.random.default_rng(0)
    gts = np.zeros(shape, np.uint8)
    gts[8:20, 30:90, 40:100] = 1
    imgs = (rng.integers(0, 50, shape) + gts * 150).astype(np.uint8)
    image_file, labels_file = case_files(root, case)
    image_file.parent.mkdir(parents=True, exist_ok=True)
    labels_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(image_file, imgs=imgs, spacing=np.array([0.7, 0.7, 3.0]))
    np.savez_compressed(labels_file, gts=gts)


def test_the_sampler_draws_the_same_volumes_from_the_pack(tmp_path, monkeypatch):
    monkeypatch.setenv("ENSAM_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "shared"
    _label_map(root / "label_maps" / "btcv" / "label0001.nii.gz")
    _label_map(root / "label_maps" / "kits19" / "case_0001.nii.gz", shape=(50, 120, 110))
    train_case, val_case = load_split("training")[0], load_split("validation")[0]
    _real_case(root, train_case)
    _real_case(root, val_case)
    counts = pack_training_data(tmp_path / "pack", root, max_size=48)
    assert counts["label_maps"] == 2 and counts["real_cases"] == 1 and counts["bytes"] > 0
    assert (tmp_path / "pack" / "label_maps" / "kits19" / "case_0001.npz").is_file()
    assert not case_files(tmp_path / "pack", val_case)[0].exists()  # never the held-out cases
    packed_img = np.load(case_files(tmp_path / "pack", train_case)[0])["imgs"]
    assert max(packed_img.shape) <= 48

    def sampler(data: Path) -> VolumeSampler:
        return VolumeSampler(data / "label_maps", data, real_cases=[train_case], max_size=48,
                             synth_size=48, probs={"atlas": 0.5, "real": 0.5})  # fmt: skip

    original, packed = sampler(root), sampler(tmp_path / "pack")
    sources = set()
    for i in range(12):
        a = original.sample(np.random.default_rng([3, i]))
        b = packed.sample(np.random.default_rng([3, i]))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        sources.add(a[0].shape)
    assert len(sources) > 1  # both sources were drawn
