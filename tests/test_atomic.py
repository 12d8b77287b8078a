import pytest

from ensam_infer.atomic import atomic_path


def test_the_new_content_replaces_the_file_when_the_block_succeeds(tmp_path):
    target = tmp_path / "out.npz"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.npz.")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing is visible before the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_a_failing_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_suffix_is_kept_for_writers_that_choose_the_format_by_extension(tmp_path):
    with atomic_path(tmp_path / "mask.nii.gz", suffix=".nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "mask.nii.gz").read_bytes() == b"x"
