"""Training throughput on this machine: samples per second of the real training step (one
sample's whole interaction loop: encoder once, a box step and 4 click steps, backward,
Muon + AdamW step every 2 samples) under different thread layouts and arithmetic.

    python -m benchmarks.training [--config ensam_train/configs/cpu_light_stage4.json]
        [--steps 12] [--variants fp32_t2,fp32_t1,fp32_t1x2,channels_last_t1,bf16_t1,bf16_t2,
                     bf16_t1x2,compile_t1,fp32_t2_bf16_ns,fp32_t2_native_conv,
                     fp32_t2_pytorch_backward]

Every variant trains the same examples (examples 0.. of the config's stream, generated once
per child and not timed: in a run they come from a data worker) from the same initial
weights. Needs the training data (../shared/data or ENSAM_DATA). Pause any training run
first: it shares the cores.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import REPO_ROOT, child_main, is_child, machine_info, md_table, run_child

MODULE = "benchmarks.training"
DEFAULT_CONFIG = REPO_ROOT / "ensam_train" / "configs" / "cpu_light_stage4.json"
CLICK_STEPS = 4
SAMPLES_PER_STEP = 2
# name: (threads per process, processes at once, arithmetic)
VARIANTS: dict[str, tuple[int, int, str]] = {
    "fp32_t2": (2, 1, "fp32"),
    "fp32_t1": (1, 1, "fp32"),
    "fp32_t1x2": (1, 2, "fp32"),
    "channels_last_t1": (1, 1, "channels_last"),
    "bf16_t1": (1, 1, "bf16"),
    "bf16_t2": (2, 1, "bf16"),
    "bf16_t1x2": (1, 2, "bf16"),
    "compile_t1": (1, 1, "compile"),
    # torch.optim.Muon's own step, its Newton-Schulz iteration in bf16: what the campaign
    # used before ReshapedMuon ran the iteration in float32 (a CPU without bf16 in hardware
    # emulates it)
    "fp32_t2_bf16_ns": (2, 1, "bf16_ns"),
    # PyTorch's own choice of convolution kernel (its slow native one for small batch-of-one
    # inputs), what the model used before its Conv3d sent every float32 CPU one to oneDNN
    "fp32_t2_native_conv": (2, 1, "native_conv"),
    # PyTorch's own backward pass for the oneDNN convolutions (it re-picks its native kernel
    # for batch-of-one inputs), what the model used before Conv3d took the gradients itself
    "fp32_t2_pytorch_backward": (2, 1, "pytorch_backward"),
}


def torch_muon_step(opt: object) -> None:
    """One step of `opt` (a ReshapedMuon) by torch.optim.Muon's own code."""
    import torch

    for p, v in zip(opt._originals, opt._views, strict=True):
        v.grad = None if p.grad is None else p.grad.view(v.shape)
    torch.optim.Muon.step(opt)


def worker(spec: dict) -> dict:
    """Time `steps` training steps of one variant after 2 warm-up steps, in this process."""
    import contextlib

    import torch

    from ensam_infer.model import build_model, conv
    from ensam_train.config import load_config
    from ensam_train.interaction import run_interaction
    from ensam_train.optim import ReshapedMuon, build_optimizers
    from ensam_train.train import ExampleStream

    torch.set_num_threads(spec["threads"])
    cfg = load_config(spec["config"])
    stream = ExampleStream(cfg)
    count = (spec["steps"] + 2) * SAMPLES_PER_STEP
    t0 = time.perf_counter()
    examples = [stream[i] for i in range(count)]
    data_s = (time.perf_counter() - t0) / count
    torch.manual_seed(0)
    model = build_model(cfg["model"]["preset"], **cfg["model"]["overrides"])
    tc = cfg["train"]
    opts = build_optimizers(model, tc["optimizer"], tc["lr"], tc["weight_decay"])
    mode = spec["mode"]
    if mode == "channels_last":
        # channels-last kernels make every convolution's output channels-last too
        model = model.to(memory_format=torch.channels_last_3d)
    if mode == "compile":
        model.encoder = torch.compile(model.encoder, dynamic=True)
        model.decoder = torch.compile(model.decoder, dynamic=True)
    if mode == "native_conv":
        conv.onednn_applies = lambda *_: False
    if mode == "pytorch_backward":
        conv.Conv3d._own_backward_applies = lambda *_: False
    if mode == "bf16_ns" and isinstance(opts[0], ReshapedMuon):
        opts[0].step = functools.partial(torch_muon_step, opts[0])
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else None
    model.train()
    device = torch.device("cpu")
    times = []
    for step in range(spec["steps"] + 2):
        t0 = time.perf_counter()
        for opt in opts:
            opt.zero_grad()
        for k in range(SAMPLES_PER_STEP):
            with amp if amp is not None else contextlib.nullcontext():
                loss, _ = run_interaction(
                    model, examples[step * SAMPLES_PER_STEP + k], CLICK_STEPS, device
                )
            (loss / SAMPLES_PER_STEP).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc["clip"])
        for opt in opts:
            opt.step()
        model.renormalize_()
        times.append(time.perf_counter() - t0)
    timed = times[2:]
    return {
        "step_s": statistics.median(timed),
        "first_s": times[0],
        "steps": len(timed),
        "data_s_per_sample": data_s,
        "voxels": float(statistics.mean(ex.image.numel() for ex in examples)),
    }


def measure(name: str, config: Path, steps: int) -> dict:
    """One variant: its processes run at once; samples/s summed over them."""
    threads, processes, mode = VARIANTS[name]
    spec = {"threads": threads, "mode": mode, "config": str(config), "steps": steps}
    with ThreadPoolExecutor(processes) as pool:
        results = list(pool.map(lambda _: run_child(MODULE, spec, threads, 1800), range(processes)))
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"name": name, "error": errors[0]}
    step_s = statistics.mean(r["step_s"] for r in results)
    return {
        "name": name,
        "threads": threads,
        "processes": processes,
        "mode": mode,
        "step_s": step_s,
        "samples_per_s": sum(SAMPLES_PER_STEP / r["step_s"] for r in results),
        "first_s": max(r["first_s"] for r in results),
        "data_s_per_sample": results[0]["data_s_per_sample"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "voxels": results[0]["voxels"],
    }


def report(rows: list[dict], baseline: str) -> str:
    base = next((r for r in rows if r["name"] == baseline and "error" not in r), None)
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["name"], "—", "—", "—", "—", "—", f"failed: {r['error'][:60]}"])
            continue
        ratio = f"{r['samples_per_s'] / base['samples_per_s']:.2f}x" if base else "—"
        table.append(
            [
                r["name"],
                f"{r['processes']} x {r['threads']}",
                f"{r['step_s']:.2f}",
                f"{r['samples_per_s']:.2f}",
                ratio,
                f"{r['first_s']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
            ]
        )
    headers = [
        "variant",
        "processes x threads",
        "s / step (2 samples), median",
        "samples / s (all processes)",
        f"vs {baseline}",
        "first step (s)",
        "peak RSS (MiB)",
    ]
    return md_table(headers, table)


def main() -> int:
    if is_child():
        return child_main(worker)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per process")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--baseline", default="fp32_t2", help="the ratio column's reference")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    rows = [measure(n, args.config.resolve(), args.steps) for n in names]
    print("\n".join(f"- {line}" for line in machine_info(2, ["cpu"])))
    print(
        f"- config: `{args.config}`; {CLICK_STEPS} click steps per sample; examples of "
        f"{rows[0].get('voxels', 0):.0f} voxels on average; data generation "
        f"{rows[0].get('data_s_per_sample', 0):.2f} s per sample (a worker's, not timed)\n"
    )
    print(report(rows, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
