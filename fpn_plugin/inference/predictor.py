"""``Predictor``: what detectron2's ``DefaultPredictor`` does, for batches and any image input."""
import logging
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..checkpoint import PluginCheckpointer
from ..checkpoint.metadata import class_names_from_checkpoint
from ..device import resolve_device
from .images import load_image

__all__ = ["Predictor"]

logger = logging.getLogger(__name__)


def _class_names_from_datasets(cfg) -> Optional[List[str]]:
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        names = MetadataCatalog.get(name).get("thing_classes", None)
        if names:
            return list(names)
    return None


class Predictor:
    """Run a detector on images: paths, PIL images or arrays, one at a time or in batches.

    Compared with ``DefaultPredictor``: ``MODEL.DEVICE: auto`` works; inputs are converted by
    :func:`~fpn_plugin.inference.images.load_image` (EXIF orientation, grayscale, RGBA, 16-bit,
    an explicit channel order for arrays); a list of images runs in batches of ``batch_size``
    in one forward each; weights load through :class:`PluginCheckpointer` (every format it
    knows), and the class names come from the checkpoint when the trainer wrote them there.

    Attributes:
        class_names (list[str] or None): names of the model's contiguous class ids.
    """

    def __init__(self, cfg, batch_size: int = 1):
        self.cfg = cfg.clone()  # the model may modify it
        self.cfg.defrost()
        self.cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)
        self.model = build_model(self.cfg)
        self.model.eval()
        extra = PluginCheckpointer(self.model).load(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else {}
        self.class_names = class_names_from_checkpoint(extra) or _class_names_from_datasets(cfg)
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR' for prediction, got {cfg.INPUT.FORMAT!r}")
        self.input_format = cfg.INPUT.FORMAT
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def _model_input(self, rgb: np.ndarray) -> dict:
        image = rgb if self.input_format == "RGB" else rgb[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def predict(self, images: Sequence, channel_order: Optional[str] = None) -> List[dict]:
        """Predict on a list of images, ``batch_size`` at a time.

        Args:
            images: paths, PIL images or arrays (see ``load_image``).
            channel_order: for array inputs, "RGB"/"BGR" (or "RGBA"/"BGRA").

        Returns:
            list[dict]: one ``{"instances": Instances}`` per image, on the CPU, in the
            original image's coordinates.
        """
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = [self._model_input(load_image(x, channel_order)) for x in images[start : start + self.batch_size]]
            for output in self.model(batch):
                outputs.append({"instances": output["instances"].to("cpu")})
        return outputs

    def __call__(self, image, channel_order: Optional[str] = None) -> dict:
        """Predict on one image; arrays are taken as BGR unless told, like ``DefaultPredictor``."""
        if isinstance(image, np.ndarray) and channel_order is None and image.ndim == 3:
            channel_order = "BGR" if image.shape[2] == 3 else "BGRA"
        return self.predict([image], channel_order)[0]
