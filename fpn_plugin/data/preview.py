"""Draw a dataset's ground truth: look at the data before training on it.

    python -m fpn_plugin.data.preview --config-file C [--dataset NAME] [--count 8] [--output DIR]

Boxes and class names are drawn with detectron2's ``Visualizer`` from the dataset dicts as
registered (``DATASETS.TRAIN``'s first dataset by default), so what is drawn is what the
trainer reads: a wrong class map or boxes in the wrong mode show up here, not after a day of
training. :func:`draw_record` draws one image; the dataset check draws through it too.
"""
import argparse
import os
from typing import Dict, List, Optional

import cv2
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..config import setup_config

__all__ = ["draw_ground_truth", "draw_ground_truth_from_config", "draw_record"]


def draw_ground_truth(dataset_name: str, output_dir: str, count: int = 8) -> List[str]:
    """Draw the first ``count`` images of a registered dataset with their boxes.

    Args:
        dataset_name: a registered detectron2 dataset.
        output_dir: where the JPEGs are written (created if needed).
        count: how many images.

    Returns:
        The paths written, one per image, in dataset order.
    """
    if count < 1:
        raise ValueError(f"count is {count}; draw at least one image.")
    records = DatasetCatalog.get(dataset_name)[:count]
    if not records:
        raise ValueError(f"The dataset {dataset_name!r} has no images to draw.")
    metadata = MetadataCatalog.get(dataset_name)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for record in records:
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        paths.append(draw_record(record, metadata, os.path.join(output_dir, f"{stem}.jpg")))
    return paths


def draw_record(record: Dict, metadata, output_path: str) -> str:
    """Draw one dataset dict's boxes and class names on its image, and write the drawing.

    The one ground-truth drawer: :func:`draw_ground_truth` and the dataset check
    (:mod:`fpn_plugin.data.check`) both draw through it.

    Args:
        record: a detectron2 dataset dict (``file_name``, ``annotations``).
        metadata: the dataset's metadata: ``thing_classes``, and ``thing_colors`` (RGB) for one
            colour per class.
        output_path: the image file to write; its extension picks the format.

    Returns:
        ``output_path``.
    """
    rgb = read_image(record["file_name"], format="RGB")  # EXIF orientation applied
    # With thing_colors, one colour per class (detectron2 picks them at random otherwise,
    # and only its SEGMENTATION mode reads thing_colors).
    mode = ColorMode.SEGMENTATION if metadata.get("thing_colors", None) else ColorMode.IMAGE
    drawn = Visualizer(rgb, metadata, instance_mode=mode).draw_dataset_dict(record).get_image()
    cv2.imwrite(output_path, drawn[:, :, ::-1])
    return output_path


def draw_ground_truth_from_config(
    config_file: str, output_dir: str, dataset_name: Optional[str] = None, count: int = 8,
    opts: Optional[list] = None,
) -> List[str]:
    """Register the config's datasets and draw one of them (default: the first of DATASETS.TRAIN)."""
    # Drawing needs no accelerator: a config made for a GPU previews on any machine.
    cfg = setup_config(config_file, list(opts or []), device="cpu")
    name = dataset_name or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if not name:
        raise ValueError(f"{config_file} has no DATASETS.TRAIN; pass the dataset to draw.")
    return draw_ground_truth(name, output_dir, count)


def main(argv=None) -> List[str]:
    parser = argparse.ArgumentParser(description="Draw a dataset's ground-truth boxes.")
    parser.add_argument("--config-file", required=True, help="the config whose datasets to register")
    parser.add_argument("--dataset", help="registered dataset (default: the config's first DATASETS.TRAIN)")
    parser.add_argument("--count", type=int, default=8, help="images to draw")
    parser.add_argument("--output", default="output/ground_truth", help="folder for the drawn images")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    paths = draw_ground_truth_from_config(args.config_file, args.output, args.dataset, args.count, args.opts)
    print(f"Drew {len(paths)} image(s) with their ground truth into {args.output}")
    return paths


if __name__ == "__main__":
    main()
