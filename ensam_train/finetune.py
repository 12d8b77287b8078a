"""Fine-tune ENSAM on a user's own labelled folder: `ensam finetune --data DIR --run-dir RUN`.

DIR holds image + label pairs matched by name, in one of these layouts:

* ``imagesTr/X.nii.gz`` + ``labelsTr/X.nii.gz`` (nnU-Net; images may carry the ``_0000``
  channel suffix, other channels are ignored);
* ``images/X.nii.gz`` + ``labels/X.nii.gz`` (NIfTI, NRRD, MHA: anything SimpleITK reads);
* ``imgs/X.npz`` (key ``imgs``) + ``gts/X.npz`` (key ``gts``): challenge files.

A part of the cases (``val_fraction``, at least one, chosen by ``seed``) is held out: it is
written as challenge npz files to ``RUN/heldout/`` and scored with the challenge's 6-step
protocol before (``RUN/eval_before/``) and after (``RUN/eval_after/``) training. The rest
trains the model through ``ensam_train.train.train`` (its checkpoint, resume, metrics and
plot), so re-running the same command continues an interrupted run. ``RUN/model.pt`` is an
inference checkpoint (``ensam predict --weights RUN/model.pt``).

Images are windowed to uint8 as the session windows them (``to_uint8``: 0.5-99.5
percentiles), so training sees what inference sees. Labels are renumbered 1..K per case.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ensam_infer.volumes import VOLUME_SUFFIXES, volume_stem

LAYOUTS = (("imagesTr", "labelsTr"), ("images", "labels"), ("imgs", "gts"))
LAYOUT_HELP = "imagesTr/+labelsTr/, images/+labels/ (NIfTI, NRRD, MHA) or imgs/+gts/ (npz)"
_CHANNEL = re.compile(r"^(.*)_(\d{4})$")

# Fine-tuning settings on top of ensam_train.config.DEFAULTS and the source weights' own
# training settings (crop size, click steps, accumulation, ...); `overrides` replace them.
FINETUNE_TRAIN = {
    "lr": 5e-4,
    "warmup": 20,
    "milestones": [],
    "val_objects": 0,
    "log_every": 5,
    "checkpoint_minutes": 2.0,
}
INHERITED_TRAIN = (
    "optimizer",
    "weight_decay",
    "max_voxels",
    "click_steps",
    "accumulate",
    "clip",
    "cpu_bf16",
)
INHERITED_DATA = ("p_no_box", "p_single_slice")
TRAIN_MAX_SIZE = 256  # training copies: largest axis at most this (spacing-aware, nearest)


class FinetuneError(ValueError):
    """A problem with the user's data or run folder, said in one line."""


@dataclass
class CasePair:
    name: str
    image: Path
    labels: Path
    kind: str  # "sitk" or "npz"


@dataclass
class Case:
    name: str
    image: np.ndarray  # uint8 (z, y, x)
    labels: np.ndarray  # uint8 (z, y, x), 1..K
    spacing: np.ndarray  # (z, y, x) mm


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        stem = volume_stem(path.name, suffixes)
        if stem is not None:
            out.setdefault(stem, path)
    return out


def find_pairs(data_dir: str | Path) -> list[CasePair]:
    """The image/label pairs of `data_dir`, sorted by name. Unmatched files are skipped with
    a warning; no pairs at all is a FinetuneError."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FinetuneError(f"data folder {data_dir} does not exist")
    for images_name, labels_name in LAYOUTS:
        images_dir, labels_dir = data_dir / images_name, data_dir / labels_name
        if images_dir.is_dir() and labels_dir.is_dir():
            break
    else:
        raise FinetuneError(f"no image/label pairs in {data_dir}: expected {LAYOUT_HELP}")
    kind = "npz" if images_name == "imgs" else "sitk"
    suffixes = (".npz",) if kind == "npz" else VOLUME_SUFFIXES
    images, labels = _files(images_dir, suffixes), _files(labels_dir, suffixes)
    pairs: dict[str, CasePair] = {}
    other_channels: list[str] = []
    unmatched: list[str] = []
    for stem, path in images.items():
        if stem in labels:
            name = stem
        else:
            m = _CHANNEL.match(stem)
            if m is None or m.group(1) not in labels:
                unmatched.append(path.name)
                continue
            name = m.group(1)
            if m.group(2) != "0000":
                other_channels.append(path.name)
                continue
        if name not in pairs:
            pairs[name] = CasePair(name, path, labels[name], kind)
    if other_channels:
        _warn(f"only channel _0000 is used; ignoring {', '.join(other_channels)}")
    for name in unmatched:
        _warn(f"{images_name}/{name}: no label file of that name in {labels_name}/, skipped")
    for stem, path in labels.items():
        if stem not in pairs:
            _warn(f"{labels_name}/{path.name}: no image of that name in {images_name}/, skipped")
    if not pairs:
        raise FinetuneError(
            f"no image/label pairs in {data_dir}: no names match between "
            f"{images_name}/ and {labels_name}/ (expected {LAYOUT_HELP})"
        )
    return [pairs[k] for k in sorted(pairs)]


def _read_npz(path: Path, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=True) as z:
        if key not in z.files:
            raise ValueError(f"{path.name} has no '{key}'")
        spacing = np.asarray(z["spacing"], dtype=np.float64) if "spacing" in z.files else None
        return np.asarray(z[key]), spacing


def load_case(pair: CasePair) -> Case:
    """Read one pair: the image windowed to uint8, labels renumbered 1..K (uint8), spacing
    (z, y, x). Raises ValueError with the reason when the case cannot be used."""
    from ensam_infer.session import to_uint8

    if pair.kind == "npz":
        image, spacing_xyz = _read_npz(pair.image, "imgs")
        labels, label_spacing = _read_npz(pair.labels, "gts")
        spacing_xyz = spacing_xyz if spacing_xyz is not None else label_spacing
        # challenge files store spacing as (x, y, z)
        spacing = spacing_xyz[::-1] if spacing_xyz is not None else np.ones(3)
    else:
        from ensam_infer.volumes import read_volume

        volume = read_volume(pair.image)
        image, spacing = volume.array, np.asarray(volume.spacing_zyx, dtype=np.float64)
        labels = read_volume(pair.labels).array
    image, labels = np.squeeze(image), np.squeeze(labels)
    if image.ndim != 3:
        raise ValueError(f"image is not 3-D (shape {image.shape})")
    if image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} and label shape {labels.shape} differ")
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        spacing = np.ones(3)
    labels = np.rint(labels).astype(np.int64) if labels.dtype.kind == "f" else labels
    from .data.label_maps import remap_consecutive

    compact, ids = remap_consecutive(labels)
    if ids.size == 0:
        raise ValueError("the labels are empty (no foreground)")
    if ids.size > 255:
        raise ValueError(f"{ids.size} labels (at most 255)")
    return Case(pair.name, to_uint8(image), compact, np.asarray(spacing, dtype=np.float64))


def load_cases(pairs: list[CasePair]) -> list[Case]:
    """Every usable case; unusable ones (shape mismatch, empty labels, unreadable) are
    skipped with a one-line warning."""
    cases = []
    for pair in pairs:
        try:
            cases.append(load_case(pair))
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _warn(f"{pair.name}: {reason}; skipped")
    return cases


def split_cases(
    names: list[str], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(training, held-out) case names: round(val_fraction * n) cases, at least one, at most
    n - 1, drawn by a permutation of the sorted names with `seed`."""
    names = sorted(names)
    if len(names) < 2:
        raise FinetuneError(
            f"need at least 2 usable cases (one is held out for evaluation), found {len(names)}"
        )
    n_val = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    order = np.random.default_rng(seed).permutation(len(names))
    heldout = sorted(names[i] for i in order[:n_val])
    return [n for n in names if n not in heldout], heldout


def write_heldout(case: Case, out_dir: Path) -> Path:
    """Challenge npz files for one held-out case: imgs/<case>.npz (imgs, spacing (x, y, z),
    boxes as the sample cases make them) and gts/<case>.npz (gts, spacing)."""
    from ensam_infer.atomic import atomic_path
    from ensam_infer.rules import challenge_box

    (out_dir / "imgs").mkdir(parents=True, exist_ok=True)
    (out_dir / "gts").mkdir(parents=True, exist_ok=True)
    spacing_xyz = case.spacing[::-1].copy()
    k = int(case.labels.max())
    boxes = np.array([challenge_box(case.labels == i) for i in range(1, k + 1)], dtype=object)
    image_path = out_dir / "imgs" / f"{case.name}.npz"
    for path, fields in (
        (out_dir / "gts" / f"{case.name}.npz", {"gts": case.labels, "spacing": spacing_xyz}),
        (image_path, {"imgs": case.image, "spacing": spacing_xyz, "boxes": boxes}),
    ):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **fields)
    return image_path


def training_volume(case: Case, max_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (image, labels, spacing) training copy: nearest-downsampled where an axis is
    longer than `max_size` (as the trainer's real cases are)."""
    from .data.label_maps import downsample_indices

    idx, spacing = downsample_indices(case.image.shape, case.spacing, max_size)
    grid = np.ix_(*idx)
    return (
        np.ascontiguousarray(case.image[grid]),
        np.ascontiguousarray(case.labels[grid]),
        spacing,
    )


def run_config(weights: Path, seed: int, steps: int, overrides: dict | None) -> dict:
    """The run's config: the weights' own network, their training crop settings, the
    fine-tuning schedule (FINETUNE_TRAIN), then `overrides`."""
    import torch

    from .config import load_config, merge

    try:
        payload = torch.load(weights, map_location="cpu", weights_only=True)
        model_cfg = dict(payload["config"])
    except Exception as exc:  # torch raises many types for a bad file
        raise FinetuneError(f"cannot read weights {weights}: {exc}") from exc
    model_cfg.pop("trained", None)
    source = (payload.get("metadata") or {}).get("config") or {}
    src_train, src_data = source.get("train", {}), source.get("data", {})
    cfg = {
        "model": {"preset": "ensam", "overrides": model_cfg},
        "data": {
            "real_split": "",
            "max_size": TRAIN_MAX_SIZE,
            **{k: src_data[k] for k in INHERITED_DATA if k in src_data},
        },
        "train": {
            **{k: src_train[k] for k in INHERITED_TRAIN if k in src_train},
            **FINETUNE_TRAIN,
            "seed": seed,
            "max_steps": steps,
        },
    }
    try:
        return load_config(None, merge(cfg, overrides or {}))
    except ValueError as exc:
        raise FinetuneError(str(exc)) from exc


def _hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Progress(io.TextIOBase):
    """Stands in for stdout during train(): its JSON log lines become one progress line
    each (step, loss, elapsed, estimated time left); other lines pass through."""

    def __init__(self, out: TextIO, limit_steps: int, max_minutes: float | None) -> None:
        self.out, self.limit, self.max_minutes = out, limit_steps, max_minutes
        self.t0, self.step0 = time.time(), 0
        self.buffer = ""
        self.last_line = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def _line(self, line: str) -> None:
        m = re.match(r"resumed .* at step (\d+)$", line)
        if m:
            self.step0 = int(m.group(1))
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("kind") != "train":
            self.out.write(line + "\n")
            return
        step, now = int(record["step"]), time.time()
        per_step = (now - self.t0) / max(1, step - self.step0)
        left = max(0, self.limit - step) * per_step
        if self.max_minutes is not None:
            left = min(left, max(0.0, self.max_minutes * 60 - (now - self.t0)))
        self.last_line = (
            f"step {step}/{self.limit}  loss {record['loss']:.4f}  "
            f"dice {record['dice_last']:.3f}  elapsed {_hms(record['hours'] * 3600)}  "
            f"left ~{_hms(left)}"
        )
        self.out.write(self.last_line + "\n")
        self.out.flush()


def read_summary(eval_dir: Path) -> dict:
    """The overall ENSAM means (DSC_AUC, DSC_Final, ...) of an evaluation folder."""
    with open(eval_dir / "summary.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] == "ensam" and row["group"] == "all":
                return {
                    k: float(v) if v not in ("", None) else math.nan
                    for k, v in row.items()
                    if k not in ("method", "group")
                }
    raise FinetuneError(f"{eval_dir / 'summary.csv'} has no ensam row")


def _evaluate(heldout: Path, out_dir: Path, weights: Path, device: str) -> dict:
    from ensam_infer.evaluation.runner import evaluate

    def log(msg: str) -> None:  # per-case lines only, not every step
        if not re.search(r" step \d+/\d+", msg):
            print(msg, flush=True)

    evaluate(
        heldout / "imgs", heldout / "gts", out_dir, "ensam", mode="inprocess",
        weights=weights, device=device, log=log,
    )  # fmt: skip
    return read_summary(out_dir)


def _patch_model_metadata(model_path: Path, weights: Path, data_dir: Path) -> int:
    """Add where the fine-tuning started to model.pt (train() already carried the source
    weights' inference settings over); returns its step."""
    from ensam_infer.model import set_metadata

    meta = set_metadata(model_path, finetuned_from=str(weights), finetune_data=str(data_dir))
    return int(meta.get("steps", 0))


def finetune(
    data_dir: str | Path,
    run_dir: str | Path,
    weights: str | Path | None = None,
    steps: int = 300,
    minutes: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    overrides: dict | None = None,
    device: str = "auto",
) -> dict:
    """Fine-tune (or resume fine-tuning) in `run_dir`; see the module docstring. Returns
    ``{"step", "heldout", "train", "before", "after", "model"}`` (before/after: the overall
    means of the held-out evaluation). Data problems raise FinetuneError (one line)."""
    from ensam_infer.session import default_weights

    from .train import train

    data_dir, run_dir = Path(data_dir).expanduser(), Path(run_dir).expanduser()
    if not 0 < val_fraction < 1:
        raise FinetuneError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if steps < 1:
        raise FinetuneError(f"--steps must be at least 1, got {steps}")
    run_dir.mkdir(parents=True, exist_ok=True)
    info_path = run_dir / "finetune.json"
    heldout_dir = run_dir / "heldout"
    ckpt_path = run_dir / "checkpoint.pt"
    pairs = find_pairs(data_dir)

    if info_path.is_file():  # a resumed run keeps its split and its starting weights
        info = json.loads(info_path.read_text())
        source = Path(info["weights"])
        if weights is not None and Path(weights).expanduser().resolve() != source:
            _warn(f"resuming {run_dir}: it started from {source}, --weights is ignored")
        if (info["seed"], info["val_fraction"]) != (seed, val_fraction):
            kept = f"seed {info['seed']}, val fraction {info['val_fraction']}"
            _warn(f"resuming {run_dir}: its saved split is kept ({kept})")
        wanted = set(info["train"]) | {
            n for n in info["heldout"] if not (heldout_dir / "imgs" / f"{n}.npz").is_file()
        }
        known = set(info["train"]) | set(info["heldout"])
        new = [p.name for p in pairs if p.name not in known]
        if new:
            _warn(f"not in this run's split, ignored: {', '.join(new)}")
        cases = {c.name: c for c in load_cases([p for p in pairs if p.name in wanted])}
        missing = sorted(wanted - set(cases))
        if missing:
            _warn(f"cases of this run's split no longer usable: {', '.join(missing)}")
        train_names = [n for n in info["train"] if n in cases]
        heldout_names = list(info["heldout"])
    else:
        source = Path(weights).expanduser() if weights is not None else default_weights()
        if not source.is_file():
            raise FinetuneError(f"no ENSAM weights at {source}")
        source = source.resolve()
        cases = {c.name: c for c in load_cases(pairs)}
        train_names, heldout_names = split_cases(list(cases), val_fraction, seed)
        info = {
            "data": str(data_dir.resolve()),
            "weights": str(source),
            "seed": seed,
            "val_fraction": val_fraction,
            "train": train_names,
            "heldout": heldout_names,
        }
    if not train_names:
        raise FinetuneError("no usable training cases left")
    for name in heldout_names:
        if name in cases:
            write_heldout(cases.pop(name), heldout_dir)
    heldout_names = [n for n in heldout_names if (heldout_dir / "imgs" / f"{n}.npz").is_file()]
    if not heldout_names:
        raise FinetuneError("no usable held-out cases left")
    info_path.write_text(json.dumps(info, indent=2))
    print(
        f"{len(train_names)} training cases, {len(heldout_names)} held out "
        f"({', '.join(heldout_names)}); starting weights {source}",
        flush=True,
    )

    before_dir, after_dir = run_dir / "eval_before", run_dir / "eval_after"
    if (before_dir / "summary.csv").is_file():
        before = read_summary(before_dir)
    else:
        print("evaluating the starting weights on the held-out cases", flush=True)
        before = _evaluate(heldout_dir, before_dir, source, device)

    if (run_dir / "config.json").is_file():  # train() keeps the config a run started with
        from .config import load_config

        cfg = load_config(run_dir / "config.json")
    else:
        cfg = run_config(source, seed, steps, overrides)
    volumes = [training_volume(cases[n], cfg["data"]["max_size"]) for n in train_names]
    cases.clear()
    progress = _Progress(sys.stdout, steps, minutes)
    with contextlib.redirect_stdout(progress):
        train(
            run_dir,
            overrides=cfg,
            init_weights=source if not ckpt_path.is_file() else None,
            max_minutes=minutes,
            max_steps=steps,
            volumes=volumes,
        )
    model_path = run_dir / "model.pt"
    step = _patch_model_metadata(model_path, source, data_dir)

    print(f"evaluating the fine-tuned weights (step {step}) on the held-out cases", flush=True)
    after = _evaluate(heldout_dir, after_dir, model_path, device)
    n = len(heldout_names)
    print(
        f"held-out ({n} case{'s' if n != 1 else ''}): DSC AUC {before['DSC_AUC']:.3f} -> "
        f"{after['DSC_AUC']:.3f} ({after['DSC_AUC'] - before['DSC_AUC']:+.3f}), final DSC "
        f"{before['DSC_Final']:.3f} -> {after['DSC_Final']:.3f} "
        f"({after['DSC_Final'] - before['DSC_Final']:+.3f}); weights {model_path}",
        flush=True,
    )
    return {
        "step": step,
        "train": train_names,
        "heldout": heldout_names,
        "before": before,
        "after": after,
        "model": model_path,
    }
