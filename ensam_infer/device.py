"""Where the network runs: CUDA with autocast when present, else the CPU with its threads."""

from __future__ import annotations

import contextlib
import os
import sys

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def configure_threads() -> None:
    """Use every core the process may run on (containers often limit them by affinity),
    unless ENSAM_THREADS, or else OMP_NUM_THREADS, asks for a number (a value that is not a
    positive integer is ignored with a warning: a typo in the shell must not stop a run)."""
    for name in ("ENSAM_THREADS", "OMP_NUM_THREADS"):
        wanted = _thread_count(name)
        if wanted is not None:
            torch.set_num_threads(wanted)
            return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores))


def _thread_count(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    print(f"warning: ignoring {name}={value!r} (not a positive integer)", file=sys.stderr)
    return None


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AMX or AVX512-BF16). Without it
    bf16 autocast is emulated and several times slower than float32 (measured: 10 s per
    training step against about 3 s on a 2-core AMD EPYC with AVX2 only)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_bf16_requested() -> bool:
    """ENSAM_CPU_BF16=1 asks for bf16 arithmetic on the CPU (honoured only where the CPU does
    it in hardware: see `cpu_has_fast_bf16`)."""
    return os.environ.get("ENSAM_CPU_BF16", "0").strip().lower() in ("1", "true", "yes", "on")


def autocast(device: torch.device, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that support it (fp16 otherwise). On the CPU full precision,
    unless `cpu_bf16` asks for bf16 and the processor does it in hardware: emulated bf16
    is several times slower than float32."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if cpu_bf16 and cpu_has_fast_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
