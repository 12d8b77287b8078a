"""The package as a user gets it: sdist -> wheel -> a fresh venv, run from outside the
checkout with the shipped weights found inside the installed package.

The slow tests build from a copy of the working tree (never leaving build/ or *.egg-info in
the checkout) the way `python -m build` does: the sdist first, then the wheel from the
unpacked sdist. The fresh venv gets the dependencies from the interpreter running the tests
through a .pth line (a venv made with --system-site-packages would see the base
interpreter's packages, which have no torch, not those of the venv running the tests), and
the ensam wheel itself with `pip install --no-index --no-deps`; `pip check` then checks the
wheel's requirements against them. ENSAM_TEST_FULL_INSTALL=1 installs the dependencies
from the package index instead, as a user would (about 2-3 minutes and 1.4 GB here: torch
is pinned to the running version, so pip takes the CPU build on disk and not a new CUDA one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights" / "ensam.pt"
FULL_INSTALL = os.environ.get("ENSAM_TEST_FULL_INSTALL") == "1"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = 600):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc


# ----- quick checks (no build) --------------------------------------------------------------
def test_package_list_names_every_subpackage_and_maps_the_weights():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("ensam_infer", "ensam_napari", "ensam_train")
        for init in (REPO / top).rglob("__init__.py")
    }
    data_only = {"ensam_infer.weights", "ensam_train.configs"}
    assert set(setuptools_cfg["packages"]) == on_disk | data_only
    assert setuptools_cfg["package-dir"] == {"ensam_infer.weights": "weights"}
    assert "*.pt" in setuptools_cfg["package-data"]["ensam_infer.weights"]


def test_version_constant_matches_pyproject():
    import ensam_infer

    assert ensam_infer.__version__ == _pyproject()["project"]["version"]


def test_version_flag_does_not_load_torch():
    proc = _run([sys.executable, "-X", "importtime", "-m", "ensam_infer", "--version"], REPO)
    assert proc.stdout.strip() == f"ensam {_pyproject()['project']['version']}"
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert not imported & {"torch", "numpy", "SimpleITK"}, "--version must stay lazy"


def test_default_weights_in_a_checkout(monkeypatch, tmp_path):
    from ensam_infer.session import default_weights

    monkeypatch.setenv("ENSAM_WEIGHTS", str(tmp_path / "mine.pt"))
    assert default_weights() == tmp_path / "mine.pt"
    monkeypatch.delenv("ENSAM_WEIGHTS")
    if (REPO / "ensam_infer" / "weights").exists():
        pytest.skip("ensam_infer/weights exists in this checkout")
    assert default_weights() == WEIGHTS.resolve()


# ----- build and install (slow) -------------------------------------------------------------
def _copy_source(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored files)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [f for f in listed.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if not files:
        shutil.copytree(
            REPO,
            dest,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "dist", "wheels", "*.egg-info", "__pycache__", ".*cache"
            ),
        )
        return
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("packaging")
    src, dist = root / "src", root / "dist"
    src.mkdir()
    dist.mkdir()
    _copy_source(src)
    t0 = time.perf_counter()
    code = f"from setuptools import build_meta as b; print(b.build_sdist({str(dist)!r}))"
    sdist = dist / _run([sys.executable, "-c", code], src).stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        # the "data" filter exists from Python 3.11.4 / 3.10.12 on; Debian bookworm's
        # 3.11.2 lacks it (the archive is the one just built here)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(root / "unpacked", **safe)
        sdist_names = tar.getnames()
    (unpacked,) = (root / "unpacked").iterdir()
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "--no-index", "-w", dist, unpacked], root)
    (wheel,) = dist.glob("ensam-*.whl")
    print(
        f"sdist + wheel built in {time.perf_counter() - t0:.1f} s; wheel {wheel.stat().st_size} B"
    )
    return {"root": root, "sdist": sdist, "sdist_names": sdist_names, "wheel": wheel}


@pytest.mark.slow
def test_sdist_and_wheel_hold_the_weights_and_no_data(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        infos = {i.filename: i for i in whl.infolist()}
    assert infos["ensam_infer/weights/ensam.pt"].file_size == WEIGHTS.stat().st_size
    assert "ensam_infer/weights/MODEL_CARD.md" in infos
    assert "ensam_train/splits.json" in infos
    tops = {name.split("/")[0] for name in infos}
    assert tops == {
        "ensam_infer",
        "ensam_napari",
        "ensam_train",
        built["wheel"].name.split("-py")[0] + ".dist-info",
    }
    assert not [n for n in infos if n.endswith(".pt") and n != "ensam_infer/weights/ensam.pt"]

    names = [n.split("/", 1)[1] for n in built["sdist_names"] if "/" in n]
    assert "weights/ensam.pt" in names
    data = re.compile(r"\.(npz|npy|nii|nii\.gz|nrrd|mha|pth|ckpt|tar\.gz|zip)$")
    assert not [n for n in names if data.search(n)], "data files in the sdist"
    # only code, configs, docs and the weights; tests/test*.py is setuptools' default.
    allowed = re.compile(
        r"^(PKG-INFO|README\.md|pyproject\.toml|setup\.cfg|ensam\.egg-info(/.*)?|"
        r"ensam_infer(/.*)?|ensam_napari(/.*)?|ensam_train(/.*)?|"
        r"weights(/(ensam\.pt|MODEL_CARD\.md))?|"
        r"tests(/test_\w+\.py)?)$"
    )
    assert not [n for n in names if not allowed.match(n)]


@pytest.mark.slow
def test_installed_wheel_runs_from_anywhere_with_the_shipped_weights(built, tmp_path):
    venv = tmp_path / "venv"
    bindir = venv / "bin"
    _run([sys.executable, "-m", "venv", venv], tmp_path)
    site = Path(
        _run(
            [bindir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
        ).stdout.strip()
    )
    pip = [bindir / "python", "-m", "pip", "--disable-pip-version-check"]
    t0 = time.perf_counter()
    if FULL_INSTALL:
        torch_spec = "torch==" + metadata.version("torch").split("+")[0]
        _run([*pip, "install", "-q", built["wheel"], torch_spec], tmp_path, timeout=1800)
    else:
        here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (site / "_ensam_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
        _run([*pip, "install", "-q", "--no-index", "--no-deps", built["wheel"]], tmp_path)
    # The wheel's requirements are all met (other lines: the venv's own old setuptools).
    check = subprocess.run([*pip, "check"], cwd=tmp_path, capture_output=True, text=True)
    assert not [line for line in check.stdout.splitlines() if line.startswith("ensam ")]
    print(f"install ({'full' if FULL_INSTALL else 'wheel only'}): {time.perf_counter() - t0:.1f} s")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENSAM_WEIGHTS")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"

    def cli(*args: object, exe: str = "ensam"):
        return _run([bindir / exe, *args], tmp_path, env=env)

    version = _pyproject()["project"]["version"]
    assert cli("--version").stdout.strip() == f"ensam {version}"
    assert cli("-m", "ensam_infer", "--version", exe="python").stdout.strip() == f"ensam {version}"
    where = cli(
        "-c",
        "import ensam_infer; from ensam_infer.session import default_weights; "
        "print(ensam_infer.__file__); print(default_weights())",
        exe="python",
    ).stdout.split()
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in where), where
    assert Path(where[1]).name == "ensam.pt" and Path(where[1]).is_file()

    # segment: a NIfTI phantom and a prompt file made by the project's own sample code
    import SimpleITK as sitk

    from ensam_infer.samples import challenge_box, make_phantom

    image, labels = make_phantom((40, 64, 64), np.random.default_rng(3), ["ellipsoid"] * 2)
    img = sitk.GetImageFromArray(image.astype(np.int16) * 4 - 200)
    img.SetSpacing((1.0, 1.0, 2.5))
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    objects = []
    for k in (1, 2):
        b = challenge_box(labels == k)
        box = [b["z_min"], b["z_mid_y_min"], b["z_mid_x_min"]]
        box += [b["z_max"], b["z_mid_y_max"], b["z_mid_x_max"]]
        objects.append({"id": k, "box": box})
    (tmp_path / "p.json").write_text(json.dumps({"coordinates": "voxel", "objects": objects}))
    proc = cli("segment", "--image", "ct.nii.gz", "--prompts", "p.json", "--output", "m.nii.gz")
    line = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"m\.nii\.gz: 2 objects \(1: \d+ voxels, 2: \d+ voxels\), [\d.]+ s", line)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.nii.gz")))
    assert mask.shape == image.shape and (mask > 0).any()
    for k, n in re.findall(r"(\d+): (\d+) voxels", line):
        assert int(n) == int((mask == int(k)).sum())

    # predict: the challenge's npz files from `ensam samples`
    cli("samples", "--out", "samples")
    cli("predict", "--input", "samples/imgs", "--output", "out")
    cases = sorted((tmp_path / "samples" / "imgs").glob("*.npz"))
    assert cases
    for case in cases:
        with np.load(tmp_path / "out" / case.name) as out, np.load(case) as inp:
            assert out["segs"].shape == inp["imgs"].shape and out["segs"].any()
