"""Check a detection dataset before training on it: ``python -m fpn_plugin.data.check``.

Prints image and box counts, the class histogram, the id mapping training will use, and every
problem found, each with its file and index: missing or unreadable image, image size differing
from the annotation, box outside the image or of zero area, unknown category, duplicate ids,
annotations of unknown images, malformed files, annotation id 0 (which pycocotools
mis-scores), [x0, y0, x1, y1] boxes in a COCO file. Draws the ground truth on a few images.
Exits with status 1 when there are problems, so it can gate a pipeline. A check that takes more
than a few seconds shows a progress bar on stderr; the report goes to stdout.

Examples::

    python -m fpn_plugin.data.check --coco annotations/train.json images/train
    python -m fpn_plugin.data.check --vocdevkit datasets/VOC2007 trainval
    python -m fpn_plugin.data.check --voc-folder my_data/ --classes cat,dog
    python -m fpn_plugin.data.check --config-file configs/my.yaml    # its TRAIN and TEST sets
    python -m fpn_plugin.data.check coco_2017_val shapes_train         # registered datasets

Modules: :mod:`.report` (what a check found), :mod:`.rules` (the image and box rules),
:mod:`.coco`, :mod:`.voc` and :mod:`.registered` (the checkers), :mod:`.draw` (the drawings),
:mod:`.cli` (the command).
"""
from .cli import main
from .coco import check_coco
from .draw import draw_ground_truth
from .registered import check_dataset
from .report import Report
from .voc import check_voc, check_vocdevkit

__all__ = ["check_coco", "check_voc", "check_vocdevkit", "check_dataset", "draw_ground_truth",
           "Report", "main"]
