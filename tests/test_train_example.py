import numpy as np

from ensam_train.example import make_example, single_slice


def _ball_mask() -> np.ndarray:
    z, y, x = np.ogrid[:20, :30, :30]
    return (z - 10) ** 2 + (y - 15) ** 2 + (x - 15) ** 2 <= 36


def test_single_slice_keeps_one_substantial_slice_of_the_object():
    mask = _ball_mask()
    for seed in range(20):
        out = single_slice(mask, np.random.default_rng(seed))
        rows = np.flatnonzero(out.any(axis=(1, 2)))
        assert rows.size == 1
        z = int(rows[0])
        assert np.array_equal(out[z], mask[z])
        # at least a tenth of the largest slice: the ball's tips (1 voxel) never qualify
        assert out[z].sum() >= mask.sum(axis=(1, 2)).max() // 10


def test_single_slice_examples_have_a_one_slice_box():
    image = (_ball_mask() * 200).astype(np.uint8)
    ex = make_example(
        image,
        _ball_mask(),
        np.random.default_rng(0),
        max_voxels=20 * 30 * 30,
        p_no_box=0.0,
        augment=False,
        p_single_slice=1.0,
    )
    z0, _, _, z1, _, _ = ex.box
    assert z0 == z1
    assert np.flatnonzero(ex.target[0].sum(axis=(1, 2)) > 0).tolist() == [z0]


def test_examples_are_unchanged_when_single_slices_are_off():
    args = (np.zeros((20, 30, 30), np.uint8), _ball_mask())
    a = make_example(*args, np.random.default_rng(3), max_voxels=4096)
    b = make_example(*args, np.random.default_rng(3), max_voxels=4096, p_single_slice=0.0)
    assert a.box == b.box and np.array_equal(a.target, b.target)
