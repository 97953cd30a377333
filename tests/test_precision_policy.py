"""The one precision policy, each hardware branch simulated, and the real branch of this host."""
import logging
import warnings

import pytest
import torch

from fpn_plugin import precision
from fpn_plugin.precision import PRECISIONS, choose_precision


@pytest.fixture
def native_bf16(monkeypatch):
    """Simulate a CPU with (True) or without (False) native bf16, and its flags."""
    def simulate(native: bool, flags=("amx_bf16", "avx512_bf16")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags if native else ("avx2",)))
        monkeypatch.setattr(precision, "_logged", set())
    return simulate


def _quiet(requested, device):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on these paths
        return choose_precision(requested, device)


def test_auto_on_a_cpu_with_native_bf16_is_bf16_and_says_which_flag(native_bf16, caplog):
    native_bf16(True, flags=("avx512_bf16",))
    with caplog.at_level(logging.INFO, logger="fpn_plugin.precision"):
        choice = _quiet("auto", "cpu")
        _quiet("auto", "cpu")  # logged once per process, however often it is asked
    assert choice == ("bf16", "this CPU has avx512_bf16")
    assert caplog.messages == ["precision: bf16 (precision 'auto': this CPU has avx512_bf16)"]
    native_bf16(True, flags=("amx_bf16", "avx512_bf16"))
    assert _quiet("auto", "cpu").reason == "this CPU has amx_bf16 and avx512_bf16"
    assert _quiet("bf16", "cpu").name == "bf16"


def test_auto_on_a_cpu_that_emulates_bf16_is_fp32(native_bf16):
    native_bf16(False)
    choice = _quiet("auto", "cpu")
    assert choice.name == "fp32" and "emulates bf16" in choice.reason


def test_forced_bf16_on_a_cpu_that_emulates_it_warns_with_the_measured_cost(native_bf16, caplog):
    native_bf16(False)
    with caplog.at_level(logging.WARNING, logger="fpn_plugin.precision"):
        with pytest.warns(RuntimeWarning, match=r"SOLVER.AMP.PRECISION 'bf16' on a CPU without native bf16.*5.8x"):
            choice = choose_precision("bf16", "cpu", setting="SOLVER.AMP.PRECISION")
    assert choice.name == "bf16"
    assert any("oneDNN emulates it" in m for m in caplog.messages)  # in the training log too


def test_auto_on_cuda_is_fp16_and_bf16_needs_gpu_support(monkeypatch, native_bf16):
    native_bf16(False)  # the CPU's bf16 is irrelevant on CUDA
    # torch.device("cuda") needs no GPU: the policy is decided from the device string.
    assert _quiet("auto", "cuda") == ("fp16", "CUDA, with loss scaling")
    assert _quiet("fp16", "cuda:1").name == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _quiet("bf16", "cuda").name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    with pytest.raises(ValueError, match="'bf16' on Tesla T4, which has no bf16 support. Use 'fp16'"):
        choose_precision("bf16", "cuda")


def test_fp16_on_a_cpu_and_unknown_names_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match="PRECISION 'fp16' needs CUDA, but the device is 'cpu'"):
        choose_precision("fp16", "cpu", setting="PRECISION")
    with pytest.raises(ValueError, match=r"--precision is 'fp8'; choose one of \['auto', 'fp32', 'fp16', 'bf16'\]"):
        choose_precision("fp8", "cpu", setting="--precision")


def test_fp32_is_fp32_everywhere(native_bf16):
    for native in (False, True):
        native_bf16(native)
        assert _quiet("fp32", "cpu").name == _quiet("fp32", "cuda").name == "fp32"


def test_the_real_branch_of_this_host():
    native = precision.cpu_has_native_bf16()
    assert choose_precision("auto", "cpu").name == ("bf16" if native else "fp32")
    flags = precision.cpu_bf16_flags()
    assert set(flags) <= {"amx_bf16", "avx512_bf16"}
    if native and precision.cpu_flags():  # oneDNN's native bf16 means one of these flags
        assert flags
    assert PRECISIONS == ("auto", "fp32", "fp16", "bf16")
