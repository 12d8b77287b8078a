import json

import numpy as np
import pytest
import SimpleITK as sitk

from ensam_infer.prompts import PromptError
from ensam_infer.volumes import read_prompts, read_volume, write_mask


@pytest.fixture
def nifti(tmp_path):
    arr = np.zeros((10, 20, 30), np.int16)
    arr[3:6, 5:10, 10:20] = 500
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.8, 2.0))  # (x, y, z)
    img.SetOrigin((10.0, -20.0, 5.0))
    path = tmp_path / "img.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def test_read_volume_gives_zyx_array_and_spacing(nifti):
    vol = read_volume(nifti)
    assert vol.array.shape == (10, 20, 30)
    assert vol.spacing_zyx == pytest.approx((2.0, 0.8, 0.5))


def test_world_prompts_map_to_voxel_indices(nifti, tmp_path):
    vol = read_volume(nifti)
    # voxel (z=4, y=7, x=15) lies at x = 10 + 15*0.5, y = -20 + 7*0.8, z = 5 + 4*2
    world = [10 + 15 * 0.5, -20 + 7 * 0.8, 5 + 4 * 2.0]
    spec = {
        "coordinates": "world",
        "objects": [
            {
                "id": 2,
                "box": [[10 + 10 * 0.5, -20 + 5 * 0.8, 5 + 3 * 2.0], world],
                "clicks": [{"point": world, "positive": False}],
            }
        ],
    }
    (tmp_path / "p.json").write_text(json.dumps(spec))
    objects, window = read_prompts(tmp_path / "p.json", vol)
    assert window is None
    assert objects[2].box.lo == (3, 5, 10) and objects[2].box.hi == (4, 7, 15)
    assert objects[2].points == [(4, 7, 15)] and objects[2].positive == [False]


def test_voxel_prompts_and_window(nifti, tmp_path):
    vol = read_volume(nifti)
    spec = {"window": [0, 400], "objects": [{"box": [3, 5, 10, 5, 9, 19]}]}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    objects, window = read_prompts(tmp_path / "p.json", vol)
    assert window == (0, 400) and objects[1].box.hi == (5, 9, 19)


def test_bad_prompt_files(nifti, tmp_path):
    vol = read_volume(nifti)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PromptError, match="cannot read"):
        read_prompts(tmp_path / "bad.json", vol)
    (tmp_path / "empty.json").write_text(json.dumps({"objects": []}))
    with pytest.raises(PromptError, match="no objects"):
        read_prompts(tmp_path / "empty.json", vol)


def test_mask_keeps_the_image_geometry(nifti, tmp_path):
    vol = read_volume(nifti)
    mask = np.zeros(vol.array.shape, np.uint8)
    mask[3:6, 5:10, 10:20] = 1
    out = tmp_path / "mask.nii.gz"
    write_mask(out, mask, vol)
    back = sitk.ReadImage(str(out))
    assert back.GetSpacing() == pytest.approx((0.5, 0.8, 2.0))
    assert back.GetOrigin() == pytest.approx((10.0, -20.0, 5.0))
    assert (sitk.GetArrayFromImage(back) == mask).all()
    assert not list(tmp_path.glob(".mask*"))  # no temporary file left behind


def test_unreadable_image_is_a_clear_error(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        read_volume(tmp_path / "x.nii.gz")
