"""Shared fixtures for the data tests: the small real datasets beside the project."""
from pathlib import Path

import pytest

# ../shared/data beside the repository: absent in a user's clone.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
VOC_SUBSET = SHARED_DATA / "voc2007_subset" / "VOCdevkit" / "VOC2007"
FACEMASK = SHARED_DATA / "facemask_coco"


@pytest.fixture()
def voc_subset():
    if not (VOC_SUBSET / "Annotations").is_dir():
        pytest.skip(f"the shared VOC2007 subset is not at {VOC_SUBSET} (only on the dev machine)")
    return VOC_SUBSET


@pytest.fixture()
def facemask():
    if not (FACEMASK / "annotations" / "custom_train.json").is_file():
        pytest.skip(f"the shared facemask COCO dataset is not at {FACEMASK} (only on the dev machine)")
    return FACEMASK
