from __future__ import annotations

import pytest
import torch

from blipsearch.errors import ConfigError
from blipsearch.models.runtime import chunks, resolve_device, resolve_dtype, training_bf16


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(
    monkeypatch, cuda: bool, mps: bool, expected: str
) -> None:
    # Which accelerators exist is the machine's business; the preference among them is ours.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected)


def test_auto_device_on_this_machine_and_explicit_names() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ConfigError, match="Unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_requested_without_cuda_is_explained() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_auto_dtype_per_device() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("auto", torch.device("mps")) is torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bf16_for_retrieval_only_where_the_cpu_has_it(native: bool, monkeypatch) -> None:
    from blipsearch.models import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    expected = torch.bfloat16 if native else torch.float32
    assert resolve_dtype("auto", torch.device("cpu"), role="retrieval") is expected
    assert resolve_dtype("auto", torch.device("cpu"), role="caption") is torch.float32
    assert resolve_dtype("float32", torch.device("cpu"), role="retrieval") is torch.float32


def test_native_bf16_detection_reads_the_cpu_flags(monkeypatch, tmp_path) -> None:
    from blipsearch import machine

    def flags(text: str) -> bool:
        fake = tmp_path / "cpuinfo"
        fake.write_text(f"processor\t: 0\nflags\t\t: {text}\n")
        real_path = machine.Path
        monkeypatch.setattr(machine, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
        machine.cpu_has_native_bf16.cache_clear()
        try:
            return machine.cpu_has_native_bf16()
        finally:
            machine.cpu_has_native_bf16.cache_clear()
            monkeypatch.setattr(machine, "Path", real_path)

    assert flags("fpu avx2 avx512f avx512_bf16 avx512_vnni")
    assert flags("fpu avx2 amx_bf16 amx_tile")
    assert not flags("fpu avx2 fma")


def test_float16_on_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="float16"):
        resolve_dtype("float16", torch.device("cpu"))


def test_chunks() -> None:
    assert [list(c) for c in chunks([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(chunks([], 3)) == []
    with pytest.raises(ValueError):
        list(chunks([1], 0))


def test_training_bf16_is_as_asked_else_only_on_a_gpu_that_has_it(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert training_bf16(True, cpu) and not training_bf16(False, cpu)
    assert not training_bf16(None, cpu)  # off on a CPU unless asked for, AMX or not
    for has_bf16 in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda has=has_bf16: has)
        assert training_bf16(None, torch.device("cuda")) is has_bf16
