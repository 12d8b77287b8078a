"""The training loop: resumable runs with checkpoints, a metrics log, a plot, and validation
on held-out real cases.

A run folder holds config.json (frozen at the start), checkpoint.pt (everything needed for
an exact resume: model, optimizers, step, sample index, RNG), metrics.jsonl, plot.png and
model.pt (the latest weights alone, in the inference format).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ensam_infer.atomic import atomic_path
from ensam_infer.device import cpu_has_fast_bf16
from ensam_infer.model import Ensam, build_model, save_checkpoint

from .config import load_config
from .data.intensity import RealIntensity, random_intensity
from .data.sampler import VolumeSampler, pick_target
from .example import Example, make_example
from .interaction import run_interaction
from .optim import build_optimizers, lr_factor
from .splits import case_files, load_split, shared_data_root


class CaseSampler:
    """Volumes drawn uniformly from given (image uint8, labels, spacing) cases, in place of
    the synthetic/atlas/real mix (fine-tuning on a user's own folder), with the same random
    intensity changes as the mix's real images when `real_intensity` is given."""

    def __init__(
        self,
        volumes: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        real_intensity: RealIntensity | None = None,
    ) -> None:
        if not volumes:
            raise ValueError("no training volumes")
        self.volumes = list(volumes)
        self.real_intensity = real_intensity

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, labels, spacing = self.volumes[int(rng.integers(len(self.volumes)))]
        if self.real_intensity is not None:
            # drawn only when enabled, so fine-tuning streams without it stay the same
            image = random_intensity(image, rng, self.real_intensity)
        return image, labels, spacing


class ExampleStream(torch.utils.data.Dataset):
    """Example i is a pure function of (seed, i): a resumed run continues the same stream.

    `volumes`: draw from these cases only (see CaseSampler) instead of the configured mix."""

    def __init__(self, cfg: dict, volumes: list | None = None) -> None:
        data = cfg["data"]
        real_intensity = RealIntensity.from_config(data["real_intensity"])
        if volumes is not None:
            self.sampler = CaseSampler(volumes, real_intensity)
        else:
            root = shared_data_root()
            self.sampler = VolumeSampler(
                label_map_root=root / "label_maps",
                real_root=root,
                real_cases=load_split(data["real_split"]) if data["real_split"] else None,
                probs=data["probs"],
                max_size=data["max_size"],
                synth_size=data["synth_size"],
                real_intensity=real_intensity,
            )
        self.seed = cfg["train"]["seed"]
        self.max_voxels = cfg["train"]["max_voxels"]
        self.p_no_box = data["p_no_box"]
        self.p_single_slice = data["p_single_slice"]

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, index])
        image, labels, _ = self.sampler.sample(rng)
        mask = pick_target(labels, rng)
        return make_example(
            image, mask, rng, self.max_voxels, self.p_no_box, p_single_slice=self.p_single_slice
        )


class FromIndex(torch.utils.data.Sampler):
    def __init__(self, start: int, stride: int = 1, offset: int = 0) -> None:
        self.start, self.stride, self.offset = start, stride, offset

    def __iter__(self):  # noqa: ANN204 - a generator
        i = self.start
        while True:
            yield i * self.stride + self.offset
            i += 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def validation_examples(cfg: dict, limit: int) -> list[tuple[str, Example]]:
    """Fixed examples from the held-out real cases, cropped as inference crops (16 voxels
    around the box), no augmentation."""
    root = shared_data_root()
    cases = [c for c in load_split("validation") if case_files(root, c)[0].is_file()]
    if not cases:
        return []
    rng = np.random.default_rng(12345)
    per_case = max(1, math.ceil(limit / len(cases)))
    out = []
    for case in cases:
        image_file, labels_file = case_files(root, case)
        image = np.load(image_file, allow_pickle=True)["imgs"]
        gts = np.load(labels_file, allow_pickle=True)["gts"]
        ids = [i for i in np.unique(gts) if i > 0 and (gts == i).sum() >= 10]
        for i in rng.permutation(ids)[:per_case]:
            ex_rng = np.random.default_rng([12345, int(i)])
            ex = make_example(
                image, gts == i, ex_rng, cfg["train"]["max_voxels"], p_no_box=0.0, augment=False
            )
            out.append((case, ex))
    return out[:limit] if len(out) > limit else out


@torch.no_grad()
def validate(model: Ensam, examples: list, click_steps: int, device: torch.device) -> dict:
    model.eval()
    first, last = [], []
    for _, ex in examples:
        _, dices = run_interaction(model, ex, click_steps, device)
        first.append(dices[0])
        last.append(dices[-1])
    model.train()
    return {"val_dice_box": float(np.mean(first)), "val_dice_last": float(np.mean(last))}


class InteractionLoss(torch.nn.Module):
    """One sample's whole interaction loop as a single forward: the unit that
    DistributedDataParallel wraps (the loop calls encode once and decode at every step,
    which DDP sees as one forward and one backward)."""

    def __init__(self, model: Ensam) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        example: Example,
        click_steps: int,
        device: torch.device,
        mask_prompt: bool,
        box_prompt: bool = False,
        click_crop_voxels: int = 0,
    ) -> tuple[torch.Tensor, list[float]]:
        return run_interaction(
            self.model, example, click_steps, device, mask_prompt, box_prompt, click_crop_voxels
        )


def _distributed() -> tuple[int, int]:
    """(rank, world size); under torchrun, joins the process group (NCCL on GPUs, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def _train_device(world: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    device = torch.device(f"cuda:{local % torch.cuda.device_count()}")
    torch.cuda.set_device(device)
    return device


def _all_agree(flag: bool, world: int, device: torch.device) -> bool:
    """Rank 0's decision, on every rank: a rank that stopped alone would leave the others
    waiting in the gradient all-reduce forever."""
    if world == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state-dict order."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _check_ranks_agree(model: torch.nn.Module, world: int, run_dir: Path) -> None:
    """Every rank must end with the same weights; the digests go into the run folder
    (ranks.json), and a divergence is an error rather than a silently wrong model."""
    if world == 1:
        return
    digests: list = [None] * world
    dist.all_gather_object(digests, weights_digest(model))
    if dist.get_rank() == 0:
        (run_dir / "ranks.json").write_text(json.dumps({"weights_sha256": digests}, indent=2))
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")


def _added_blocks(model: Ensam, init: Ensam) -> list[str]:
    """State-dict prefixes of the encoder residual blocks `model` has beyond the starting
    weights' (a deeper level grown over a shallower one: the same channels, more blocks)."""
    have, want = init.config.blocks, model.config.blocks
    if len(have) != len(want) or init.config.channels != model.config.channels:
        return []
    return [
        f"encoder.levels.{level}.{k}."
        for level, (n_have, n_want) in enumerate(zip(have, want, strict=True))
        for k in range(n_have, n_want)
    ]


def _load_init(model: Ensam, init: Ensam) -> None:
    """The starting weights into `model`; modules they lack (paths `model` adds, such as the
    click maps, or residual blocks a deeper encoder adds) keep their fresh initialization,
    and `_start_new_paths` zeroes their output."""
    missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
    new = {"click_maps."} if model.config.click_map_radius > 0 else set()
    new |= set(_added_blocks(model, init))
    stray = [k for k in missing if not any(k.startswith(n) for n in new)]
    if stray or unexpected:
        raise RuntimeError(f"starting weights do not fit: missing {stray}, unexpected {unexpected}")


def _start_new_paths(model: Ensam, init: Ensam) -> None:
    """A path the starting weights never used starts at zero, so it changes nothing at first
    and is learned from there: the dense prompt's output conv when `dense_on_unit_latent` is
    switched on over weights trained without it (their dense path had no effect; its
    random weights would otherwise swamp the normalized latent), and the click maps' path
    when the starting weights had none. A residual block the starting weights lacked starts
    as the identity (its last conv at zero), so the deeper network first computes exactly
    what the starting weights did and grows from there."""
    added = _added_blocks(model, init)
    if added:
        with torch.no_grad():
            for prefix in added:
                model.get_submodule(prefix.rstrip(".")).conv2.weight.zero_()
        print(f"{len(added)} added encoder blocks start as the identity")
    if model.config.dense_on_unit_latent and not init.config.dense_on_unit_latent:
        _zero_output(model.dense)
        print("dense prompt output zeroed: the starting weights had no unit-latent path")
    if model.config.click_map_radius > 0 and init.config.click_map_radius == 0:
        _zero_output(model.click_maps.path)
        print("click-map output zeroed: the starting weights had no click maps")


def _zero_output(path: torch.nn.Module) -> None:
    with torch.no_grad():
        path.out.weight.zero_()
        path.out.bias.zero_()


def train(
    run_dir: str | Path,
    config_path: str | Path | None = None,
    overrides: dict | None = None,
    init_weights: str | Path | None = None,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    volumes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """Train (or resume) the run in `run_dir`. Returns the last logged metrics.

    `volumes`: train on these (image uint8, labels, spacing) cases only, with no validation
    on the shared held-out cases (give the same cases again to resume)."""
    run_dir = Path(run_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    frozen = run_dir / "config.json"
    if frozen.is_file():
        cfg = load_config(frozen)
    else:
        cfg = load_config(config_path, overrides)
        frozen.write_text(json.dumps(cfg, indent=2))
    tc = cfg["train"]
    rank, world = _distributed()
    device = _train_device(world)
    torch.manual_seed(tc["seed"])
    model = build_model(cfg["model"]["preset"], **cfg["model"]["overrides"]).to(device)
    opts = build_optimizers(model, tc["optimizer"], tc["lr"], tc["weight_decay"])
    state = {"step": 0, "sample": 0, "elapsed": 0.0, "best_val": None}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        for opt, s in zip(opts, ckpt["optimizers"], strict=True):
            opt.load_state_dict(s)
        state = ckpt["state"]
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resumed {run_dir} at step {state['step']}", flush=True)
    elif init_weights is not None:
        from ensam_infer.model import INFERENCE_KEYS, load_checkpoint

        init = load_checkpoint(init_weights)
        _load_init(model, init)
        print(f"initialized from {init_weights}", flush=True)
        _start_new_paths(model, init)
        # The inference settings validated for the starting weights (crop mode, size cap)
        # travel with the run's weights until a validation says otherwise.
        state["inference"] = {k: init.metadata[k] for k in INFERENCE_KEYS if k in init.metadata}
    model.train()
    loss_module: torch.nn.Module = InteractionLoss(model)
    if world > 1:
        # Broadcasts rank 0's weights at construction; averages gradients in backward.
        # Unused parameters are normal (no box embedding without a box, no point embedding
        # before the first click).
        loss_module = torch.nn.parallel.DistributedDataParallel(
            loss_module, find_unused_parameters=True
        )
    # From the config, never from the optimizers: a resumed optimizer carries the scheduled
    # (warmed-up or decayed) rate of its last step, not the base rate.
    base_lrs = [[tc["lr"] for _ in o.param_groups] for o in opts]

    stream = ExampleStream(cfg, volumes)
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        sampler=FromIndex(state["sample"], world, rank),
        num_workers=tc["workers"],
        worker_init_fn=_worker_init,
        prefetch_factor=4 if tc["workers"] > 0 else None,
        persistent_workers=False,
    )
    shared_val = rank == 0 and volumes is None
    val_examples = validation_examples(cfg, tc["val_objects"]) if shared_val else []
    click_rng = np.random.default_rng([tc["seed"], 7, state["step"]])
    amp = None
    if device.type == "cuda":
        amp = torch.autocast("cuda", dtype=torch.bfloat16)
    elif tc["cpu_bf16"] and cpu_has_fast_bf16():
        amp = torch.autocast("cpu", dtype=torch.bfloat16)

    t_start = time.time()
    elapsed0 = state["elapsed"]
    last_ckpt = last_val = time.time()
    log_sums: dict[str, list[float]] = {}
    metrics_file = run_dir / "metrics.jsonl"
    limit_steps = max_steps if max_steps is not None else tc["max_steps"]
    data_iter = iter(loader)
    last_logged: dict = {}

    def save() -> None:
        state["elapsed"] = elapsed0 + time.time() - t_start
        ckpt = {
            "model": model.state_dict(),
            "optimizers": [o.state_dict() for o in opts],
            "state": state,
            "torch_rng": torch.get_rng_state(),
            "config": cfg,
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(ckpt, tmp)
        save_trained(
            model,
            run_dir / "model.pt",
            metadata={
                **state.get("inference", {}),
                "steps": state["step"],
                "hours": state["elapsed"] / 3600,
                "config": cfg,
            },
        )

    click_crop_voxels = tc["max_voxels"] if tc["click_crop"] else 0
    while state["step"] < limit_steps:
        out_of_time = max_minutes is not None and time.time() - t_start > max_minutes * 60
        if _all_agree(out_of_time, world, device):
            break
        factor = lr_factor(state["step"], tc["warmup"], tc["milestones"], tc["gamma"])
        for opt, lrs in zip(opts, base_lrs, strict=True):
            for g, lr in zip(opt.param_groups, lrs, strict=True):
                g["lr"] = lr * factor
        for opt in opts:
            opt.zero_grad()
        total, dice_first, dice_last = 0.0, [], []
        for micro in range(tc["accumulate"]):
            example = next(data_iter)
            state["sample"] += 1
            steps = int(click_rng.integers(tc["click_steps"][0], tc["click_steps"][1] + 1))
            # drawn only when used, so runs without it keep their click-step stream
            mask_prompt = tc["p_mask_prompt"] > 0 and bool(click_rng.random() < tc["p_mask_prompt"])
            box_prompt = tc["p_box_prompt"] > 0 and bool(click_rng.random() < tc["p_box_prompt"])
            # Gradients are averaged across ranks once per step, in the last backward.
            last_micro = micro == tc["accumulate"] - 1
            sync = contextlib.nullcontext() if world == 1 or last_micro else loss_module.no_sync()
            with sync:
                with amp if amp is not None else contextlib.nullcontext():
                    loss, dices = loss_module(
                        example, steps, device, mask_prompt, box_prompt, click_crop_voxels
                    )
                (loss / tc["accumulate"]).backward()
            total += float(loss.detach()) / tc["accumulate"]
            dice_first.append(dices[0])
            dice_last.append(dices[-1])
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc["clip"]))
        if math.isfinite(grad_norm):
            for opt in opts:
                opt.step()
            model.renormalize_()
        state["step"] += 1
        for key, value in (
            ("loss", total),
            ("dice_box", float(np.mean(dice_first))),
            ("dice_last", float(np.mean(dice_last))),
            ("grad_norm", grad_norm),
        ):
            log_sums.setdefault(key, []).append(value)
        if rank == 0 and state["step"] % tc["log_every"] == 0:
            record = {
                "kind": "train",
                "step": state["step"],
                "hours": (elapsed0 + time.time() - t_start) / 3600,
                "lr": opts[0].param_groups[0]["lr"],
                **{k: float(np.mean(v)) for k, v in log_sums.items()},
            }
            log_sums.clear()
            with metrics_file.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
            last_logged = record
        if rank == 0 and val_examples and time.time() - last_val > tc["val_minutes"] * 60:
            _log_validation(model, val_examples, device, state, elapsed0, t_start, metrics_file)
            last_val = time.time()
        if rank == 0 and tc["snapshot_every"] and state["step"] % tc["snapshot_every"] == 0:
            snapshot_meta = {**state.get("inference", {}), "steps": state["step"]}
            save_snapshot(model, run_dir, snapshot_meta, cfg)
        if rank == 0 and time.time() - last_ckpt > tc["checkpoint_minutes"] * 60:
            save()
            write_plot(run_dir)
            last_ckpt = time.time()
    if rank == 0:
        if val_examples:
            last_logged = _log_validation(
                model, val_examples, device, state, elapsed0, t_start, metrics_file
            )
        save()
        write_plot(run_dir)
    _check_ranks_agree(model, world, run_dir)
    if world > 1:
        dist.destroy_process_group()  # torchrun warns about a group left open at exit
    return last_logged


def save_trained(model: Ensam, path: Path, metadata: dict, half: bool = True) -> None:
    """The weights in the inference format, marked as trained (the model in training stays
    unmarked: its fresh initialization is not a trained network)."""
    model.config.trained = True
    try:
        save_checkpoint(model, path, half=half, metadata=metadata)
    finally:
        model.config.trained = False


def save_snapshot(model: Ensam, run_dir: Path, metadata: dict, cfg: dict) -> Path:
    """The weights at step `metadata["steps"]`, in full precision (an average of fp16 copies
    would add their rounding), as snapshots/step_NNNNNN.pt in the inference format."""
    out = run_dir / "snapshots" / f"step_{metadata['steps']:06d}.pt"
    out.parent.mkdir(exist_ok=True)
    save_trained(model, out, {**metadata, "config": cfg}, half=False)
    return out


def _log_validation(
    model: Ensam,
    examples: list,
    device: torch.device,
    state: dict,
    elapsed0: float,
    t_start: float,
    metrics_file: Path,
) -> dict:
    result = validate(model, examples, 3, device)
    record = {
        "kind": "val",
        "step": state["step"],
        "hours": (elapsed0 + time.time() - t_start) / 3600,
        **result,
    }
    with metrics_file.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)
    return record


def write_plot(run_dir: str | Path) -> Path | None:
    """plot.png: training loss and Dice, and validation Dice, against step and wall time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():  # a checkpoint can come before the first log line
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    train_r = [r for r in records if r["kind"] == "train"]
    val_r = [r for r in records if r["kind"] == "val"]
    if not train_r:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train_r]
    axes[0].plot(steps, [r["loss"] for r in train_r], alpha=0.4, label="loss")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss (sum over steps)")
    for key in ("dice_box", "dice_last"):
        axes[1].plot(steps, [r[key] for r in train_r], alpha=0.4, label=f"train {key}")
    for key in ("val_dice_box", "val_dice_last"):
        axes[1].plot([r["step"] for r in val_r], [r[key] for r in val_r], "o-", label=key)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("Dice")
    axes[1].legend()
    for key in ("val_dice_box", "val_dice_last"):
        axes[2].plot([r["hours"] for r in val_r], [r[key] for r in val_r], "o-", label=key)
    axes[2].set_xlabel("wall time (hours)")
    axes[2].set_ylabel("validation Dice")
    axes[2].legend()
    fig.tight_layout()
    out = run_dir / "plot.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
