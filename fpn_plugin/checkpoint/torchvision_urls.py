"""``torchvision://NAME`` in ``MODEL.WEIGHTS``: torchvision's weights, as in mmdetection.

``torchvision://resnet50`` means torchvision's original ImageNet weights of ``resnet50``
(``ResNet50_Weights.IMAGENET1K_V1``, the file every detection paper and mmdetection used);
``torchvision://resnet50.IMAGENET1K_V2`` picks another weights entry, and
``torchvision://fasterrcnn_resnet50_fpn`` (``_v2``) torchvision's COCO detectors (``COCO_V1``). The file is looked up in
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where ``torchvision.models`` keeps it too),
downloaded there when absent, and a clear error says what to do when there is no internet.
"""
import os
import urllib.error
from typing import Tuple

import torch
import torchvision
from iopath.common.file_io import PathHandler

__all__ = ["TorchvisionHandler", "resolve_torchvision_name", "cache_path", "register"]

PREFIX = "torchvision://"


def resolve_torchvision_name(name: str) -> Tuple[str, str]:
    """Map ``resnet50`` or ``resnet50.IMAGENET1K_V2`` to (weights enum name, URL).

    Raises:
        ValueError: the model or the weights entry does not exist in this torchvision.
    """
    model_name, _, entry = name.partition(".")
    try:
        weights_enum = torchvision.models.get_model_weights(model_name)
    except (ValueError, KeyError):
        known = sorted(torchvision.models.list_models(module=torchvision.models))
        raise ValueError(
            f"'{PREFIX}{name}': torchvision {torchvision.__version__} has no model "
            f"'{model_name}'. Known names include: {', '.join(known[:40])} ..."
        ) from None
    entry = entry or next(iter(weights_enum.__members__))  # the first: IMAGENET1K_V1, COCO_V1
    if entry not in weights_enum.__members__:
        raise ValueError(
            f"'{PREFIX}{name}': {weights_enum.__name__} has no entry '{entry}'; it has "
            f"{', '.join(weights_enum.__members__)}."
        )
    weights = weights_enum[entry]
    return f"{weights_enum.__name__}.{entry}", weights.url


def cache_path(url: str) -> str:
    """Where torch (and torchvision) keep a downloaded weights file."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _download(url: str, dst: str) -> None:
    # Kept separate so tests replace it: tests never touch the network.
    torch.hub.download_url_to_file(url, dst, progress=True)


class TorchvisionHandler(PathHandler):
    """iopath handler that resolves ``torchvision://NAME`` to a local weights file."""

    def _get_supported_prefixes(self):
        return [PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        # `force` (re-download) is iopath's option for URLs; a cached torchvision file never
        # changes (its name carries its hash), so it is accepted and ignored.
        self._check_kwargs(kwargs)
        name = path[len(PREFIX):]
        weights_name, url = resolve_torchvision_name(name)
        local = cache_path(url)
        if os.path.isfile(local):
            return local
        os.makedirs(os.path.dirname(local), exist_ok=True)
        try:
            _download(url, local)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise OSError(
                f"Cannot fetch MODEL.WEIGHTS '{path}' ({weights_name}) from {url}: {e}. Without "
                f"internet, download that file on another machine and copy it to {local} "
                "(torch's hub cache; set TORCH_HOME to move it), or set MODEL.WEIGHTS to the path "
                "of a local copy."
            ) from e
        return local

    def _open(self, path: str, mode: str = "r", **kwargs):
        return open(self._get_local_path(path), mode)

    def _isfile(self, path: str, **kwargs) -> bool:
        return os.path.isfile(cache_path(resolve_torchvision_name(path[len(PREFIX):])[1]))


def register() -> None:
    """Register the handler with detectron2's ``PathManager`` (once)."""
    from detectron2.utils.file_io import PathManager

    if PREFIX not in PathManager._path_handlers:
        PathManager.register_handler(TorchvisionHandler())
