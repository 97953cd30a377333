"""PluginCheckpointer routes VGG16 files to the VGG16 converter and checks their pixel format."""
import pytest
import torch
import torchvision

from _weight_files import plugin_cfg
from detectron2.modeling import build_model

from fpn_plugin.checkpoint import PixelFormatMismatchError, PluginCheckpointer


@pytest.fixture(scope="module")
def vgg16_state():
    return torchvision.models.vgg16(weights=None).state_dict()


@pytest.mark.slow
def test_vgg16_flavours_and_pixel_formats(tmp_path, vgg16_state):
    torchvision_file = tmp_path / "vgg16-397923af.pth"
    caffe_file = tmp_path / "vgg16_caffe.pth"
    torch.save(vgg16_state, torchvision_file)
    torch.save(vgg16_state, caffe_file)

    model = build_model(plugin_cfg("vgg16_voc07.yaml")).eval()  # torchvision pixels
    PluginCheckpointer(model).load(str(torchvision_file))
    values = list(model.state_dict().values())
    for key in ("features.0.weight", "features.28.bias", "classifier.0.weight"):  # conv1_1, conv5_3, fc6
        assert any(v.shape == vgg16_state[key].shape and torch.equal(v, vgg16_state[key])
                   for v in values), key
    # The Caffe file expects BGR with the Caffe means: refused for a torchvision config ...
    with pytest.raises(PixelFormatMismatchError, match=r"caffe VGG16.*INPUT.FORMAT is RGB"):
        PluginCheckpointer(model).load(str(caffe_file))
    # ... and accepted for the Caffe config.
    caffe_model = build_model(plugin_cfg("vgg16_caffe_voc07.yaml")).eval()
    PluginCheckpointer(caffe_model).load(str(caffe_file))
    with pytest.raises(PixelFormatMismatchError, match="torchvision VGG16"):
        PluginCheckpointer(caffe_model).load(str(torchvision_file))

