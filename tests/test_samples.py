import numpy as np

from ensam_infer.challenge import read_case
from ensam_infer.samples import SAMPLES, write_samples


def test_samples_are_valid_challenge_cases_with_labels(tmp_path):
    paths = write_samples(tmp_path)
    assert len(paths) == len(SAMPLES)
    for path in paths:
        case = read_case(path)
        gts = np.load(tmp_path / "gts" / path.name)["gts"]
        assert gts.shape == case.image.shape
        assert set(np.unique(gts)) == set(range(case.num_classes + 1))
        assert not case.warnings
        for k, obj in enumerate(case.objects, start=1):
            if case.has_boxes:
                # the box's z-range and mid-slice extent hold the object there
                lo, hi = obj.box.lo, obj.box.hi
                zs = np.flatnonzero((gts == k).any(axis=(1, 2)))
                assert (lo[0], hi[0]) == (zs.min(), zs.max())
            else:
                assert obj.positive == [True]
                assert gts[obj.points[0]] == k


def test_samples_are_deterministic(tmp_path):
    a = write_samples(tmp_path / "a", seed=3)
    b = write_samples(tmp_path / "b", seed=3)
    for pa, pb in zip(a, b, strict=True):
        assert (np.load(pa)["imgs"] == np.load(pb)["imgs"]).all()
