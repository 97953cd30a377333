"""``TorchvisionAnchorGenerator``: detectron2's anchor generator with torchvision's arithmetic.

torchvision's ``AnchorGenerator`` differs from detectron2's ``DefaultAnchorGenerator`` (offset
0) in two ways that move its anchors by whole pixels, so a torchvision detector's RPN only
gives its own proposals with them:

- cell anchors are rounded to whole pixels (a 32-pixel anchor of ratio 0.5 is 46 x 22, not
  45.25 x 22.63);
- each level's stride is the padded image size divided (integer division) by that level's
  grid size, not the nominal stride: P6 of an 800-pixel side (grid 13) has stride 61, not 64.
"""
from typing import List

import torch
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator
from detectron2.structures import Boxes

__all__ = ["TorchvisionAnchorGenerator"]


@ANCHOR_GENERATOR_REGISTRY.register()
class TorchvisionAnchorGenerator(DefaultAnchorGenerator):
    """Anchors exactly as torchvision's ``AnchorGenerator`` makes them (``MODEL.ANCHOR_GENERATOR.NAME``)."""

    def generate_cell_anchors(self, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)):
        return super().generate_cell_anchors(sizes, aspect_ratios).round()

    def forward(self, features: List[torch.Tensor]) -> List[Boxes]:
        grid_sizes = [f.shape[-2:] for f in features]
        # The padded image size torchvision divides: the first level's grid times its stride.
        image_h, image_w = grid_sizes[0][0] * self.strides[0], grid_sizes[0][1] * self.strides[0]
        cells = [x[1] for x in self.cell_anchors.named_buffers()]
        anchors = []
        for (h, w), cell in zip(grid_sizes, cells):
            xs = torch.arange(0, w, dtype=torch.int32, device=cell.device) * (image_w // w)
            ys = torch.arange(0, h, dtype=torch.int32, device=cell.device) * (image_h // h)
            shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1).to(cell.dtype)
            anchors.append(Boxes((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)))
        return anchors
