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


def test_plugin_config_defaults_to_a_device_that_exists():
    # detectron2's own default is "cuda", which fails where there is no GPU.
    from detectron2.config import get_cfg

    from fpn_plugin import add_fpn_plugin_config

    cfg = add_fpn_plugin_config(get_cfg())
    assert cfg.MODEL.DEVICE == resolve_device("auto")
    torch.zeros(1, device=cfg.MODEL.DEVICE)


@pytest.mark.parametrize("gpu", [False, True])
def test_both_branches_of_auto_by_simulating_the_gpu(monkeypatch, gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device("auto") == ("cuda" if gpu else "cpu")
    if gpu:
        assert resolve_device("cuda:1") == "cuda:1"
    else:
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")
