"""Read Pascal VOC XML annotations: the VOCdevkit layout and a flat folder of images + XMLs.

Unlike detectron2's ``load_voc_instances``, this keeps each object's ``difficult`` flag in its
annotation (the VOC evaluator ignores difficult objects; training still uses them, as
detectron2 does), reads the class names from the data when none are given, finds images
by the XML's ``<filename>`` or any common extension, and says which file is wrong when one is.
"""
import logging
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence

from detectron2.structures import BoxMode

from ..image_files import image_file_candidates

__all__ = [
    "read_image_set",
    "parse_voc_xml",
    "voc_box_to_xyxy",
    "voc_class_names",
    "load_voc_folder",
    "load_vocdevkit",
    "image_set_path",
]

logger = logging.getLogger(__name__)


def read_image_set(path: str) -> List[str]:
    """The image ids of an ``ImageSets/Main/<split>.txt`` list (first column, no blank lines)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"VOC image set list {path} does not exist. Expected one image id per line in "
            "<VOC dir>/ImageSets/Main/<split>.txt; check DIR and SPLIT of the dataset."
        )
    with open(path) as f:
        # Class-specific lists ("000005 -1") have a second column: keep the id only.
        return [line.split()[0] for line in f if line.strip()]


def parse_voc_xml(path: str) -> Dict:
    """Parse one VOC XML file.

    Returns:
        dict with "filename" (or None), "width", "height" (None when absent) and "objects": a
        list of dicts with "name", "bbox" (the 1-based inclusive pixel coordinates as written)
        and "difficult" (0/1).

    Raises:
        ValueError: naming the file and the object when the XML is malformed.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ValueError(f"Cannot parse VOC annotation {path}: {e}") from e

    def _int(node, tag):
        child = node.find(tag)
        return None if child is None or child.text is None else int(float(child.text))

    size = root.find("size")
    rec = {
        "filename": (root.findtext("filename") or "").strip() or None,
        "width": _int(size, "width") if size is not None else None,
        "height": _int(size, "height") if size is not None else None,
        "objects": [],
    }
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            bbox = [float(box.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: object {i} ({name!r}) has no valid <bndbox> with xmin, ymin, xmax, "
                f"ymax: {e}"
            ) from e
        rec["objects"].append(
            {"name": name, "bbox": bbox, "difficult": _int(obj, "difficult") or 0}
        )
    return rec


def voc_box_to_xyxy(box: Sequence[float]) -> List[float]:
    """A VOC box (1-based inclusive pixels) in continuous XYXY_ABS coordinates, as detectron2
    converts it (``xmin - 1, ymin - 1, xmax, ymax``). A box of no extent in the file
    (``xmin >= xmax``) keeps it, so that the box rule drops it instead of a one-pixel box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    shift = 1.0 if (x1 > x0 and y1 > y0) else 0.0
    return [x0 - shift, y0 - shift, x1, y1]


def voc_class_names(xml_paths: Sequence[str]) -> List[str]:
    """The sorted set of object names in the given XML files: class names from the data.

    A file that cannot be parsed is left out with a warning naming it: it blocks only the
    split that lists it (whose loader raises on it), not the others.
    """
    names, malformed = set(), []
    for path in xml_paths:
        try:
            names.update(o["name"] for o in parse_voc_xml(path)["objects"])
        except ValueError as e:  # parse_voc_xml names the file and what is wrong
            malformed.append(f"{path} ({e})")
    if malformed:
        logger.warning("Class names taken without %d XML files that cannot be parsed: %s",
                       len(malformed), "; ".join(malformed[:5]))
    return sorted(names)


def _find_image(images_dir: str, image_id: str, filename: Optional[str]) -> str:
    if filename:
        path = os.path.join(images_dir, filename)
        if os.path.isfile(path):
            return path
    for name in image_file_candidates(image_id):
        path = os.path.join(images_dir, name)
        if os.path.isfile(path):
            return path
    # Missing images are reported by `python -m fpn_plugin.data.check`, and training skips
    # them: return the most likely path rather than failing the whole dataset here.
    return os.path.join(images_dir, filename or image_id + ".jpg")


def _image_size(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.size  # (width, height)


def load_voc_folder(
    annotations_dir: str,
    images_dir: str,
    ids: Optional[Sequence[str]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> List[Dict]:
    """Load VOC XML annotations into detectron2's dataset dicts.

    Args:
        annotations_dir: folder of ``<id>.xml`` files.
        images_dir: folder of the images (may be the same folder).
        ids: the image ids to load (an ``ImageSets`` list); all XML files, sorted, if None.
        class_names: the classes, in contiguous-id order; read from the data if None.

    Returns:
        list[dict]: detectron2 dataset dicts; boxes are XYXY_ABS with detectron2's VOC
        convention (``xmin - 1, ymin - 1, xmax, ymax``) and each annotation has "difficult".

    Raises:
        FileNotFoundError, ValueError: naming the file, the object and how to fix it.
    """
    if not os.path.isdir(annotations_dir):
        raise FileNotFoundError(f"VOC annotation folder {annotations_dir} does not exist.")
    if ids is None:
        ids = sorted(f[:-4] for f in os.listdir(annotations_dir) if f.endswith(".xml"))
        if not ids:
            raise FileNotFoundError(f"No .xml annotation files in {annotations_dir}.")
    xml_paths = [os.path.join(annotations_dir, i + ".xml") for i in ids]
    missing = [p for p in xml_paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} annotation file(s) listed but missing, e.g. {missing[0]}. "
            "Remove their ids from the image set list or add the XML files."
        )
    if class_names is None:
        class_names = voc_class_names(xml_paths)
    index = {name: i for i, name in enumerate(class_names)}

    dicts = []
    for image_id, xml_path in zip(ids, xml_paths):
        rec = parse_voc_xml(xml_path)
        file_name = _find_image(images_dir, image_id, rec["filename"])
        width, height = rec["width"], rec["height"]
        if not width or not height:
            if not os.path.isfile(file_name):
                raise ValueError(
                    f"{xml_path} has no <size> and its image {file_name} is missing, so the "
                    "image size is unknown. Add <size><width>/<height> or the image."
                )
            width, height = _image_size(file_name)
        annotations = []
        for k, obj in enumerate(rec["objects"]):
            if obj["name"] not in index:
                raise ValueError(
                    f"{xml_path}: object {k} has class {obj['name']!r}, which is not one of the "
                    f"{len(class_names)} classes {list(class_names)}. Add it to the dataset's "
                    "CLASSES (or leave CLASSES empty to take them from the data)."
                )
            annotations.append(
                {
                    "category_id": index[obj["name"]],
                    "bbox": voc_box_to_xyxy(obj["bbox"]),
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "difficult": int(obj["difficult"]),
                }
            )
        dicts.append(
            {
                "file_name": file_name,
                "image_id": image_id,
                "height": int(height),
                "width": int(width),
                "annotations": annotations,
            }
        )
    return dicts


def image_set_path(dirname: str, split: str) -> str:
    """The list file of a split: ``<dirname>/ImageSets/Main/<split>.txt``, or ``split`` itself
    when it is a path ending in ``.txt``."""
    if split.endswith(".txt"):
        return split
    return os.path.join(dirname, "ImageSets", "Main", split + ".txt")


def load_vocdevkit(
    dirname: str, split: str, class_names: Optional[Sequence[str]] = None
) -> List[Dict]:
    """Load a VOCdevkit-layout folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``).

    Args:
        dirname: e.g. ``datasets/VOC2007``.
        split: the list in ``ImageSets/Main``, e.g. "trainval" or "test"; or the path of a
            ``.txt`` list of image ids anywhere (a subset of your own).
        class_names: as for :func:`load_voc_folder`.
    """
    ids = read_image_set(image_set_path(dirname, split))
    return load_voc_folder(
        os.path.join(dirname, "Annotations"), os.path.join(dirname, "JPEGImages"), ids, class_names
    )
