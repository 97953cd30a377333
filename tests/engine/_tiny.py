"""A tiny detectron2 Faster R-CNN (R18-FPN) and a synthetic dataset for the engine tests."""
import os

import numpy as np

import fpn_plugin  # noqa: F401  (first: detectron2 compatibility fixes)
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from fpn_plugin.config import add_fpn_plugin_config


def register_synthetic(name: str, root: str, num_images: int = 8, size=(96, 128), seed: int = 0) -> str:
    """Register ``name``: images with one or two bright rectangles, boxes as annotations.

    All images have the same landscape size, so aspect-ratio grouping forms batches in
    sampler order. Returns ``name``. Registering twice under the same root is a no-op (the
    processes of one test); under another root (a later test: pytest deletes a passing test's
    tmp_path) the images are written there and the name follows them.
    """
    folder = os.path.join(root, name)
    if name in DatasetCatalog.list():
        if all(os.path.dirname(d["file_name"]) == folder for d in DatasetCatalog.get(name)):
            return name
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    os.makedirs(folder, exist_ok=True)
    records = []
    for i in range(num_images):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        annotations = []
        for _ in range(1 + i % 2):
            bw, bh = rng.integers(16, 48), rng.integers(16, 40)
            x0, y0 = rng.integers(0, w - bw), rng.integers(0, h - bh)
            cls = int(rng.integers(0, 2))
            image[y0 : y0 + bh, x0 : x0 + bw] = (200, 80, 80) if cls == 0 else (80, 200, 80)
            annotations.append(
                {"bbox": [float(x0), float(y0), float(bw), float(bh)], "bbox_mode": BoxMode.XYWH_ABS,
                 "category_id": cls, "iscrowd": 0}
            )
        path = os.path.join(folder, f"{i:03d}.png")
        if not os.path.exists(path):  # processes of one test register the same images
            tmp = f"{path}.{os.getpid()}.png"
            cv2.imwrite(tmp, image)
            os.replace(tmp, path)
        records.append({"file_name": path, "image_id": i, "height": h, "width": w, "annotations": annotations})
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["red", "green"])
    return name


def tiny_cfg(output_dir: str, train: str, max_iter: int = 4):
    """R18-FPN Faster R-CNN small enough for a few CPU iterations per second."""
    cfg = get_cfg()
    add_fpn_plugin_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",  # pinned: gloo launches, bf16 and exact resume are CPU tests
        "MODEL.WEIGHTS", "",
        "MODEL.RESNETS.DEPTH", 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.NORM", "BN",  # from scratch, FrozenBN lets activations explode
        "MODEL.FPN.OUT_CHANNELS", 32,
        "MODEL.ROI_HEADS.NUM_CLASSES", 2,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64,
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
        "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
        "MODEL.RPN.POST_NMS_TOPK_TEST", 20,
        "INPUT.MIN_SIZE_TRAIN", (96,),
        "INPUT.MAX_SIZE_TRAIN", 128,
        "INPUT.MIN_SIZE_TEST", 96,
        "INPUT.MAX_SIZE_TEST", 128,
        "DATASETS.TRAIN", (train,),
        "DATASETS.TEST", (),
        "DATALOADER.NUM_WORKERS", 0,
        "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.BASE_LR", 0.002,
        "SOLVER.MAX_ITER", max_iter,
        "SOLVER.STEPS", (max_iter // 2,),
        "SOLVER.WARMUP_ITERS", 2,
        "SOLVER.CHECKPOINT_PERIOD", 1000,
        "TEST.EVAL_PERIOD", 0,
        "TEST.PLOTS.ENABLED", False,
        "SEED", 7,
        "OUTPUT_DIR", output_dir,
    ])
    return cfg
