"""The trainer's data loaders: a training loader whose order survives a resume, and
unreadable images named (skipped in training, an error in evaluation).

detectron2's training samplers draw an infinite, seeded stream of indices, and each process
takes every ``world_size``-th one. Restarting a run restarts that stream, so a resumed run
would see the first images again. :class:`ResumableSampler` skips the indices the previous run
consumed. The order is exact when batches are formed in sampler order (aspect-ratio grouping
may hold back a few images across the resume point when images have both orientations).
"""
import itertools
import logging
import math
import operator
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.utils.data as torchdata
from detectron2.data import DatasetMapper
from detectron2.data.build import _train_loader_from_config, trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import AspectRatioGroupedDataset, MapDataset, ToIterableDataset
from detectron2.utils import comm

__all__ = ["NameUnreadableImages", "ResumableSampler", "SkipUnreadableImages", "build_resumable_train_loader",
           "build_test_loader", "drop_unreadable_images"]

logger = logging.getLogger(__name__)


class ResumableSampler(torchdata.Sampler):
    """Wraps a detectron2 training sampler (``TrainingSampler``, ``RepeatFactorTrainingSampler``
    ...) so that it can start after the indices already consumed.

    Attributes:
        consumed (int): indices this process has already taken; set it before iterating.
        seed (int): the seed of the index stream (saved in checkpoints, restored on resume).
    """

    def __init__(self, sampler):
        if not hasattr(sampler, "_infinite_indices"):
            raise TypeError(
                f"{type(sampler).__name__} has no infinite index stream (_infinite_indices); "
                "use a detectron2 training sampler (DATALOADER.SAMPLER_TRAIN)."
            )
        self.sampler = sampler
        # The DataLoader draws its workers' base seed from this generator rather than from
        # torch's global one, whose state belongs to the model's random sampling.
        self.generator = torch.Generator()
        self.start_at(0)

    def start_at(self, consumed: int) -> None:
        """Make the next iteration start after ``consumed`` indices of this process."""
        self.consumed = int(consumed)
        self.generator.manual_seed(self.seed * 1000003 + self.consumed)

    @property
    def seed(self) -> int:
        return self.sampler._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.sampler._seed = int(value)
        self.start_at(self.consumed)

    def __iter__(self):
        rank, world = comm.get_rank(), comm.get_world_size()
        yield from itertools.islice(
            self.sampler._infinite_indices(), rank + self.consumed * world, None, world
        )


def _too_many_unreadable(unreadable: dict, limit: int) -> RuntimeError:
    listed = "\n".join(f"  {f}: {r}" for f, r in list(unreadable.items())[:20])
    return RuntimeError(
        f"{len(unreadable)} training images could not be read, more than the {limit} "
        f"DATALOADER.MAX_UNREADABLE_FRACTION allows:\n{listed}\nFix or remove them (python -m "
        "fpn_plugin.data.check --config-file ... lists every problem), or raise "
        "DATALOADER.MAX_UNREADABLE_FRACTION."
    )


def _read_error(file_name: str, image_format: str):
    from detectron2.data.detection_utils import read_image

    try:
        read_image(file_name, format=image_format)  # decoded as the training mapper decodes it
    except (OSError, SyntaxError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def drop_unreadable_images(dataset_dicts, limit: int, image_format: str = "BGR", threads: int = 2):
    """Decode every training image once before training; drop the unreadable ones, naming each.

    The check behind ``DATALOADER.CHECK_IMAGES_AT_START``: each process decodes its share of the
    images (as detectron2's reader does, EXIF included), the list of failures is shared, and
    past ``limit`` images training stops with the list, as :class:`SkipUnreadableImages` would
    mid-run. It costs one full decode of the dataset.

    Returns:
        the dataset dicts of the readable images (the same list when all are readable).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    rank, world = comm.get_rank(), comm.get_world_size()
    mine = [d["file_name"] for d in dataset_dicts[rank::world]]
    with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL decodes without holding the GIL
        errors = list(tqdm(pool.map(lambda f: _read_error(f, image_format), mine), total=len(mine),
                           desc="checking training images", unit="img", disable=len(mine) < 1000))
    found = {f: e for f, e in zip(mine, errors) if e}
    unreadable = {}
    for part in comm.all_gather(found) if world > 1 else [found]:
        unreadable.update(part)
    seconds = time.perf_counter() - start
    if len(unreadable) > limit:
        raise _too_many_unreadable(unreadable, limit)
    for name, reason in unreadable.items():
        logger.warning("Leaving out an unreadable training image: %s: %s", name, reason)
    logger.info("Checked the %d training images before training (%.1f s): %d unreadable%s.",
                len(dataset_dicts), seconds, len(unreadable), ", left out" if unreadable else "")
    if not unreadable:
        return dataset_dicts
    return [d for d in dataset_dicts if d["file_name"] not in unreadable]


class SkipUnreadableImages:
    """A dataset mapper that skips the images it cannot read, naming each, up to a limit.

    detectron2's ``MapDataset`` retries another image when its mapper returns None, but an
    exception (a missing file, a truncated JPEG, a file that is no image) stops training,
    naming no file. Here each such image is skipped with a warning naming it; past ``limit``
    distinct files (counted per data-loading process) training stops with the list.
    """

    def __init__(self, mapper, limit: int):
        self.mapper, self.limit = mapper, int(limit)
        self.unreadable = {}  # file name -> reason

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except (OSError, SyntaxError) as e:  # PIL's errors for missing, truncated, unknown files
            name = dataset_dict.get("file_name", "?")
            self.unreadable[name] = f"{type(e).__name__}: {e}"
            if len(self.unreadable) > self.limit:
                raise _too_many_unreadable(self.unreadable, self.limit) from e
            logger.warning("Skipping an unreadable training image (%d of at most %d): %s: %s",
                           len(self.unreadable), self.limit, name, self.unreadable[name])
            return None  # MapDataset takes another image


class NameUnreadableImages:
    """A test-time mapper whose read errors name the image: evaluation cannot skip one (the
    evaluator would count its objects as missed), so it stops, saying which file and why."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except (OSError, SyntaxError) as e:
            raise RuntimeError(
                f"Evaluation cannot read the image {dataset_dict.get('file_name', '?')} "
                f"({type(e).__name__}: {e}). Fix or remove it from the test dataset (python -m "
                "fpn_plugin.data.check lists every problem)."
            ) from e


def build_test_loader(cfg, dataset_name, mapper=None):
    """detectron2's test loader whose unreadable images are named (:class:`NameUnreadableImages`)."""
    from detectron2.data import build_detection_test_loader

    return build_detection_test_loader(
        cfg, dataset_name, mapper=NameUnreadableImages(mapper or DatasetMapper(cfg, False))
    )


def build_resumable_train_loader(cfg, mapper=None):
    """Like ``build_detection_train_loader(cfg)``, with a :class:`ResumableSampler`.

    Returns:
        (loader, sampler, number of training images)
    """
    kwargs = _train_loader_from_config(cfg, mapper=mapper or DatasetMapper(cfg, True))
    limit = math.ceil(cfg.DATALOADER.MAX_UNREADABLE_FRACTION * len(kwargs["dataset"]))
    if cfg.DATALOADER.CHECK_IMAGES_AT_START:
        readable = drop_unreadable_images(kwargs["dataset"], limit, cfg.INPUT.FORMAT,
                                          cfg.DATALOADER.NUM_WORKERS)
        if len(readable) < len(kwargs["dataset"]):  # the sampler is sized by the dataset
            kwargs = _train_loader_from_config(cfg, mapper=kwargs["mapper"], dataset=readable)
    dataset = MapDataset(kwargs["dataset"], SkipUnreadableImages(kwargs["mapper"], limit))
    sampler = ResumableSampler(kwargs["sampler"])
    batch_size = kwargs["total_batch_size"] // comm.get_world_size()
    iterable = ToIterableDataset(dataset, sampler)
    common = dict(
        num_workers=kwargs["num_workers"],
        worker_init_fn=worker_init_reset_seed,
        generator=sampler.generator,
    )
    if kwargs["aspect_ratio_grouping"]:
        loader = torchdata.DataLoader(iterable, collate_fn=operator.itemgetter(0), **common)
        loader = AspectRatioGroupedDataset(loader, batch_size)
    else:
        loader = torchdata.DataLoader(
            iterable, batch_size=batch_size, drop_last=True, collate_fn=trivial_batch_collator, **common
        )
    return loader, sampler, len(kwargs["dataset"])
