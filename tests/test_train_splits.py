import re
from pathlib import Path

import pytest

from ensam_train.splits import case_files, load_split, shared_data_root


def test_entries_resolve_to_image_and_label_files():
    img, gts = case_files(Path("/data"), "real_more/PET_STS_001_gtv")
    assert img == Path("/data/real_more/imgs/PET_STS_001_gtv.npz")
    assert gts == Path("/data/real_more/gts/PET_STS_001_gtv.npz")
    assert case_files(Path("/data/real"), "MR_monai_anatomical")[0] == Path(
        "/data/real/imgs/MR_monai_anatomical.npz"
    )


def test_no_case_and_no_sarcoma_patient_on_both_sides():
    train, val = load_split("training"), load_split("validation")
    assert not set(train) & set(val)
    patient = re.compile(r"_STS_(\d{3})_")

    def patients(entries: list[str]) -> set[str]:
        return {m.group(1) for e in entries if (m := patient.search(e))}

    # CT, MR and PET of one patient show the same tumour: all on one side
    assert not patients(train) & patients(val)
    assert len(patients(val)) == 8


def test_split_entries_exist_in_the_shared_data():
    root = shared_data_root()
    if not (root / "real_more").is_dir():
        pytest.skip("no shared data")
    for entry in load_split("training") + load_split("validation"):
        assert all(p.is_file() for p in case_files(root, entry)), entry
