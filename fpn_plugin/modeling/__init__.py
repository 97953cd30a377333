"""Backbones and ROI heads, registered in detectron2's registries on import."""
from . import resnet  # noqa: F401,E402  (plugin ResNet backbone)
from . import fpn  # noqa: F401,E402  (plugin ResNet-FPN backbone)
from . import res5_roi_head  # noqa: F401,E402  (C4 ROI head running layer4 per RoI)
from . import vgg  # noqa: F401,E402  (VGG16, VGG16-FPN backbones, fc6/fc7 box head)
from . import anchors  # noqa: F401,E402  (torchvision's anchor arithmetic, for its detectors)
from . import torchvision_rcnn  # noqa: F401,E402  (torchvision's in-model test resize)
from . import roi_pool_autocast  # noqa: F401,E402  (VGG16's ROIPool under CPU bf16 autocast)
