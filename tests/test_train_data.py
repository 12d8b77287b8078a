"""On-the-fly training volumes: label maps, procedural shapes, synthesis and the sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from ensam_train.data.intensity import RealIntensity, gamma_lut, random_intensity
from ensam_train.data.label_maps import (
    discover_label_maps,
    downsample_labels,
    load_label_map,
    read_label_map,
    remap_consecutive,
)
from ensam_train.data.sampler import VolumeSampler, pick_target
from ensam_train.data.shapes import (
    SHAPE_KINDS,
    blobs,
    cells,
    random_shape_label_map,
    sheets,
    tubes,
)
from ensam_train.data.synth import (
    random_deform,
    random_deform_pair,
    smooth_field,
    synthesize,
    synthesize_image,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL = (40, 48, 44)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def need_data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present ({path})")
    return path


# ------------------------------------------------------------------ fields and deformation
def test_smooth_field_is_smooth_and_seeded():
    a = smooth_field(SMALL, 4, rng(1))
    assert a.shape == SMALL and a.dtype == np.float32
    assert np.array_equal(a, smooth_field(SMALL, 4, rng(1)))
    # neighbouring voxels differ far less than the field varies overall
    assert np.abs(np.diff(a, axis=0)).mean() < 0.2 * a.std()


def test_deform_identity_when_disabled():
    lab = blobs(SMALL, rng(2), n_blobs=3)
    out = random_deform(lab, rng(3), max_rotation_deg=0, scale_range=(1, 1), elastic_prob=0)
    assert np.array_equal(out, lab)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deform_keeps_labels_mostly(seed):
    lab = cells(SMALL, rng(seed), dense=False)
    out = random_deform(lab, rng(100 + seed))
    assert out.shape == lab.shape and out.dtype == lab.dtype
    assert np.array_equal(out, random_deform(lab, rng(100 + seed)))
    before, after = set(np.unique(lab)), set(np.unique(out))
    assert after <= before
    assert len(after) >= 0.8 * len(before)
    assert 0.6 < (out > 0).sum() / (lab > 0).sum() < 1.6


def test_deform_pair_matches_labels_and_keeps_image_dtype():
    lab = blobs(SMALL, rng(4), n_blobs=2)
    image = synthesize_image(lab, rng(5))
    img2, lab2 = random_deform_pair(image, lab, rng(6))
    assert np.array_equal(lab2, random_deform(lab, rng(6)))
    assert img2.dtype == np.uint8 and img2.shape == image.shape


# ------------------------------------------------------------------ procedural shapes
@pytest.mark.parametrize("kind", list(SHAPE_KINDS))
def test_shape_kinds_seeded_consecutive(kind):
    lab = SHAPE_KINDS[kind](SMALL, rng(7))
    assert lab.shape == SMALL and lab.dtype.kind in "iu"
    assert np.array_equal(lab, SHAPE_KINDS[kind](SMALL, rng(7)))
    ids = np.unique(lab)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(ids.size)) and ids.size > 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tubes_one_label_per_tree_thin(seed):
    lab = tubes((48, 48, 48), rng(seed), n_tubes=3)
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    for t in (1, 2, 3):
        m = lab == t
        # radius <= 5: eroding by 6 voxels removes the tube (a little may stay where
        # branches cross)
        assert ndi.binary_erosion(m, iterations=6).sum() <= 0.01 * m.sum()
        assert m.sum() >= 20


@pytest.mark.parametrize("seed", [0, 1])
def test_sheets_are_thin(seed):
    lab = sheets((48, 48, 48), rng(seed), n_sheets=2)
    assert 1 <= lab.max() <= 2
    for s in range(1, lab.max() + 1):
        m = lab == s
        assert m.sum() > 50
        # 1-3 voxels thick: two erosions leave (almost) nothing
        assert ndi.binary_erosion(m, iterations=2).sum() <= 0.1 * m.sum()


@pytest.mark.parametrize("dense", [False, True])
def test_cells_are_many_separate_objects(dense):
    lab = cells((48, 48, 48), rng(8), dense=dense)
    assert lab.max() > 10
    sizes = np.bincount(lab.ravel())[1:]
    assert (sizes > 0).all()
    assert np.median(sizes) < 0.05 * lab.size  # small relative to the view


def test_blobs_count():
    lab = blobs((48, 48, 48), rng(9), n_blobs=4)
    assert 2 <= lab.max() <= 4
    assert (np.bincount(lab.ravel())[1:] >= 20).all()


def test_random_shape_label_map_always_has_objects():
    for seed in range(8):
        assert random_shape_label_map((32, 36, 40), rng(seed)).max() >= 1


# ------------------------------------------------------------------ synthesis
def test_synthesize_image_seeded_uint8_full_range():
    lab = cells((32, 32, 32), rng(10))
    for seed in range(12):
        img = synthesize_image(lab, rng(seed))
        assert img.dtype == np.uint8 and img.shape == lab.shape
        assert img.min() == 0 and img.max() == 255
        assert np.array_equal(img, synthesize_image(lab, rng(seed)))
    assert not np.array_equal(synthesize_image(lab, rng(0)), synthesize_image(lab, rng(1)))


def test_synthesize_pair_seeded():
    lab = blobs((32, 32, 32), rng(11), n_blobs=3)
    img1, lab1 = synthesize(lab, rng(12))
    img2, lab2 = synthesize(lab, rng(12))
    assert np.array_equal(img1, img2) and np.array_equal(lab1, lab2)


# ------------------------------------------------------------------ label maps (synthetic file)
def _write_kits_like(path: Path) -> np.ndarray:
    """A label map stored like KiTS19: slice axis last in the array, direction permuted."""
    zyx = np.zeros((30, 40, 50), dtype=np.uint8)  # the intended (z, y, x) content
    zyx[5:10, 10:20, 20:30] = 7
    zyx[20:25, 5:25, 5:45] = 3
    arr = zyx.transpose(2, 1, 0)  # numpy (k, j, i) = (x, y, z): index i runs along z
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.5, 0.8, 0.9))  # i (physical z), j (y), k (x)
    img.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))
    sitk.WriteImage(img, str(path))
    return zyx


def test_read_label_map_reorients_to_zyx(tmp_path):
    zyx = _write_kits_like(tmp_path / "case.nii.gz")
    lab, spacing = read_label_map(tmp_path / "case.nii.gz")
    assert np.array_equal(lab, zyx)
    assert np.allclose(spacing, [2.5, 0.8, 0.9])


def test_load_label_map_downsamples_remaps_and_caches(tmp_path):
    src = tmp_path / "maps" / "kits19"
    src.mkdir(parents=True)
    _write_kits_like(src / "case_1.nii.gz")
    assert list(discover_label_maps(tmp_path / "maps")) == ["kits19"]
    cache = tmp_path / "cache"
    lab, spacing = load_label_map(src / "case_1.nii.gz", max_size=16, cache_dir=cache)
    assert max(lab.shape) <= 16 and lab.dtype == np.uint8
    assert set(np.unique(lab)) == {0, 1, 2}  # 3, 7 -> 1, 2
    assert len(list(cache.glob("*.npz"))) == 1
    lab2, spacing2 = load_label_map(src / "case_1.nii.gz", max_size=16, cache_dir=cache)
    assert np.array_equal(lab, lab2) and np.allclose(spacing, spacing2)


def test_downsample_and_remap_helpers():
    lab = np.zeros((20, 200, 100), dtype=np.int32)
    lab[5:15, 50:150, 20:80] = 530
    out, sp = downsample_labels(lab, np.array([5.0, 1.0, 1.0]), max_size=50)
    assert max(out.shape) <= 50 and out.shape[0] == 20  # the thick axis is not thinned
    assert np.allclose(sp, [5.0, 4.0, 4.0])
    rem, orig = remap_consecutive(out)
    assert set(np.unique(rem)) == {0, 1} and list(orig) == [530]


def test_discover_missing_root(tmp_path):
    assert discover_label_maps(tmp_path / "nowhere") == {}


# ------------------------------------------------------------------ sampler
def test_pick_target():
    lab = np.zeros((10, 10, 10), dtype=np.int32)
    lab[:2, :2, :2] = 1  # 8 voxels: too small while a bigger object exists
    lab[5:, 5:, 5:] = 2
    for seed in range(5):
        m = pick_target(lab, rng(seed), min_voxels=10)
        assert m.dtype == bool and np.array_equal(m, lab == 2)
    assert pick_target(lab == 1, rng(0), min_voxels=10).sum() == 8  # fallback
    with pytest.raises(ValueError):
        pick_target(np.zeros((4, 4, 4), dtype=np.int32), rng(0))


def test_sampler_only_shapes_when_roots_missing(tmp_path):
    s = VolumeSampler(tmp_path / "none", tmp_path / "none", None, max_size=64, synth_size=48)
    assert s.sources == ["shapes"]
    for seed in range(4):
        img, lab, sp = s.sample(rng(seed))
        assert img.dtype == np.uint8 and img.shape == lab.shape and max(img.shape) <= 48
        assert lab.dtype.kind in "iu" and sp.shape == (3,)
        assert pick_target(lab, rng(seed)).sum() >= 10
        img2, lab2, _ = s.sample(rng(seed))
        assert np.array_equal(img, img2) and np.array_equal(lab, lab2)


def test_sampler_errors(tmp_path):
    with pytest.raises(RuntimeError, match="no source"):
        VolumeSampler(tmp_path / "none", tmp_path / "none", None, probs={"atlas": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        VolumeSampler(tmp_path / "none", tmp_path / "none", None, probs={"synthetic": 1.0})
    with pytest.warns(UserWarning, match="not found"):
        s = VolumeSampler(tmp_path / "none", tmp_path / "none", ["missing_case"])
    assert s.sources == ["shapes"]


def test_gamma_lut_hand_values():
    lut = gamma_lut(2.0)
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    # 255 (v / 255)^2: 128 -> 64.25 -> 64, 200 -> 156.86 -> 157; the ends stay
    assert (lut[0], lut[128], lut[200], lut[255]) == (0, 64, 157, 255)
    assert np.array_equal(gamma_lut(1.0), np.arange(256))


def test_random_intensity_off_keeps_the_image():
    image = rng(1).integers(0, 256, SMALL).astype(np.uint8)
    out = random_intensity(image, rng(2), RealIntensity(p=0.0))
    assert out is image


def test_random_intensity_inverts_positive_values_only():
    image = np.array([[[0, 1, 2, 100, 254, 255]]], np.uint8)
    exact = RealIntensity(p=1.0, gamma_sigma=0.0, p_invert=1.0)
    out = random_intensity(image, rng(0), exact)
    assert out.tolist() == [[[0, 255, 254, 156, 2, 1]]]
    assert image.tolist() == [[[0, 1, 2, 100, 254, 255]]]  # the cached original untouched


@pytest.mark.parametrize("seed", range(6))
def test_random_intensity_keeps_background_tissue_and_order(seed):
    image = rng(seed).integers(0, 256, SMALL).astype(np.uint8)
    settings = RealIntensity(p=1.0, gamma_sigma=1.0, p_invert=0.5)
    out = random_intensity(image, rng(seed), settings)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out == 0, image == 0)  # zero stays zero, tissue stays tissue
    assert np.array_equal(out, random_intensity(image, rng(seed), settings))  # seeded
    # a monotonic map of the positive values, rising or (inverted) falling
    values = np.arange(1, 256, dtype=np.uint8)[None, None]
    mapped = random_intensity(values, rng(seed), settings).ravel().astype(int)
    steps = np.diff(mapped)
    assert (steps >= 0).all() or (steps <= 0).all()


def test_random_intensity_draws_the_same_whatever_it_applies():
    image = np.ones((2, 2, 2), np.uint8)
    for settings in (RealIntensity(p=0.0), RealIntensity(p=1.0, p_invert=1.0)):
        r = rng(5)
        random_intensity(image, r, settings)
        assert r.random() == pytest.approx(_after_three_draws(5))


def _after_three_draws(seed: int) -> float:
    r = rng(seed)
    r.random(2)
    r.normal()
    return float(r.random())


def test_real_intensity_from_config():
    assert RealIntensity.from_config(None) is None
    assert RealIntensity.from_config({}) is None
    assert RealIntensity.from_config({"p_invert": 0.0}) == RealIntensity(p_invert=0.0)
    with pytest.raises(ValueError, match="gamma_sigm"):
        RealIntensity.from_config({"gamma_sigm": 0.1})


def test_sampler_changes_real_images_only_when_asked(tmp_path):
    image = rng(3).integers(1, 256, SMALL).astype(np.uint8)
    labels = np.zeros(SMALL, np.uint8)
    labels[10:20, 10:30, 10:30] = 1
    for sub, key, arr in (("imgs", "imgs", image), ("gts", "gts", labels)):
        (tmp_path / "real" / sub).mkdir(parents=True)
        np.savez(tmp_path / "real" / sub / "CT_case.npz", **{key: arr, "spacing": (1.0, 1.0, 2.0)})
    kw = dict(probs={"real": 1.0}, max_size=64)
    plain = VolumeSampler(tmp_path / "none", tmp_path, ["real/CT_case"], **kw)
    assert np.array_equal(plain.sample(rng(0))[0], image)
    changed = VolumeSampler(
        tmp_path / "none", tmp_path, ["real/CT_case"], real_intensity=RealIntensity(p=1.0), **kw
    )
    out, lab, _ = changed.sample(rng(0))
    assert not np.array_equal(out, image) and np.array_equal(lab, labels)
    assert np.array_equal(out, changed.sample(rng(0))[0])
    assert np.array_equal(plain.sample(rng(0))[0], image)  # the cached copy is intact


# ------------------------------------------------------------------ shared data
@pytest.mark.data
def test_real_label_maps(tmp_path):
    root = need_data("label_maps")
    found = discover_label_maps(root)
    assert {"kits19", "synthseg", "tcia_hn"} <= set(found)
    picks = {
        "synthseg": root / "synthseg" / "training_seg_02.nii.gz",
        "kits19": root / "kits19" / "case_00207.nii.gz",
        "tcia_hn": root / "tcia_hn" / "test_oncologist_0522c0017.nii.gz",
    }
    for name, path in picks.items():
        lab, spacing = load_label_map(path, max_size=128, cache_dir=tmp_path)
        assert max(lab.shape) <= 128 and spacing.shape == (3,) and (spacing > 0).all()
        ids = np.unique(lab)
        if name != "tcia_hn":
            assert np.array_equal(ids, np.arange(ids.size))  # remapped to 0..K
        assert ids.size >= 2
    # KiTS19 stores the slice axis last: it must come out first (5 mm slices)
    _, spacing = load_label_map(picks["kits19"], max_size=128, cache_dir=tmp_path)
    assert spacing[0] == pytest.approx(5.0)


@pytest.mark.data
def test_sampler_with_shared_data(tmp_path):
    root = need_data("label_maps")
    real = need_data("real")
    maps = tmp_path / "maps"
    for ds, name in [("tcia_hn", "test_oncologist_0522c0017.nii.gz")]:
        (maps / ds).mkdir(parents=True)
        (maps / ds / name).symlink_to(root / ds / name)
    cases = ["MR_sct_t2s_cord_gm", "Microscopy_stardist_synthetic_nuclei"]
    kw = dict(cache_dir=tmp_path / "cache", max_size=64, synth_size=48)
    s = VolumeSampler(maps, real, cases, **kw)
    assert s.sources == ["atlas", "shapes", "real"]

    atlas = VolumeSampler(maps, real, cases, probs={"atlas": 1.0}, **kw)
    for seed in range(3):
        img, lab, sp = atlas.sample(rng(seed))
        assert img.dtype == np.uint8 and img.shape == lab.shape and max(img.shape) <= 48
        assert pick_target(lab, rng(seed)).sum() >= 10
        img2, lab2, sp2 = atlas.sample(rng(seed))
        assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
        assert np.allclose(sp, sp2)

    only_real = VolumeSampler(maps, real, cases[:1], probs={"real": 1.0}, **kw)
    img, lab, sp = only_real.sample(rng(0))
    with np.load(real / "imgs" / f"{cases[0]}.npz", allow_pickle=True) as z:
        assert np.array_equal(img, z["imgs"])  # small enough: used as it is
        assert np.allclose(sp, z["spacing"][::-1])  # (x, y, z) on disk -> (z, y, x)
    assert set(np.unique(lab)) == {0, 1, 2}
