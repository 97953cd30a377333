#!/usr/bin/env python
"""Speed and fidelity of the CPU fast path for inference (``fpn_plugin.inference.fast_cpu``).

    python benchmarks/bench_cpu_inference.py                      # default, ~15 min on 2 cores
    python benchmarks/bench_cpu_inference.py --quick              # ~4 min: fewer runs, no bf16
    python benchmarks/bench_cpu_inference.py --config-file C --weights W   # your trained model
    python benchmarks/bench_cpu_inference.py --settings fast fast+int8rpn  # some settings only

(The times above predate the compile and int8 settings, which add a few minutes.)

Speed: detectron2's builtin R50-FPN (its model-zoo config, random weights) on one 800x1199
image, batch 1, ``--repeats`` interleaved rounds over every setting after one warm-up each, so
that load from other processes hits all settings alike; the median s/image is reported and its
ratio to the builtin fp32 model timed in the same run. Random weights are fine for timing, but
FrozenBN's identity statistics would let the activations explode: each FrozenBN's statistics
are first set from the activations it sees on the benchmark image (a data-dependent init), so
the RPN yields its full 1000 proposals and the box head does its real work.

Fidelity: the match rate is the fraction of the fp32 detections of the *same* trained model
that a setting reproduces (same class, IoU >= 0.9, one-to-one, greedy by score) on
``--match-images`` validation images. Without ``--weights``, a builtin R18-FPN (BN, from
scratch) is trained for ``--train-iters`` iterations on ``../shared/data/facemask_coco``
(or ``--data``) at its small native size (seeded: the same model on every run), saved, and
reloaded as predict.py loads a model. With neither, the match rate is
measured on the random-weight timing model and labelled so: it is not a valid fidelity test.

Settings: ``fp32`` (plain), ``fold`` (norms folded), ``fast`` (fold + NHWC: what ``--fast-cpu``
runs), ``fast+compile`` and ``fast+compile-dyn`` (backbone and RPN head by ``torch.compile``
with inductor's freezing; torch's default static-then-symbolic sizes, and symbolic sizes from
the start; their first forward, which compiles, is reported separately with a fresh inductor
cache), ``fast+int8rpn`` and ``fast+compile+int8rpn`` (the RPN head's 3x3 conv in int8,
calibrated on ``--calibration-images`` training images for the match rate and on the timing
image for the timing), ``bf16``
(plain model, with fpn_plugin's CPU ROIAlign, under bf16 autocast: what ``predict.py --bf16``
runs), ``fast+bf16`` (the fast
path with its backbone and heads' heavy parts in bf16, what ``--fast-cpu --bf16`` runs),
``fast+bf16-backbone`` (only the backbone in bf16), ``fast-tvroi`` and ``fast+bf16-tvroi``
(the fast path with torchvision's ROIAlign kernel instead of its NHWC gather),
``fast+bf16+compile``, ``fast+bf16+int8rpn`` and ``fast+bf16+compile+int8rpn`` (the bf16 fast
path with its backbone and RPN head compiled, with the RPN conv in int8, or both), and
``onnxruntime`` (the model exported to ONNX by ``fpn_plugin.export``, run by onnxruntime's CPU
provider: what ``predict.py --exported DIR`` runs; skipped without onnx/onnxruntime). On CPUs
without native bf16 (no avx512_bf16 or AMX; ``python -m fpn_plugin.env``) oneDNN falls back to
a reference bf16 convolution, measured ~280x slower than fp32 on the 2-core AVX2 CPU this was
written on (one R50-FPN image would take an hour): there ``--bf16 auto`` (the default) skips
them and times one small conv in both precisions instead; ``--bf16 on`` forces them.

Compute floor (``compute_floor.py``): each setting's convolution and linear multiply-adds,
counted per precision in one forward (a compiled or exported setting as its eager twin), over
this CPU's peak rates measured in the same run; time / floor says how far a setting is from
what this CPU can do with that arithmetic.
"""
import argparse
import atexit
import copy
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import fpn_plugin  # noqa: F401  (first: detectron2 compatibility fixes)
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import pairwise_iou
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from fpn_plugin.config import load_config
from fpn_plugin.checkpoint import load_inference_model
from fpn_plugin.inference.fast_cpu import optimize_for_cpu
from fpn_plugin.modeling.roi_align import use_gather_roi_align
from fpn_plugin.precision import choose_precision, cpu_has_native_bf16

from compute_floor import (
    below_floor, best_peaks, count_macs, floor_seconds, measure_peaks, peaks_text,
)

# Beside the repository (absent in a user's clone: give --data, or nothing for a synthetic set).
DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "facemask_coco")

# name -> how to make the setting from an eval-mode fp32 model and calibration inputs (for int8):
# (model, autocast bf16?)
SETTINGS = {
    "fp32": lambda m, c: (m, False),
    "fold": lambda m, c: (optimize_for_cpu(m, channels_last=False), False),
    "fast": lambda m, c: (optimize_for_cpu(m), False),  # = fold+nhwc: what --fast-cpu runs
    "fast-tvroi": lambda m, c: (optimize_for_cpu(m, gather_roi_align=False), False),
    # torch's default: static for the first padded size, one symbolic recompile on a new size
    "fast+compile": lambda m, c: (optimize_for_cpu(m, compile=True), False),
    "fast+compile-dyn": lambda m, c: (optimize_for_cpu(m, compile="dynamic"), False),
    "fast+int8rpn": lambda m, c: (optimize_for_cpu(m, int8_rpn=c), False),
    "fast+compile+int8rpn": lambda m, c: (optimize_for_cpu(m, compile=True, int8_rpn=c), False),
    "bf16": lambda m, c: (as_fpn_plugin_builds(m), True),
    "fast+bf16": lambda m, c: (optimize_for_cpu(m, bf16=True), False),  # backbone and heads
    "fast+bf16-backbone": lambda m, c: (optimize_for_cpu(m, bf16=True, bf16_heads=False), False),
    "fast+bf16-tvroi": lambda m, c: (optimize_for_cpu(m, bf16=True, gather_roi_align=False), False),
    "fast+bf16+compile": lambda m, c: (optimize_for_cpu(m, bf16=True, compile=True), False),
    "fast+bf16+int8rpn": lambda m, c: (optimize_for_cpu(m, bf16=True, int8_rpn=c), False),
    "fast+bf16+compile+int8rpn": lambda m, c: (
        optimize_for_cpu(m, bf16=True, compile=True, int8_rpn=c), False
    ),
    "onnxruntime": lambda m, c: (onnxruntime_model(m, c[0]["image"]), False),
}
BF16_SETTINGS = tuple(name for name in SETTINGS if "bf16" in name)


def as_fpn_plugin_builds(model):
    """A copy of the model with the ROIAlign fpn_plugin builds on CPU (``MODEL.PLUGIN_ROI_ALIGN``
    "auto"), as predict.py runs it: under bf16 autocast detectron2's own rounds the boxes to bf16."""
    model = copy.deepcopy(model)
    use_gather_roi_align(model)
    return model


def arithmetic_twin(name: str) -> str:
    """The eager setting computing what ``name`` computes: compiling or exporting a model
    changes no layer's precision, and only eager layers can be counted."""
    return "fast" if name == "onnxruntime" else name.replace("+compile-dyn", "").replace("+compile", "")


def onnxruntime_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def onnxruntime_model(model, sample: torch.Tensor):
    """The model exported to ONNX (``fpn_plugin.export``, traced on ``sample``), run by onnxruntime."""
    from fpn_plugin.export.exporter import export_onnx, exported_runner
    from fpn_plugin.export.runtime import ExportedModel

    folder = tempfile.mkdtemp(prefix="bench_onnx_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "model.onnx")
    export_onnx(model, sample, path)
    return ExportedModel(exported_runner("onnx", path))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--repeats", type=int, default=3, help="timed rounds per setting (median reported)"
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(800, 1199),
        metavar=("H", "W"),
        help="timing image size",
    )
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="the bf16 settings: 'auto' runs them only on CPUs with native bf16; without it they "
        "are hundreds of times slower (a one-conv probe measures the ratio instead)",
    )
    p.add_argument(
        "--quick", action="store_true", help="2 rounds, no bf16, 40 training iterations, 8 images"
    )
    p.add_argument(
        "--config-file", help="config of a trained model for the match rate (with --weights)"
    )
    p.add_argument("--weights", help="trained checkpoint for the match rate (skips training)")
    p.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="COCO-format folder (facemask layout) to train/match on",
    )
    p.add_argument(
        "--train-iters",
        type=int,
        default=150,
        help="iterations of the small model trained for the match rate",
    )
    p.add_argument(
        "--match-images", type=int, default=20, help="validation images for the match rate"
    )
    p.add_argument(
        "--calibration-images", type=int, default=8,
        help="training images that calibrate the int8 settings for the match rate",
    )
    p.add_argument(
        "--output", default="output/bench_cpu_inference", help="where the trained model is saved"
    )
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.quick:  # quick values for what was not given explicitly
        for key, value in {"repeats": 2, "train_iters": 40, "match_images": 8}.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
        args.bf16 = "off"
    args.bf16_skipped = args.bf16 == "off" or (
        args.bf16 == "auto" and choose_precision("auto", "cpu", setting="--bf16").name != "bf16"
    )
    if args.bf16_skipped:
        args.settings = [s for s in args.settings if s not in BF16_SETTINGS]
    if "onnxruntime" in args.settings and not onnxruntime_available():
        print("onnxruntime setting skipped: it needs `pip install onnx onnxruntime`")
        args.settings.remove("onnxruntime")
    if "fp32" not in args.settings:
        args.settings.insert(0, "fp32")  # the reference of both the ratio and the match rate
    if bool(args.config_file) != bool(args.weights):
        p.error("--config-file and --weights go together")
    return args


# ---------------------------------------------------------------------------------------- speed
def builtin_r50_fpn():
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.WEIGHTS = ""  # no network: random weights
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    return build_model(cfg).eval()


@torch.no_grad()
def calibrate_frozen_bn(model, inputs) -> None:
    """Set each FrozenBN's statistics from the activations it sees (in order, in one forward)."""

    def set_statistics(module, args):
        x = args[0]
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)) + module.eps)

    hooks = [
        m.register_forward_pre_hook(set_statistics)
        for m in model.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    model(inputs)
    for h in hooks:
        h.remove()


def timing_image(size, data: str) -> torch.Tensor:
    """A real photo resized to ``size`` when the dataset is there (realistic proposals), else noise."""
    import cv2

    folder = Path(data) / "val2017"
    files = sorted(folder.glob("*.jpg"))[:1] if folder.is_dir() else []
    if files:
        bgr = cv2.resize(
            cv2.imread(str(files[0])), (size[1], size[0]), interpolation=cv2.INTER_LINEAR
        )
        return torch.as_tensor(bgr.transpose(2, 0, 1).astype("float32"))
    return torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0)).float()


def forward(model, inputs, bf16: bool):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(inputs)


def time_settings(args, data: str):
    image = timing_image(args.size, data)
    inputs = [{"image": image, "height": args.size[0], "width": args.size[1]}]
    base = builtin_r50_fpn()
    calibrate_frozen_bn(base, inputs)
    models = {}
    for name in args.settings:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # the bf16-is-slow warning: measured here
            models[name] = SETTINGS[name](base, inputs)  # int8: calibrated on the image
    times = {name: [] for name in models}
    faulted = {name: [] for name in models}
    first = {}
    for name, (model, bf16) in models.items():
        for i in range(2):  # warm-up: oneDNN primitives, compiling
            start = time.perf_counter()
            forward(model, inputs, bf16)
            if i == 0:
                first[name] = time.perf_counter() - start
    for r in range(args.repeats):
        for name, (model, bf16) in models.items():
            faults, start = minor_page_faults(), time.perf_counter()
            forward(model, inputs, bf16)
            times[name].append(time.perf_counter() - start)
            faulted[name].append((minor_page_faults() - faults) * PAGE_BYTES)
        print(
            f"  round {r + 1}/{args.repeats}: "
            + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()),
            flush=True,
        )
    macs = {}
    for name in models:
        twin = arithmetic_twin(name)
        if twin not in macs:
            model, bf16 = models[twin] if twin in models else SETTINGS[twin](base, inputs)
            macs[twin] = count_macs(model, lambda: forward(model, inputs, bf16))
        macs[name] = macs[twin]
    medians = {name: statistics.median(t) for name, t in times.items()}
    return medians, first, macs, {name: statistics.median(b) for name, b in faulted.items()}


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def minor_page_faults() -> int:
    """This process's minor page faults so far: memory the kernel mapped in on first touch
    (glibc gets blocks over 32 MiB from mmap and returns them when freed, so each large tensor
    is faulted in again)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ------------------------------------------------------------------------------------ match rate
def small_facemask_cfg(data: str):
    """Builtin R18-FPN, BN from scratch, sized for facemask's ~400x225 photos."""
    cfg = load_config(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.FPN.NORM = ""
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]  # faces are small
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 128
    # Small and cheap: the photos are ~400x225; at 192 px a step costs ~2-4 s on 2 shared cores.
    cfg.INPUT.MIN_SIZE_TRAIN = (192,)
    cfg.INPUT.MAX_SIZE_TRAIN = 342
    cfg.INPUT.MIN_SIZE_TEST = 192
    cfg.INPUT.MAX_SIZE_TEST = 342
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 1000
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 500
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01  # 0.02 with batch 4 diverged from scratch within 30 iterations
    cfg.DATALOADER.NUM_WORKERS = 0
    for split in ("train", "val"):
        name = f"bench_facemask_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(
                name, {}, f"{data}/annotations/custom_{split}.json", f"{data}/{split}2017"
            )
    cfg.DATASETS.TRAIN = ("bench_facemask_train",)
    cfg.DATASETS.TEST = ("bench_facemask_val",)
    return cfg


def train_small_model(cfg, iters: int, out: Path):
    """Plain SGD with linear warm-up and gradient clipping: a briefly trained, real detector,
    the same one on every run on a CPU (seeded weights, image order and flips). Returns the
    paths of its config and weights."""
    # The loader's image order and flips draw from numpy: unseeded, each run trained another
    # model (two sessions' models gave 494 and 1564 fp32 detections on the same images).
    seed_all_rng(0)
    model = build_model(cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, min(40, iters // 3))
    loader = iter(build_detection_train_loader(cfg))
    start = time.perf_counter()
    with EventStorage():
        for it in range(iters):
            for group in optimizer.param_groups:
                group["lr"] = cfg.SOLVER.BASE_LR * min(1.0, (it + 1) / warmup)
            losses = model(next(loader))
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged at iteration {it}: {losses}")
            optimizer.zero_grad()
            loss.backward()
            # From scratch, the first steps' gradients can be huge: clipping keeps them finite.
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            if (it + 1) % 25 == 0 or it + 1 == iters:
                print(
                    f"  train {it + 1}/{iters}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f}s)",
                    flush=True,
                )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "facemask_r18_fpn_bn.pth"
    torch.save({"model": model.state_dict()}, path)
    config = out / "facemask_r18_fpn_bn.yaml"
    config.write_text(cfg.dump())
    print(f"  saved {path}; to skip training next time: --config-file {config} --weights {path}")
    return config, path


def load_trained(config_file: str, weights: str):
    cfg = load_config(config_file, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
    # As the Predictor loads: class count from the file, FORMAT_CHECK, ALLOW_UNSAFE_PICKLE.
    model, _ = load_inference_model(cfg)
    return cfg, model


def match_inputs(cfg, data: str, count: int, split: str = "val"):
    """Validation (or ``split``) images as the model's test-time inputs (resized as the
    Predictor does)."""
    import cv2
    from detectron2.data import transforms as T

    files = sorted((Path(data) / f"{split}2017").glob("*.jpg"))[:count]
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    inputs = []
    for f in files:
        image = cv2.imread(str(f))  # BGR, detectron2's default INPUT.FORMAT
        if cfg.INPUT.FORMAT == "RGB":
            image = image[:, :, ::-1]
        resized = aug.get_transform(image).apply_image(image)
        inputs.append(
            {
                "image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
                "height": image.shape[0],
                "width": image.shape[1],
            }
        )
    return inputs


def matched(reference, candidate, iou_threshold: float = 0.9) -> int:
    """How many reference detections have a same-class candidate at IoU >= threshold (one-to-one)."""
    if len(reference) == 0 or len(candidate) == 0:
        return 0
    iou = pairwise_iou(reference.pred_boxes, candidate.pred_boxes).float()
    iou[reference.pred_classes[:, None] != candidate.pred_classes[None, :]] = 0
    used = torch.zeros(len(candidate), dtype=torch.bool)
    count = 0
    for i in torch.argsort(reference.scores, descending=True).tolist():  # greedy, best first
        row = iou[i].masked_fill(used, 0)
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            used[j] = True
            count += 1
    return count


def match_rates(model, inputs, settings, calibration):
    reference = [forward(model, [x], False)[0]["instances"] for x in inputs]
    total = sum(len(r) for r in reference)
    rates = {}
    for name in settings:
        if name == "fp32":
            continue  # the reference itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            candidate_model, bf16 = SETTINGS[name](model, calibration)
        hits = sum(
            matched(r, forward(candidate_model, [x], bf16)[0]["instances"].to("cpu"))
            for r, x in zip(reference, inputs)
        )
        rates[name] = hits / total if total else float("nan")
    print(f"  fp32 detections: {scores_text(torch.cat([r.scores for r in reference]))}")
    return rates, total


def scores_text(scores: torch.Tensor) -> str:
    """How confident the reference detections are: a briefly trained model's are mostly near
    the score threshold, where a rounding difference adds or drops one, so they are the ones
    a reduced-precision setting fails to match."""
    if len(scores) == 0:
        return "none"
    return (
        f"{len(scores)}, median score {scores.median().item():.2f}, "
        f"{int((scores >= 0.5).sum())} at >= 0.5"
    )


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    args = parse_args(argv)
    # Compile times as a first use sees them: a fresh inductor cache for this run.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench_inductor_"))
    if args.threads:
        torch.set_num_threads(args.threads)
    data_ok = (Path(args.data) / "annotations" / "custom_val.json").is_file()
    print(
        f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}"
    )

    label = None
    if args.weights:
        cfg, trained = load_trained(args.config_file, args.weights)
        label = f"trained: {Path(args.weights).name}"
    elif data_ok:
        print(
            f"training a builtin R18-FPN (BN, from scratch) on {args.data} for {args.train_iters} iterations"
        )
        config, weights = train_small_model(
            small_facemask_cfg(args.data), args.train_iters, Path(args.output)
        )
        # Reloaded as --weights and predict.py load it: built by fpn_plugin, whose ROIAlign on
        # CPU keeps boxes fp32 under bf16 autocast (detectron2's rounds them: 88 % matched
        # against 94 % for plain bf16 on the same weights).
        cfg, trained = load_trained(str(config), str(weights))
        label = f"R18-FPN trained {args.train_iters} it on facemask"
    if label is not None and data_ok:
        inputs = match_inputs(cfg, args.data, args.match_images)
        print(
            f"match rate: {len(inputs)} facemask val images at {cfg.INPUT.MIN_SIZE_TEST}px ({label})"
        )
        # int8 calibration: training images, none of the ones matched
        calibration = match_inputs(cfg, args.data, args.calibration_images, split="train")
        rates, total = match_rates(trained, inputs, args.settings, calibration)
    else:
        print(
            f"NO trained model ({args.data} absent and no --weights): the match rate below is on the "
            "random-weight timing model, NOT a valid fidelity test"
        )
        label = "random weights: NOT valid"
        timing = builtin_r50_fpn()
        g = torch.Generator().manual_seed(1)
        inputs = [
            {
                "image": torch.randint(0, 256, (3, 480, 640), generator=g).float(),
                "height": 480,
                "width": 640,
            }
        ]
        calibrate_frozen_bn(timing, inputs)
        rates, total = match_rates(timing, inputs, args.settings, inputs)

    print(
        f"timing: builtin R50-FPN at {args.size[0]}x{args.size[1]}, {args.repeats} interleaved rounds"
    )
    peaks_before = measure_peaks()  # before and after the rounds: a busy moment only lowers it
    medians, first, macs, faulted = time_settings(args, args.data)
    peaks = best_peaks(peaks_before, measure_peaks())
    reference = medians["fp32"]
    header = (
        f"| model | setting | s/image (median of {args.repeats}) | ratio to builtin fp32 "
        f"| G multiply-adds fp32/bf16/int8 | compute floor s/image (ratio) | time / floor "
        f"| page-faulted MB/image | match rate ({label}, {total} fp32 dets) |"
    )
    probe = bf16_conv_probe() if args.bf16_skipped and args.bf16 == "auto" else None
    print(
        "compute floor: a setting's convolution and linear multiply-adds at this CPU's measured "
        f"peaks ({peaks_text(peaks)}, {torch.get_num_threads()} threads), all else counted free"
    )
    print()
    print(header)
    print("|" + "---|" * 9)
    floors = {}
    for name in args.settings:
        model = "R50-FPN builtin" if name == "fp32" else "R50-FPN"
        rate = "reference" if name == "fp32" else f"{100 * rates[name]:.1f} %"
        floor = floors[name] = floor_seconds(macs[name], peaks)
        floor_cells = (
            f"{floor:.2f} ({floor / reference:.2f}x) | {medians[name] / floor:.2f}x"
            if floor is not None else "- | -"
        )
        print(
            f"| {model} | {name} | {medians[name]:.2f} | {medians[name] / reference:.2f}x "
            f"| {macs_text(macs[name])} | {floor_cells} | {faulted[name] / 1e6:.0f} | {rate} |"
        )
    faster = below_floor(medians, floors)
    if faster:
        print(
            f"\nWARNING: {', '.join(faster)} ran faster than the compute floor: this CPU's peaks "
            "were measured low (contention while they were timed); rerun for a valid floor"
        )
    best = min((f, arithmetic_twin(n)) for n, f in floors.items() if f is not None)
    print(
        f"\nlowest compute floor: {best[1]}'s arithmetic, {best[0] / reference:.2f}x of the builtin fp32 "
        "time: no setting here gets below it on this CPU without fewer or cheaper multiply-adds"
    )
    print(
        "page-faulted: memory the kernel mapped in during one forward (median; faults x page "
        "size, fewer where transparent huge pages are 'always'); glibc's default allocator maps "
        "each block over 32 MiB afresh, which fp32 feature maps of this size are"
    )
    compiled = [n for n in args.settings if "compile" in n]
    if compiled:
        print()
        print(
            "first forward (includes torch.compile's compilation; fresh inductor cache for "
            "this run, but later settings reuse what earlier ones compiled): "
            + ", ".join(f"{n} {first[n]:.1f} s" for n in compiled)
            + f"; fast {first['fast']:.1f} s" * ("fast" in first)
        )
    if probe is not None:
        print(
            f"| one 3x3 conv 64->64 on 64x64 | bf16 autocast (not run on R50-FPN: no native bf16) "
            f"| fp32 {probe[0]:.4f}, bf16 {probe[1]:.3f} | {probe[1] / probe[0]:.0f}x slower | - |"
        )
    return 0


def macs_text(macs) -> str:
    return "/".join(f"{macs[p] / 1e9:.1f}" for p in ("fp32", "bf16", "int8"))


@torch.no_grad()
def bf16_conv_probe():
    """Median s of one conv in fp32 and under bf16 autocast: how bad emulated bf16 is here."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    x = torch.randn(1, 64, 64, 64)
    result = []
    for bf16 in (False, True):
        times = []
        for _ in range(4):  # the first is a warm-up
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                conv(x)
            times.append(time.perf_counter() - start)
        result.append(statistics.median(times[1:]))
    return result


if __name__ == "__main__":
    sys.exit(main())
