"""The fast path's RPN inference: each level's top-k anchors chosen before any box is decoded.

detectron2's RPN decodes every anchor's box (242k at 800x1216 with FPN) and then picks each
level's ``pre_nms_topk`` best scores; detectron2 0.6 picks them by sorting all scores of the
level (faster than ``topk`` on GPUs of 2019, 15 ms for P2 on a CPU; detectron2's main uses
``topk``). :class:`TopKRPN` takes ``topk`` of the scores first and decodes only the chosen
anchors: the same proposals (ties between equal scores aside), the rest of the selection (NMS,
clipping, small boxes) by detectron2's own ``find_top_rpn_proposals``.
"""
from typing import List, Tuple

import torch
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.structures import Boxes
from torch import nn

__all__ = ["TopKRPN", "select_before_decoding"]


class TopKRPN(RPN):
    """detectron2's ``RPN`` whose inference decodes only each level's top-k anchors.

    Made from an ``RPN`` by :func:`select_before_decoding` (same module, parameters and
    attributes); training calls detectron2's ``predict_proposals`` unchanged.
    """

    def predict_proposals(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
    ):
        if self.training:
            return super().predict_proposals(
                anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes
            )
        topk = self.pre_nms_topk[False]
        proposals, scores = [], []
        with torch.no_grad():
            for anchors_i, logits_i, deltas_i in zip(
                anchors, pred_objectness_logits, pred_anchor_deltas
            ):
                scores_i, index = logits_i.topk(min(topk, logits_i.shape[1]), dim=1)
                dim = deltas_i.shape[2]
                chosen = deltas_i.gather(1, index[..., None].expand(-1, -1, dim))
                boxes = self.box2box_transform.apply_deltas(
                    chosen.reshape(-1, dim), anchors_i.tensor[index.reshape(-1)]
                )
                proposals.append(boxes.view(*index.shape, dim))
                scores.append(scores_i)
            # Each level holds its top-k already: detectron2 keeps them all, in this order.
            return find_top_rpn_proposals(
                proposals, scores, image_sizes, self.nms_thresh, topk,
                self.post_nms_topk[False], self.min_box_size, False,
            )


def select_before_decoding(model: nn.Module) -> bool:
    """Make ``model.proposal_generator`` a :class:`TopKRPN` if it is detectron2's ``RPN``.

    Only an exact ``RPN`` changes (a subclass may predict differently); returns whether it did.
    """
    rpn = getattr(model, "proposal_generator", None)
    if type(rpn) is not RPN:
        return False
    rpn.__class__ = TopKRPN
    return True
