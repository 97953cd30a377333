"""The config keys fpn_plugin adds to detectron2's (``add_fpn_plugin_config(cfg)``), and
:func:`load_config`, the one way a config file and its overrides are read, and
:func:`setup_config`, the ready config (device resolved, datasets registered) commands start from."""
import difflib
import re
from typing import Optional, Sequence

from detectron2.config import CfgNode as CN

from .device import resolve_device

__all__ = ["add_fpn_plugin_config", "load_config", "setup_config"]

# What setup_config does with the config's datasets.
_DATASET_STEPS = ("load", "register", "none")


def load_config(config_file: Optional[str] = None, opts: Sequence[str] = ()) -> CN:
    """detectron2's config with fpn_plugin's keys, ``config_file`` merged, then ``opts``.

    An unknown key (a typo in the file or the overrides) is a KeyError that names the file,
    the key, the closest existing key and the keys of its node; yacs only says "Non-existent".
    Datasets are not registered and the device is not resolved here (see :func:`setup_config`).
    """
    from detectron2.config import get_cfg

    cfg = add_fpn_plugin_config(get_cfg())
    if config_file is not None:
        _merge(cfg, lambda: cfg.merge_from_file(config_file), config_file)
    if opts:
        _merge(cfg, lambda: cfg.merge_from_list(list(opts)), "the command-line overrides")
    return cfg


def setup_config(
    config_file: Optional[str] = None,
    opts: Sequence[str] = (),
    device: Optional[str] = None,
    datasets: str = "load",
) -> CN:
    """A ready config, the one way every command and the notebook get theirs.

    :func:`load_config` (fpn_plugin's keys, the file, the overrides), then the device resolved
    and the config's own datasets (DATASETS.ROOT, SHAPES, CUSTOM) registered.

    Args:
        config_file: the YAML file (its folder anchors relative dataset paths).
        opts: overrides, ``["KEY", "VALUE", ...]``.
        device: replaces ``MODEL.DEVICE`` when given; "auto" becomes "cuda" or "cpu" either way.
        datasets: "load" (training, evaluation: registered, NUM_CLASSES follows them, train/test
            overlap checked, so their files are read), "register" (prediction: registered for
            their class names, no file read, so a config from another machine still predicts)
            or "none".

    Returns:
        The config, not frozen.
    """
    from .data.register import register_datasets_from_config, setup_datasets

    if datasets not in _DATASET_STEPS:
        raise ValueError(f"datasets must be one of {_DATASET_STEPS}, got {datasets!r}")
    cfg = load_config(config_file, opts)
    cfg.MODEL.DEVICE = resolve_device(device or cfg.MODEL.DEVICE)
    if datasets == "load":
        setup_datasets(cfg, config_file)
    elif datasets == "register":
        register_datasets_from_config(cfg, config_file)
    return cfg


def _merge(cfg: CN, merge, source: str) -> None:
    try:
        merge()
    except (KeyError, AssertionError) as e:  # yacs: KeyError from a file, AssertionError from a list
        found = re.search(r"Non-existent (?:config )?key: ([\w.]+)", str(e))
        if not found:
            raise
        raise KeyError(_unknown_key_message(cfg, found.group(1), source)) from None


def _unknown_key_message(cfg: CN, full_key: str, source: str) -> str:
    parent, node = "", cfg
    for part in full_key.split(".")[:-1]:
        if not isinstance(node.get(part), CN):
            break
        parent, node = f"{parent}.{part}".lstrip("."), node[part]
    leaf = full_key[len(parent):].lstrip(".").split(".")[0]
    close = difflib.get_close_matches(leaf, list(node.keys()), n=1, cutoff=0.6)
    where = f"{parent}." if parent else ""
    hint = f" Did you mean {where}{close[0]}?" if close else ""
    return (f"{source}: {full_key} is not a config key.{hint} The keys of "
            f"{parent or 'the config'} are: {', '.join(sorted(node.keys()))}.")


def add_fpn_plugin_config(cfg: CN) -> CN:
    """Add fpn_plugin's keys, with their defaults, to a detectron2 config (in place).

    Call it after ``get_cfg()`` and before ``merge_from_file``. Every key has a comment
    saying what it does.
    """
    # CUDA when torch sees a GPU, else the CPU: detectron2's default "cuda" fails on the
    # laptops and CPU runtimes many users start on. Configs may also say "auto", which
    # fpn_plugin's entry points resolve the same way (fpn_plugin.device.resolve_device).
    cfg.MODEL.DEVICE = resolve_device("auto")
    _add_backbone_keys(cfg)
    _add_vgg_keys(cfg)
    _add_engine_keys(cfg)
    _add_data_keys(cfg)
    return cfg


def _add_backbone_keys(_C: CN) -> None:
    """Backbones, ROI heads and weight formats (fpn_plugin.modeling, fpn_plugin.checkpoint)."""
    # The plugin ResNet (torchvision module names), used by the backbones
    # build_plugin_resnet_backbone, build_plugin_resnet_fpn_backbone and the C4 ROI head
    # PluginRes5ROIHeads. MODEL.BACKBONE.FREEZE_AT keeps detectron2's meaning for it.
    _C.MODEL.PLUGIN_RESNET = CN()
    # 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck); must match the depth of MODEL.WEIGHTS.
    _C.MODEL.PLUGIN_RESNET.DEPTH = 50
    # Outputs among res2..res5 (strides 4, 8, 16, 32); stages after the last one are not built.
    _C.MODEL.PLUGIN_RESNET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Norm after every conv: FrozenBN, BN, SyncBN or GN (detectron2.layers.get_norm names).
    _C.MODEL.PLUGIN_RESNET.NORM = "FrozenBN"
    # Stride of a Bottleneck in its first 1x1 conv (True: MSRA/detectron2 weights) or in its 3x3
    # conv (False: torchvision weights). The checkpointer refuses weights trained the other way.
    _C.MODEL.PLUGIN_RESNET.STRIDE_IN_1X1 = False
    # How the ROI heads' ROIAlign (POOLER_TYPE ROIAlign, ROIAlignV2) is computed in the models
    # fpn_plugin builds (Trainer, Predictor, predict.py, evaluation): "gather" (one weighted
    # gather of feature rows, fpn_plugin.modeling.roi_align: torchvision's result and gradient
    # up to fp32 rounding, ~8x faster forward + backward on CPU, where torchvision's backward
    # took about half of a training step), "torchvision" (detectron2's layer: torchvision's
    # kernel) or "auto" (gather on the CPU, torchvision's kernel on CUDA). Export always traces
    # torchvision's op; detectron2's own DefaultPredictor builds torchvision's.
    _C.MODEL.PLUGIN_ROI_ALIGN = "auto"
    # What fpn_plugin.checkpoint.PluginCheckpointer does when the pixel format/mean/std or the
    # stride placement that MODEL.WEIGHTS was trained with differs from this config:
    # "error" (raise), "warn" (log a warning and load anyway) or "off" (no check).
    _C.MODEL.PLUGIN_WEIGHTS = CN()
    _C.MODEL.PLUGIN_WEIGHTS.FORMAT_CHECK = "error"
    # Weight files (.pkl, .pth) are read without running code: one that asks for anything but
    # arrays, tensors, numbers, strings and containers is refused (fpn_plugin.checkpoint.safe_load).
    # True loads such a file with plain pickle, with a warning in the log: trusted files only.
    _C.MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE = False
    # Test-time resize of META_ARCHITECTURE "TorchvisionGeneralizedRCNN" (imported torchvision
    # detectors), done in the model as torchvision's GeneralizedRCNNTransform(MIN_SIZE, MAX_SIZE)
    # does; with it INPUT.MIN_SIZE_TEST must be 0. Other meta-architectures ignore these keys.
    _C.INPUT.TORCHVISION_RESIZE = CN()
    _C.INPUT.TORCHVISION_RESIZE.MIN_SIZE = 800
    _C.INPUT.TORCHVISION_RESIZE.MAX_SIZE = 1333


def _add_vgg_keys(_C: CN) -> None:
    """The VGG16 backbone and its fc6/fc7 box head (fpn_plugin.modeling.vgg)."""
    _C.MODEL.VGG = CN()
    # Features build_vgg16_backbone returns, among conv1_2, conv2_2, conv3_3, conv4_3, conv5_3
    # (stride 16: Faster R-CNN's) and pool5 (stride 32); VGG16-FPN uses MODEL.FPN.IN_FEATURES.
    _C.MODEL.VGG.OUT_FEATURES = ["conv5_3"]
    # Leading conv layers (of 13) kept frozen; 4 = conv1_1..conv2_2, as in Faster R-CNN.
    _C.MODEL.VGG.FREEZE_CONVS = 4
    # Dropout after fc6 and after fc7 in the VGG16BoxHead ROI box head (torchvision: 0.5).
    _C.MODEL.VGG.BOX_HEAD_DROPOUT = 0.5


def _add_engine_keys(_C: CN) -> None:
    """Training engine: hooks, schedules, precision (fpn_plugin.engine)."""
    # Total images per optimizer step that BASE_LR, MAX_ITER, STEPS, WARMUP_ITERS and the
    # periods were written for; 0 means SOLVER.IMS_PER_BATCH (the config's own batch).
    _C.SOLVER.REFERENCE_BATCH_SIZE = 0
    # Images per device per forward pass; 0 means IMS_PER_BATCH / number of processes.
    _C.SOLVER.IMS_PER_DEVICE = 0
    # Forward/backward passes summed into one optimizer step (one iteration).
    _C.SOLVER.ACCUMULATION_STEPS = 1
    # Training images that cannot be read (missing, truncated, no image) are skipped with a
    # warning naming each, up to this fraction of the training set; past it training stops.
    _C.DATALOADER.MAX_UNREADABLE_FRACTION = 0.01
    # Decode every training image once before training starts (one full pass over the data,
    # DATALOADER.NUM_WORKERS threads) and leave the unreadable ones out, named, within the
    # same limit: a bad file is then found in minutes, not hours into a run.
    _C.DATALOADER.CHECK_IMAGES_AT_START = False
    # The divergence guard also stops on a finite total loss above this many times its median
    # over the last 20 iterations (an explosion on its way to NaN); 0 = only NaN/inf stop it.
    _C.SOLVER.LOSS_EXPLOSION_FACTOR = 100.0
    # How BASE_LR follows the batch when it differs from the reference: linear, sqrt or none.
    _C.SOLVER.LR_SCALING = "linear"
    # When > 0, train this many epochs: MAX_ITER is computed from the training set size.
    _C.SOLVER.EPOCHS = 0.0
    # With EPOCHS: LR decay points in epochs (empty: STEPS keep their fraction of MAX_ITER).
    _C.SOLVER.STEPS_EPOCHS = ()
    # With SOLVER.AMP.ENABLED: "auto" (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32;
    # fpn_plugin.precision), "fp16", "bf16" or "fp32".
    _C.SOLVER.AMP.PRECISION = "auto"
    # Metric that picks model_best.pth at each evaluation, e.g. "bbox/AP50"; "" = off.
    _C.TEST.BEST_CHECKPOINT = CN()
    _C.TEST.BEST_CHECKPOINT.METRIC = ""
    # "max" when higher is better (AP), "min" when lower is better (a loss).
    _C.TEST.BEST_CHECKPOINT.MODE = "max"
    _C.TEST.EARLY_STOPPING = CN()
    # Evaluations without an improvement before training stops; 0 = off.
    _C.TEST.EARLY_STOPPING.PATIENCE = 0
    # An improvement must beat the best value by more than this.
    _C.TEST.EARLY_STOPPING.MIN_DELTA = 0.0
    # Metric watched; "" means TEST.BEST_CHECKPOINT.METRIC.
    _C.TEST.EARLY_STOPPING.METRIC = ""
    # "max" or "min"; as for TEST.BEST_CHECKPOINT.MODE.
    _C.TEST.EARLY_STOPPING.MODE = "max"
    _C.TEST.VAL_LOSS = CN()
    # Registered datasets whose losses (no gradients) are logged as val/<loss>; () = off.
    _C.TEST.VAL_LOSS.DATASETS = ()
    # Iterations between validation losses; 0 means TEST.EVAL_PERIOD.
    _C.TEST.VAL_LOSS.PERIOD = 0
    _C.TEST.PLOTS = CN()
    # PNG plots of losses, LR and metrics in OUTPUT_DIR/plots, at each evaluation and the end.
    _C.TEST.PLOTS.ENABLED = True


def _add_data_keys(_C: CN) -> None:
    """Datasets and evaluation (fpn_plugin.data, fpn_plugin.evaluation)."""
    # Folder of the builtin datasets (coco/, VOC2007/, VOC2012/) and base of relative dataset
    # paths that are not found next to the config file; "" = $DETECTRON2_DATASETS or ./datasets.
    _C.DATASETS.ROOT = ""
    # Datasets declared in the config, by name: each has FORMAT ("coco", "vocdevkit" or
    # "voc_folder") and its paths; see fpn_plugin/data/custom.py and datasets/README.md.
    _C.DATASETS.CUSTOM = CN(new_allowed=True)
    # The synthetic shapes dataset (shapes_train, shapes_val), generated on first use.
    _C.DATASETS.SHAPES = CN()
    # Where the generated images and COCO JSON are cached; "" = <DATASETS.ROOT>/shapes.
    _C.DATASETS.SHAPES.CACHE_DIR = ""
    # Seed of the generator: the same seed and sizes always give the same images and boxes.
    _C.DATASETS.SHAPES.SEED = 0
    # Number of training and validation images.
    _C.DATASETS.SHAPES.NUM_TRAIN = 200
    _C.DATASETS.SHAPES.NUM_VAL = 50
    # Image height and width in pixels.
    _C.DATASETS.SHAPES.IMAGE_SIZE = (192, 256)
    # Evaluator: "" = chosen from the dataset (VOC for VOC data, COCO otherwise), "voc", "coco".
    _C.TEST.EVALUATOR = ""
    # Published result this config targets (a key of fpn_plugin.evaluation.references), printed
    # next to ours after evaluation and saved as reference_comparison.{md,csv}; "" = none.
    _C.TEST.REFERENCE = ""
