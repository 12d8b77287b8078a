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
