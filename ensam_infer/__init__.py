"""ENSAM inference: a promptable 3D segmentation model (box + clicks) and the challenge I/O."""

# Kept equal to [project].version in pyproject.toml (tests/test_packaging.py checks it). It is
# what a checkout reports; an installed package reports its metadata (`version()`).
__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version when this code is that distribution's, else
    `__version__` (a checkout, an editable install, or another copy installed elsewhere)."""
    from importlib import metadata
    from pathlib import Path

    try:
        dist = metadata.distribution("ensam")
    except metadata.PackageNotFoundError:
        return __version__
    ours = Path(str(dist.locate_file("ensam_infer/__init__.py")))
    if ours.is_file() and ours.resolve() == Path(__file__).resolve():
        return dist.version
    return __version__
