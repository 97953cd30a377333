"""fpn_plugin.data.preview: ground truth drawn from the dataset dicts as registered."""
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from fpn_plugin.data.preview import draw_ground_truth, main


@pytest.fixture
def two_images(tmp_path):
    name = f"preview_{tmp_path.name}"
    records = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((60, 90, 3), 255, np.uint8)).save(path)
        records.append({"file_name": str(path), "image_id": i, "height": 60, "width": 90,
                        "annotations": [{"bbox": [10, 10, 50, 40], "bbox_mode": BoxMode.XYXY_ABS,
                                         "category_id": 0}]})
    DatasetCatalog.register(name, lambda: records)
    # A fixed colour (detectron2 only jitters it): a random one may be nearly white.
    MetadataCatalog.get(name).set(thing_classes=["box"], thing_colors=[(0, 0, 255)])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_boxes_are_drawn_where_the_annotations_are(two_images, tmp_path):
    paths = draw_ground_truth(two_images, str(tmp_path / "gt"), count=5)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["img0.jpg", "img1.jpg"]  # all there are
    drawn = np.asarray(Image.open(paths[0]).convert("RGB")).astype(int)
    assert drawn.shape == (60, 90, 3)
    # The box's edges (x = 10 and 50, y = 10 and 40) are drawn over the white image (half
    # transparent, so tens of levels off white), and a far corner stays white.
    off_white = 255 - drawn
    assert off_white[8:13, 15:45].max() > 30 and off_white[15:35, 8:13].max() > 30
    assert off_white[15:35, 48:53].max() > 30 and off_white[38:43, 15:45].max() > 30
    assert (255 - drawn[55, 85]).max() < 30


def test_bad_requests_say_what_is_wrong(two_images, tmp_path):
    with pytest.raises(ValueError, match="count is 0"):
        draw_ground_truth(two_images, str(tmp_path), count=0)


def test_cli_draws_the_configs_training_set(tmp_path, capsys):
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "shapes_r18_fpn.yaml"
    paths = main(["--config-file", str(config), "--count", "2", "--output", str(tmp_path / "out"),
                  "DATASETS.SHAPES.CACHE_DIR", str(tmp_path / "shapes"),
                  "DATASETS.SHAPES.NUM_TRAIN", "3", "DATASETS.SHAPES.NUM_VAL", "1"])
    assert len(paths) == 2 and all(Path(p).is_file() for p in paths)
    assert "Drew 2 image(s)" in capsys.readouterr().out
