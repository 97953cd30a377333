"""What the RPN proposes: top-k proposals drawn on images, and proposal recall on a dataset.

Recall is detectron2's own: ``COCOEvaluator`` computes AR@100/AR@1000 by object size (as for
its RPN models) whenever a model's outputs hold ``"proposals"``; :class:`ProposalsOnly` makes
any two-stage detector give them. ``python -m fpn_plugin.inference.proposals`` prints the table.
"""
import argparse
import logging
import os
from typing import List, Optional

import numpy as np
import torch
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from torch import nn

from ..checkpoint import load_inference_model
from ..compat import has_compiled_ops
from ..config import setup_config

__all__ = ["ProposalsOnly", "draw_proposals", "proposal_recall"]

logger = logging.getLogger(__name__)


class ProposalsOnly(nn.Module):
    """Runs a GeneralizedRCNN's backbone and RPN only; outputs proposals in image coordinates.

    With ``MODEL.LOAD_PROPOSALS`` (no RPN), the precomputed proposals of each input are used,
    as ``GeneralizedRCNN.inference`` does. ``post_nms_topk`` sets how many proposals the
    detector's own RPN keeps per image at test time.
    """

    def __init__(self, detector: nn.Module, post_nms_topk: Optional[int] = None):
        super().__init__()
        self.detector = detector
        rpn = detector.proposal_generator
        if post_nms_topk is not None and rpn is not None:
            # detectron2's RPN keeps {training: k, testing: k}; this changes the detector's RPN.
            rpn.post_nms_topk = {**rpn.post_nms_topk, False: post_nms_topk}

    @torch.no_grad()
    def forward(self, batched_inputs: List[dict]) -> List[dict]:
        model = self.detector
        images = model.preprocess_image(batched_inputs)
        if model.proposal_generator is not None:
            features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, features, None)
        else:
            proposals = [x["proposals"].to(model.device) for x in batched_inputs]
        outputs = []
        for props, inputs, size in zip(proposals, batched_inputs, images.image_sizes):
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            outputs.append({"proposals": detector_postprocess(props, height, width)})
        return outputs


def draw_proposals(rgb: np.ndarray, proposals, top_k: int = 20) -> np.ndarray:
    """Draw the ``top_k`` highest-scoring proposals (Instances with proposal_boxes) on an image."""
    order = proposals.objectness_logits.argsort(descending=True)[:top_k]
    boxes = proposals.proposal_boxes.tensor[order].cpu().numpy()
    return Visualizer(rgb).overlay_instances(boxes=boxes).get_image()


class _ProposalRecallEvaluator(COCOEvaluator):
    """``COCOEvaluator`` whose proposal recall also works on datasets with string image ids.

    detectron2 (0.6 and main) passes each image id bare to pycocotools' ``getAnnIds``, which
    reads a string id ("000001", as VOC's) as a list of characters and finds no ground truth:
    every AR is NaN. This evaluator's ground truth takes a bare string id as one id.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self, "_do_evaluation", True) and hasattr(self, "_coco_api"):
            get_ann_ids = self._coco_api.getAnnIds

            def one_string_id(imgIds=(), **kwargs):
                return get_ann_ids(imgIds=[imgIds] if isinstance(imgIds, str) else imgIds, **kwargs)

            self._coco_api.getAnnIds = one_string_id


def proposal_recall(cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
    """AR@100 and AR@1000, overall and for small/medium/large objects, on a registered dataset.

    Args:
        output_dir: where detectron2 caches the dataset's COCO json and writes the proposals
            (default: ``<OUTPUT_DIR>/proposals``).

    Returns:
        dict: ``{"AR@100": ..., "ARs@100": ..., ..., "AR@1000": ...}`` in percent.
    """
    output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "proposals")
    cfg = cfg.clone()  # the checkpoint's class count goes into it
    cfg.defrost()
    detector, _ = load_inference_model(cfg)
    # AR@1000 needs 1000 proposals per image, whatever the detector keeps for its ROI heads.
    model = ProposalsOnly(detector, post_nms_topk=max(1000, cfg.MODEL.RPN.POST_NMS_TOPK_TEST))
    # The loader first: it loads the dataset, which writes generated data's JSON (the shapes)
    # that the evaluator then opens.
    loader = build_detection_test_loader(cfg, dataset_name)
    evaluator = _ProposalRecallEvaluator(
        dataset_name, output_dir=output_dir, use_fast_impl=has_compiled_ops()
    )
    results = inference_on_dataset(model, loader, evaluator)
    return results["box_proposals"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Proposal recall (AR@100, AR@1000 by size) of a detector's RPN.")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", help="registered dataset (default: the config's first DATASETS.TEST)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="detectron2")
    cfg = setup_config(args.config_file, args.opts)  # device resolved, the config's datasets
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    for name, value in proposal_recall(cfg, dataset).items():
        print(f"{name:>10}  {value:6.2f}")


if __name__ == "__main__":
    main()
