"""Per-step latency: what a box step (encoder + decoder) and a click step (decoder only, the
encoder's features kept) cost on the same case, and what the on-disk cache buys the
container, whose every step is a fresh process.

    python -m benchmarks.latency [--quick] [--threads 2] [--devices cpu,cuda] [--weights W]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    Options,
    Section,
    add_common_arguments,
    child_main,
    cuda_peak_mb,
    current_rss_mb,
    encoder_runs,
    fmt_mb,
    fmt_ratio,
    fmt_s,
    fmt_stats,
    is_child,
    machine_info,
    md_table,
    median_of,
    options_from,
    parse_shape,
    peak_rss_mb,
    render,
    reset_cuda_peak,
    reset_peak_rss,
    run_child,
    shape_text,
    write_json,
)

MODULE = "benchmarks.latency"
FULL_SHAPE, FULL_BOX = (128, 256, 256), (64, 112, 112)
QUICK_SHAPE, QUICK_BOX = (32, 64, 64), (16, 32, 32)


def worker(spec: dict) -> dict:
    """One device/thread configuration, in its own process."""
    import torch

    from benchmarks.cases import (
        ContainerChain,
        EncoderCounter,
        InProcess,
        centred_box,
        measure,
        network_input_shape,
        synthetic_volume,
    )
    from ensam_infer.session import EnsamSession

    torch.set_num_threads(spec["threads"])
    n, w, budget = spec["repeats"], spec["warmup"], spec["budget"]
    t0 = time.perf_counter()
    session = EnsamSession(spec["weights"], device=spec["device"])
    load_s = time.perf_counter() - t0
    enc = EncoderCounter(session)
    shape = tuple(spec["shape"])
    boxes = [centred_box(shape, tuple(spec["box"]))]
    volume = synthetic_volume(shape, boxes)
    region, pool, net = network_input_shape(session, shape, boxes)
    rss_before = current_rss_mb()
    peak_reset = reset_peak_rss()
    reset_cuda_peak()

    steps = InProcess(session, volume, boxes)
    box = measure(steps.box_step, n, w, budget, enc)
    click = measure(steps.click_step, n, w, budget, enc)
    inproc_peak, inproc_cuda = peak_rss_mb(), cuda_peak_mb()

    with tempfile.TemporaryDirectory(prefix="ensam_bench_") as tmp:
        cached = ContainerChain(Path(tmp) / "cached", volume, boxes, use_cache=True)
        c_box = measure(lambda: cached.box_step(session), n, w, budget, enc)
        c_click = measure(lambda: cached.click_step(session), n, w, budget, enc)
        plain = ContainerChain(Path(tmp) / "nocache", volume, boxes, use_cache=False)
        plain.box_step(session)
        n_click = measure(lambda: plain.click_step(session), n, w, budget, enc)
    return {
        "device": str(session.device),
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "region": region,
        "pool": pool,
        "network_input": net,
        "box": box,
        "click": click,
        "container_box": c_box,
        "container_click_cache": c_click,
        "container_click_nocache": n_click,
        "rss_before_mb": rss_before,
        "peak_reset": peak_reset,
        "inprocess_peak_rss_mb": inproc_peak,
        "inprocess_cuda_peak_mb": inproc_cuda,
        "cuda_peak_mb": cuda_peak_mb(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", type=parse_shape, default=None, help="volume, e.g. 128x256x256")
    parser.add_argument("--box", type=parse_shape, default=None, help="box size, centred")


def run(opts: Options, args: argparse.Namespace) -> tuple[list[Section], dict]:
    shape = args.shape or (QUICK_SHAPE if opts.quick else FULL_SHAPE)
    box = args.box or (QUICK_BOX if opts.quick else FULL_BOX)
    results = []
    for device in opts.devices:
        spec = opts.spec(device=device, threads=opts.threads, shape=shape, box=box)
        results.append(run_child(MODULE, spec, opts.threads, opts.child_timeout))
    return sections(results, shape, box, opts), {"shape": shape, "box": box, "runs": results}


def sections(results: list[dict], shape: tuple, box: tuple, opts: Options) -> list[Section]:
    case = f"volume {shape_text(shape)}, one object with a {shape_text(box)} box in its centre"
    rows, crows = [], []
    for r in results:
        if "error" in r:
            rows.append(["error: " + r["error"][:80]] + [""] * 8)
            crows.append(["error"] + [""] * 7)
            continue
        net = f"{shape_text(r['region'])} → {shape_text(r['network_input'])}"
        box_s, click_s = median_of(r, "box"), median_of(r, "click")
        gpu = fmt_mb(r["inprocess_cuda_peak_mb"]) if r["inprocess_cuda_peak_mb"] else "—"
        rows.append(
            [
                r["device"],
                r["threads"],
                net,
                fmt_stats(r["box"]),
                fmt_stats(r["click"]),
                fmt_ratio(box_s, click_s),
                fmt_s(r["box"]["first"]),
                f"{encoder_runs(r['box'])} / {encoder_runs(r['click'])}",
                f"{fmt_mb(r['inprocess_peak_rss_mb'])} / {gpu}",
            ]
        )
        cache_s = median_of(r, "container_click_cache")
        plain_s = median_of(r, "container_click_nocache")
        crows.append(
            [
                r["device"],
                fmt_stats(r["container_box"]),
                fmt_stats(r["container_click_cache"]),
                fmt_stats(r["container_click_nocache"]),
                fmt_ratio(plain_s, cache_s),
                fmt_s(plain_s - cache_s) if plain_s and cache_s else "—",
                f"{encoder_runs(r['container_click_cache'])} / "
                f"{encoder_runs(r['container_click_nocache'])}",
                fmt_mb(r["peak_rss_mb"]),
            ]
        )
    runs = f"Median of {opts.repeats} timed run(s) after {opts.warmup} warm-up"
    s1 = Section(
        "Per-step latency, in-process (EnsamSession kept alive)",
        md_table(
            [
                "device",
                "threads",
                "region → network input",
                "box step (encoder + decoder)",
                "click step (decoder only)",
                "box / click",
                "first box step (cold)",
                "encoder runs (box / click)",
                "peak RSS / GPU",
            ],
            rows,
        ),
        [
            f"Case: {case}. {runs} (fewer when one run exceeds the {opts.budget:.0f} s "
            "budget); ± is half the min–max range.",
            "Box step: set_image + add_box + predict (encoder, decoder, merge, paste back). "
            "Click step: add_click + predict on the cached features (prompt encoder, "
            "transformer, decoder, merge). The ratio is measured in the same process.",
            "Peak RSS: the process's high-water mark during these steps (reset after "
            "loading the model and making the volume), model and torch included.",
        ],
    )
    s2 = Section(
        "Container path: one click step through predict_file, with and without the cache",
        md_table(
            [
                "device",
                "box step",
                "click step, cache",
                "click step, --no-cache",
                "no-cache / cache",
                "saved per click run",
                "encoder runs (cache / no-cache)",
                "peak RSS",
            ],
            crows,
        ),
        [
            "predict_file as the container runs it: read the npz, segment, write `segs`, "
            "save the cache; each click step's input written as the organizers' script does "
            "(accumulated clicks, prev_pred = the last output). Process start, imports and "
            "model load are not included here (see the scaling benchmark).",
            "With the cache the click step loads the encoder features from the outputs "
            "folder; with --no-cache (use_cache=False) it re-runs the encoder on every "
            "click. The ratio is what the cache buys per container run of a click step.",
        ],
    )
    return [s1, s2]


def main() -> int:
    if is_child():
        return child_main(worker)
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ensam_bench_") as tmp:
        opts = options_from(args, Path(tmp))
        machine = machine_info(opts.threads, opts.devices)  # the load average before we run
        print(f"weights: {opts.weights_note}", file=sys.stderr)
        secs, raw = run(opts, args)
    print("\n".join(f"- {line}" for line in machine))
    print(f"- Weights: {opts.weights_note}\n")
    print(render(secs))
    write_json(args.json, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
