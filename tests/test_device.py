import pytest
import torch

from fpn_plugin.device import resolve_device


def test_auto_is_cuda_exactly_when_torch_sees_a_gpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_explicit_devices_pass_through():
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(ValueError, match="Set MODEL.DEVICE to 'auto' or 'cpu'"):
        resolve_device("cuda:0")
