import contextlib

import pytest
import torch

from ensam_infer import device as device_mod
from ensam_infer.device import autocast, cpu_bf16_requested, resolve_device


def _matmul_dtype(ctx: contextlib.AbstractContextManager) -> torch.dtype:
    with ctx:
        return (torch.ones(4, 4) @ torch.ones(4, 4)).dtype


def test_cpu_runs_in_float32_unless_bf16_is_asked_for():
    assert _matmul_dtype(autocast(torch.device("cpu"))) == torch.float32


def test_cpu_bf16_is_honoured_only_where_the_cpu_has_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    assert _matmul_dtype(autocast(cpu, cpu_bf16=True)) == torch.bfloat16
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: False)
    assert _matmul_dtype(autocast(cpu, cpu_bf16=True)) == torch.float32


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("on", True), ("0", False), ("", False), (None, False)]
)
def test_cpu_bf16_request_comes_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("ENSAM_CPU_BF16", raising=False)
    else:
        monkeypatch.setenv("ENSAM_CPU_BF16", value)
    assert cpu_bf16_requested() is expected


def test_auto_device_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ENSAM_THREADS": "1", "OMP_NUM_THREADS": "2"}, 1),  # ours first
        ({"OMP_NUM_THREADS": "1"}, 1),  # the usual knob is honoured, not overridden
        ({"ENSAM_THREADS": "two", "OMP_NUM_THREADS": "1"}, 1),  # a typo falls through
        ({"ENSAM_THREADS": "0"}, "cores"),
        ({}, "cores"),
    ],
)
def test_thread_count_comes_from_the_environment_or_the_cores(monkeypatch, capsys, env, expected):
    for name in ("ENSAM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(device_mod.os, "sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    chosen = []
    monkeypatch.setattr(device_mod.torch, "set_num_threads", chosen.append)
    device_mod.configure_threads()
    assert chosen == [3 if expected == "cores" else expected]
    bad = [v for v in env.values() if not (v.isdigit() and int(v) > 0)]
    err = capsys.readouterr().err
    assert ("warning: ignoring" in err) == bool(bad)
