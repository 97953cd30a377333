"""A one-image COCO dataset written from given annotations and registered (data tests)."""
import json
import uuid

from PIL import Image

from fpn_plugin.data import register_custom_dataset


def register_coco(tmp_path, annotations, images=None, categories=None) -> str:
    """Write ``ann.json`` (one 100x80 image ``a.png`` by default), register it; return its name."""
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (100, 80)).save(tmp_path / "img" / "a.png")
    data = {"images": images or [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
            "annotations": annotations, "categories": categories or [{"id": 1, "name": "thing"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    name = "coco_" + uuid.uuid4().hex[:6]
    register_custom_dataset(name, {"FORMAT": "coco", "JSON": str(path), "IMAGES": str(tmp_path / "img")})
    return name


def ann(i, bbox, **extra) -> dict:
    """A COCO annotation of image 1, category 1."""
    return {"id": i, "image_id": 1, "category_id": 1, "bbox": bbox, "area": 1.0, "iscrowd": 0, **extra}
