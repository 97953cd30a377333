"""(c) The plugin R50-FPN loaded from a detectron2 R50-FPN checkpoint equals detectron2's model."""
import pytest
import torch

from _weight_files import (
    SHARED_DATA,
    detectron2_builtin_cfg,
    detectron2_builtin_model,
    photo,
    plugin_cfg,
    save_detectron2_checkpoint,
)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from fpn_plugin.checkpoint import PluginCheckpointer
from fpn_plugin.checkpoint.resnet_formats import detectron2_resnet_to_plugin


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """detectron2's builtin R50-FPN, every weight and FrozenBN statistic random, saved twice."""
    image = photo(short_side=320)
    if image is None:
        pytest.skip(f"needs the shared test photos in {SHARED_DATA} (absent in a user's clone)")
    directory = tmp_path_factory.mktemp("d2_checkpoint")
    pth, pkl = save_detectron2_checkpoint(detectron2_builtin_model(seed=3), directory)
    d2 = build_model(detectron2_builtin_cfg()).eval()
    DetectionCheckpointer(d2).load(str(pth))
    inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2]}]
    with torch.no_grad():
        features = d2.backbone(d2.preprocess_image(inputs).tensor)
        instances = d2(inputs)[0]["instances"]
    assert len(instances) > 0, "the randomised reference must produce detections to compare"
    return {"pth": pth, "pkl": pkl, "model": d2, "inputs": inputs, "features": features,
            "instances": instances}


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["pth", "pkl"])
def test_r50_fpn_matches_detectron2_builtin(reference, suffix):
    path = str(reference[suffix])
    # configs/fpn_r50.yaml with MODEL.WEIGHTS changed, nothing else (the device is not the model).
    plugin = build_model(plugin_cfg("fpn_r50.yaml", weights=path)).eval()
    PluginCheckpointer(plugin).load(path)

    # Every tensor of the plugin model is the checkpoint's, under the converted name.
    expected = detectron2_resnet_to_plugin(reference["model"].state_dict(), plugin)
    state = plugin.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)

    inputs = reference["inputs"]
    with torch.no_grad():
        features = plugin.backbone(plugin.preprocess_image(inputs).tensor)
        instances = plugin(inputs)[0]["instances"]

    ref_features, ref = reference["features"], reference["instances"]
    assert list(features) == ["p2", "p3", "p4", "p5", "p6"]
    feature_diff = max((features[k] - ref_features[k]).abs().max().item() for k in ref_features)
    scale = max(v.abs().max().item() for v in ref_features.values())
    print(f"\n[{suffix}] max |FPN feature diff| = {feature_diff:.3g} (features up to {scale:.3g})")
    assert feature_diff <= 1e-5 * max(1.0, scale)

    assert len(instances) == len(ref)
    assert torch.equal(instances.pred_classes, ref.pred_classes)
    box_diff = (instances.pred_boxes.tensor - ref.pred_boxes.tensor).abs().max().item()
    score_diff = (instances.scores - ref.scores).abs().max().item()
    print(f"[{suffix}] {len(ref)} detections; max |box diff| = {box_diff:.3g} px, "
          f"max |score diff| = {score_diff:.3g}")
    assert box_diff <= 1e-3 and score_diff <= 1e-5
