#!/usr/bin/env python
"""Whole detectors side by side: each plugin model against its nearest peer, in one run.

    python benchmarks/bench_models.py                 # ~20 min on 2 cores
    python benchmarks/bench_models.py --quick         # < 5 min: a smoke test (CI runs it)
    python benchmarks/bench_models.py --models R50-FPN --repeats 6

Architectures: R18-FPN (``configs/fpn_r18.yaml``), R50-FPN (``fpn_r50.yaml``), R50-C4
(``r50_c4_voc07.yaml``) and VGG16 (``vgg16_voc07.yaml``). Each plugin model's peer is
detectron2's builtin model of the same architecture -- the plugin config with detectron2's own
ResNet backbone (and ``Res5ROIHeads`` for C4), every other key the same -- holding the same
weights (converted into the plugin's names). The plugin models are built as fpn_plugin's Trainer
and Predictor build them: with ``MODEL.PLUGIN_ROI_ALIGN`` "auto", so on CPU their ROIAlign is
the gather of ``fpn_plugin.modeling.roi_align`` (torchvision's result, faster), while the builtin
models keep detectron2's layer (torchvision's kernel); for R50-FPN also torchvision's
``fasterrcnn_resnet50_fpn`` (its own weights, FrozenBN backbone as when trained from ImageNet)
and the plugin's ``tv_fasterrcnn_r50_fpn.yaml`` loaded from that torchvision file. detectron2
has no VGG16 detector: VGG16 is timed alone. Before timing, each pair's fp32 detections on the
timing image are compared (they must be the same: a check that the weights really are shared).

Weights are random, every FrozenBN's statistics set from the activations it sees on the
timing image (a data-dependent init), so the RPN yields its full proposal count and the box
head does its real work. The timing image is a real photo (``../shared/data``) resized to
``--size``, noise without it.

Measured, each with its ratio to the builtin fp32 model of the same architecture timed in
the same run, over ``--repeats`` rounds interleaved across every model and setting (after
``--warmup`` untimed ones), medians:

- inference s/image at ``--size`` (800x1199) in fp32, bf16 autocast (``predict.py --bf16``),
  the plugin's CPU fast path (``optimize_for_cpu``: folded norms + NHWC; ``--fast-cpu``), the
  fast path in bf16 (``optimize_for_cpu(bf16=True)``: backbone, RPN conv and box head) and the
  fp32 fast path with the whole model under bf16 autocast (ROIAlign and the rest too); on
  CUDA, fp32 and fp16 autocast;
- a training step (forward, backward, SGD) on ``--train-batch`` random images of
  ``--train-size`` with three boxes each, fp32 and bf16 (fp16 on CUDA) through the trainer's
  ``Precision``, with the relative difference of the reduced-precision loss at the same
  weights and random draws (checked on the RPN loss, see :func:`first_losses`);
- peak memory of each inference and training call, two ways (``memory_peaks``): resident
  memory above its level before the call (the kernel's high-water mark, reset before it;
  what a user sees, but it moves between runs with what glibc's heap keeps) and, on CPU, the
  exact peak of live tensors from torch's profiler, the same on every run; on CUDA
  ``torch.cuda.max_memory_allocated`` above the allocation before;
- parameters and FLOPs (fvcore's ``FlopCountAnalysis`` through detectron2's tracing adapter,
  as detectron2's ``tools/analyze_model.py``; one multiply-add counts as one flop);
- inference time against the image's short side (``--scaling-sizes``, long side 1.5x).

bf16 is run only where the CPU computes it natively (avx512_bf16 or AMX; ``python -m
fpn_plugin.env``), as ``--bf16 auto`` decides; emulated bf16 is hundreds of times slower.
"""
import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from tabulate import tabulate

import fpn_plugin  # noqa: F401  (first: detectron2 compatibility fixes)
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from fpn_plugin import model_zoo
from fpn_plugin.checkpoint import PluginCheckpointer
from fpn_plugin.checkpoint.resnet_formats import detectron2_resnet_to_plugin
from fpn_plugin.checkpoint.torchvision_detection import coco_category_ids
from fpn_plugin.engine.precision import Precision
from fpn_plugin.env import _cpu_flags, detectron2_origin
from fpn_plugin.export.tracing import tracing_adapter_class
from fpn_plugin.inference.fast_cpu import optimize_for_cpu
from fpn_plugin.modeling.roi_align import use_configured_roi_align
from fpn_plugin.precision import choose_precision

from bench_cpu_inference import matched, timing_image
from memory_peaks import PeakMemory, freed_memory_returned, peak_memory_method, tensor_peak

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "facemask_coco")
ARCHITECTURES = {
    "R18-FPN": "fpn_r18.yaml",
    "R50-FPN": "fpn_r50.yaml",
    "R50-C4": "r50_c4_voc07.yaml",
    "VGG16": "vgg16_voc07.yaml",
}
# The plugin's bottom-up network -> detectron2's own, for the builtin twin of a plugin config.
BUILTIN_BACKBONES = {
    "build_plugin_resnet_fpn_backbone": "build_resnet_fpn_backbone",
    "build_plugin_resnet_backbone": "build_resnet_backbone",
}
BUILTIN_ROI_HEADS = {"PluginRes5ROIHeads": "Res5ROIHeads"}
LOSS_TOLERANCE = 0.02  # relative difference of the bf16/fp16 RPN training loss from fp32's


# ------------------------------------------------------------------------------------- models
@dataclass
class Candidate:
    """One detector in the comparison: how to run it for inference and for a training step."""

    architecture: str
    name: str
    model: torch.nn.Module  # eval mode, fp32
    kind: str  # "builtin", "plugin" or "torchvision"
    peer: Optional[str] = None  # the candidate whose fp32 detections this one must reproduce
    infer: Callable = None  # (model, image CHW float BGR 0-255) -> Instances-like (boxes, classes)
    train_batch: Callable = None  # (batch) -> the model's inputs for a training forward
    results: Dict[str, dict] = field(default_factory=dict)


def plugin_cfg(config: str, device: str):
    return model_zoo.get_config(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device])


def builtin_twin_cfg(cfg):
    """The plugin config with detectron2's own ResNet (and res5 head): everything else the same."""
    if cfg.MODEL.BACKBONE.NAME not in BUILTIN_BACKBONES:
        return None
    twin = cfg.clone()
    twin.MODEL.BACKBONE.NAME = BUILTIN_BACKBONES[cfg.MODEL.BACKBONE.NAME]
    twin.MODEL.ROI_HEADS.NAME = BUILTIN_ROI_HEADS.get(cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.ROI_HEADS.NAME)
    plugin = cfg.MODEL.PLUGIN_RESNET
    twin.MODEL.RESNETS.DEPTH = plugin.DEPTH
    twin.MODEL.RESNETS.OUT_FEATURES = list(plugin.OUT_FEATURES)
    twin.MODEL.RESNETS.NORM = plugin.NORM
    twin.MODEL.RESNETS.STRIDE_IN_1X1 = plugin.STRIDE_IN_1X1
    twin.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if plugin.DEPTH < 50 else 256
    return twin


@torch.no_grad()
def calibrate_norms(model, run) -> None:
    """Set each frozen norm's statistics (detectron2's, torch's and torchvision's) from the
    activations it sees in one forward (``run``); each norm adds its own eps."""
    from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

    def set_statistics(module, args):
        x = args[0].float()
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)))

    norms = (FrozenBatchNorm2d, torch.nn.BatchNorm2d, TorchvisionFrozenBN)
    hooks = [m.register_forward_pre_hook(set_statistics) for m in model.modules() if isinstance(m, norms)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()


def detectron2_inputs(image: torch.Tensor, rgb: bool) -> List[dict]:
    h, w = image.shape[1:]
    return [{"image": image.flip(0) if rgb else image, "height": h, "width": w}]


def detectron2_infer(model, image, rgb: bool):
    out = model(detectron2_inputs(image, rgb))[0]["instances"]
    return out.pred_boxes.tensor, out.pred_classes, out.scores


def torchvision_infer(model, image):
    out = model([image.flip(0) / 255.0])[0]
    return out["boxes"], out["labels"], out["scores"]


def build_architecture(architecture: str, image: torch.Tensor, device: str, tmp: str) -> List[Candidate]:
    cfg = plugin_cfg(ARCHITECTURES[architecture], device)
    rgb = cfg.INPUT.FORMAT == "RGB"
    torch.manual_seed(0)
    plugin = build_model(cfg).eval()
    use_configured_roi_align(plugin, cfg)  # as the plugin's Trainer and Predictor build it
    infer = lambda m, x, rgb=rgb: detectron2_infer(m, x, rgb)  # noqa: E731
    train = lambda batch, rgb=rgb: [  # noqa: E731
        {"image": b["image"].flip(0) if rgb else b["image"], "instances": b["instances"]} for b in batch
    ]
    twin_cfg = builtin_twin_cfg(cfg)
    candidates = []
    if twin_cfg is None:
        calibrate_norms(plugin, lambda: infer(plugin, image))
    else:
        torch.manual_seed(0)
        builtin = build_model(twin_cfg).eval()
        calibrate_norms(builtin, lambda: infer(builtin, image))
        plugin.load_state_dict(detectron2_resnet_to_plugin(builtin.state_dict(), plugin))
        candidates.append(Candidate(architecture, "detectron2 builtin", builtin, "builtin",
                                    infer=infer, train_batch=train))
    candidates.append(Candidate(architecture, f"plugin {ARCHITECTURES[architecture]}", plugin, "plugin",
                                peer=candidates[0].name if candidates else None, infer=infer,
                                train_batch=train))
    if architecture == "R50-FPN":
        candidates += torchvision_pair(image, device, tmp)
    return candidates


def torchvision_pair(image, device: str, tmp: str) -> List[Candidate]:
    """torchvision's fasterrcnn_resnet50_fpn (FrozenBN, 3 trainable stages, as when trained from
    ImageNet) and the plugin's tv_fasterrcnn_r50_fpn.yaml loaded from its saved state_dict.

    Both resize test images to the benchmark's size (torchvision's 800/1333 leaves 800x1199 as
    it is; a --quick run would otherwise time them at twice its size)."""
    short, long = min(image.shape[1:]), max(image.shape[1:])
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

    torch.manual_seed(0)
    body = resnet50(weights=None, norm_layer=TorchvisionFrozenBN)
    tv = FasterRCNN(_resnet_fpn_extractor(body, 3), num_classes=91, min_size=short, max_size=long)
    tv = tv.to(device).eval()
    category_ids = torch.tensor(coco_category_ids(), device=device)
    with torch.no_grad():  # the 11 unused COCO ids never win, as in a trained model
        unused = torch.ones(91, dtype=torch.bool)
        unused[0], unused[category_ids] = False, False
        tv.roi_heads.box_predictor.cls_score.bias[unused] = -30.0
    calibrate_norms(tv, lambda: torchvision_infer(tv, image))
    path = os.path.join(tmp, "fasterrcnn_resnet50_fpn_random.pth")
    torch.save(tv.state_dict(), path)
    cfg = plugin_cfg("tv_fasterrcnn_r50_fpn.yaml", device)
    cfg.INPUT.TORCHVISION_RESIZE.MIN_SIZE, cfg.INPUT.TORCHVISION_RESIZE.MAX_SIZE = short, long
    plugin = build_model(cfg).eval()
    use_configured_roi_align(plugin, cfg)
    PluginCheckpointer(plugin).load(path)

    def tv_train(batch):
        images = [b["image"].flip(0) / 255.0 for b in batch]
        targets = [{"boxes": b["instances"].gt_boxes.tensor,
                    "labels": category_ids[b["instances"].gt_classes]} for b in batch]
        return images, targets

    def plugin_infer(m, x):
        boxes, classes, scores = detectron2_infer(m, x, rgb=True)
        return boxes, category_ids[classes], scores  # torchvision's labels are COCO ids

    return [
        Candidate("R50-FPN", "torchvision fasterrcnn_resnet50_fpn", tv, "torchvision",
                  infer=torchvision_infer, train_batch=tv_train),
        Candidate("R50-FPN", "plugin tv_fasterrcnn_r50_fpn.yaml", plugin, "plugin",
                  peer="torchvision fasterrcnn_resnet50_fpn", infer=plugin_infer,
                  train_batch=lambda batch: [{"image": b["image"].flip(0), "instances": b["instances"]}
                                             for b in batch]),
    ]


# ------------------------------------------------------------------------------------ measures
def flops_and_params(candidate: Candidate, image: torch.Tensor):
    """(GFLOPs of one inference at the image's size, millions of parameters), fvcore-counted."""
    from fvcore.nn import parameter_count

    params = parameter_count(candidate.model)[""] / 1e6
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if candidate.kind == "torchvision":
                from fvcore.nn import FlopCountAnalysis

                counter = FlopCountAnalysis(candidate.model, ([image.flip(0) / 255.0],))
            else:
                tracing_adapter_class()  # detectron2 0.6: its analysis module needs it imported so
                from detectron2.utils.analysis import FlopCountAnalysis

                rgb = candidate.model.input_format == "RGB"
                counter = FlopCountAnalysis(candidate.model, detectron2_inputs(image, rgb))
            counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            counter.tracer_warnings("none")
            return counter.total() / 1e9, params
    except Exception as e:  # a model fvcore cannot trace: say so in the table
        return f"n/a ({type(e).__name__})", params


def settings_for(candidate: Candidate, args, reduced: bool = True) -> Dict[str, tuple]:
    """setting -> (model, autocast dtype or None); the fast path is the plugin's and CPU-only.
    ``reduced=False``: the fp32 settings only."""
    low = torch.float16 if args.cuda else torch.bfloat16
    settings = {"fp32": (candidate.model, None)}
    if args.reduced and reduced:
        settings[args.reduced] = (candidate.model, low)
    if candidate.kind == "plugin" and not args.cuda:
        settings["fast"] = (optimize_for_cpu(candidate.model), None)
        if args.reduced and reduced:
            settings["fast+bf16"] = (optimize_for_cpu(candidate.model, bf16=True), None)
            # the whole model (ROIAlign, post-processing too) under autocast
            settings["fast, all bf16"] = (settings["fast"][0], low)
    return settings


def run_inference(candidate, model, dtype, image, device: str):
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype or torch.float32,
                                         enabled=dtype is not None):
        out = candidate.infer(model, image)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out


def time_inference(candidates: List[Candidate], image, args) -> None:
    """Interleaved rounds over every candidate and setting; medians into candidate.results."""
    runs = [(c, name, model, dtype) for c in candidates for name, (model, dtype) in settings_for(c, args).items()]
    for c, name, model, dtype in runs:
        for _ in range(args.warmup):
            run_inference(c, model, dtype, image, args.device)
    times = {(c.name, name): [] for c, name, _, _ in runs}
    for r in range(args.repeats):
        for c, name, model, dtype in runs:
            start = time.perf_counter()
            run_inference(c, model, dtype, image, args.device)
            times[(c.name, name)].append(time.perf_counter() - start)
        print(f"    inference round {r + 1}/{args.repeats}: "
              + ", ".join(f"{k[0].split()[0]} {k[1]} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    peaks, tensor_peaks = {}, {}
    with freed_memory_returned():  # one more call each, apart: sampling costs time
        for c, name, model, dtype in runs:
            with PeakMemory(args.device) as memory:
                run_inference(c, model, dtype, image, args.device)
            peaks[(c.name, name)] = memory.peak
    for c, name, model, dtype in runs:  # one more, profiled (CUDA's peak is exact)
        tensor_peaks[(c.name, name)] = float("nan") if args.cuda else tensor_peak(
            lambda: run_inference(c, model, dtype, image, args.device), frees_last_calls=False)
    for c, name, _, _ in runs:
        c.results.setdefault("inference", {})[name] = (
            statistics.median(times[(c.name, name)]), peaks[(c.name, name)],
            tensor_peaks[(c.name, name)])


def same_detections(candidates: List[Candidate], image, device: str) -> Dict[str, str]:
    """For each candidate with a peer: how many of the peer's fp32 detections it reproduces."""
    found = {c.name: run_inference(c, c.model, None, image, device) for c in candidates}
    verdicts = {}
    for c in candidates:
        if c.peer is None:
            continue
        ref, own = found[c.peer], found[c.name]
        a = Instances(image.shape[1:], pred_boxes=Boxes(ref[0].cpu()), pred_classes=ref[1].cpu(), scores=ref[2].cpu())
        b = Instances(image.shape[1:], pred_boxes=Boxes(own[0].cpu()), pred_classes=own[1].cpu(), scores=own[2].cpu())
        verdicts[c.name] = f"{matched(a, b)}/{len(a)} of {c.peer.split()[0]}'s ({len(b)} own)"
    return verdicts


def training_batch(n: int, size, device: str):
    g = torch.Generator().manual_seed(1)
    h, w = size
    out = []
    for _ in range(n):
        image = torch.randint(0, 256, (3, h, w), generator=g).float()
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 24 + torch.rand(3, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        gt = Instances((h, w), gt_boxes=Boxes(torch.cat([xy, xy + wh], 1)))
        gt.gt_classes = torch.randint(0, 20, (3,), generator=g)
        out.append({"image": image.to(device), "instances": gt.to(device)})
    return out


def training_losses(candidate: Candidate, model, batch) -> Dict[str, torch.Tensor]:
    inputs = candidate.train_batch(batch)
    return model(*inputs) if candidate.kind == "torchvision" else model(inputs)


def first_losses(candidate, model, batch, precision: Precision):
    """(RPN loss, total loss) at the given weights with the same random draws.

    The RPN's anchors are sampled alike in every precision; the RoIs are sampled from the
    proposals, whose top-k order reduced precision can change, and on random weights the box
    classifier's logits are large, so the total can differ by far more than rounding: the
    tolerance is checked on the RPN loss, the total is shown beside it.
    """
    torch.manual_seed(123)
    with torch.no_grad(), precision.autocast():
        losses = training_losses(candidate, model, batch)
    rpn = sum(float(v) for k, v in losses.items() if "rpn" in k or "objectness" in k)
    return rpn, float(sum(losses.values()))


def time_training(candidates: List[Candidate], args) -> None:
    """Interleaved training steps over every candidate and precision (own model copy each)."""
    batch = training_batch(args.train_batch, args.train_size, args.device)
    precisions = ["fp32"] + ([args.reduced] if args.reduced else [])
    runs, inference_resize = [], None
    for c in candidates:
        if c.kind == "torchvision":
            inference_resize = c.model.transform.min_size, c.model.transform.max_size  # train at the batch's own size, as detectron2's models do
            c.model.transform.min_size = (min(args.train_size),)
            c.model.transform.max_size = max(args.train_size)
        for p in precisions:
            model = copy.deepcopy(c.model).train()
            params = [q for q in model.parameters() if q.requires_grad]
            runs.append((c, p, Precision(p, args.device), model,
                         torch.optim.SGD(params, lr=1e-4, momentum=0.9)))
    times = {(c.name, p): [] for c, p, *_ in runs}
    peaks, tensor_peaks = {}, {}

    def step(c, precision, model, optimizer) -> float:
        start = time.perf_counter()
        with precision.autocast():
            loss = sum(training_losses(c, model, batch).values())
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss)
        precision.step(optimizer)
        if args.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with EventStorage(0):  # detectron2's models log their losses into it
        losses = {(c.name, p): first_losses(c, m, batch, prec) for c, p, prec, m, _ in runs}
        for r in range(args.train_warmup + args.train_repeats):
            for c, p, precision, model, optimizer in runs:
                elapsed = step(c, precision, model, optimizer)
                if r >= args.train_warmup:
                    times[(c.name, p)].append(elapsed)
            if r >= args.train_warmup:
                print(f"    training round {r + 1 - args.train_warmup}/{args.train_repeats}: "
                      + ", ".join(f"{k[0].split()[0]} {k[1]} {v[-1]:.2f}s" for k, v in times.items()),
                      flush=True)
        with freed_memory_returned():  # one more step each, apart: sampling costs time
            for c, p, precision, model, optimizer in runs:
                with PeakMemory(args.device) as memory:
                    step(c, precision, model, optimizer)
                peaks[(c.name, p)] = memory.peak
        for c, p, precision, model, optimizer in runs:  # two more, profiled (CUDA's peak is exact)
            tensor_peaks[(c.name, p)] = float("nan") if args.cuda else tensor_peak(
                lambda: step(c, precision, model, optimizer))
    for c, p, *_ in runs:
        reference = losses[(c.name, "fp32")]
        c.results.setdefault("training", {})[p] = (
            statistics.median(times[(c.name, p)]), peaks[(c.name, p)],
            *(abs(a - b) / abs(b) for a, b in zip(losses[(c.name, p)], reference)),
            tensor_peaks[(c.name, p)])
    for c in candidates:
        if c.kind == "torchvision":
            c.model.transform.min_size, c.model.transform.max_size = inference_resize


def time_scaling(candidates: List[Candidate], args) -> list:
    """Inference s/image against the short side: the R50-FPN builtin and plugin, fp32 and fast."""
    runs = [(c, name, model, dtype) for c in candidates if c.kind != "torchvision"
            and not c.name.startswith("plugin tv")
            for name, (model, dtype) in settings_for(c, args, reduced=False).items()]
    times = {}
    for short in args.scaling_sizes:
        size = (short, round(short * 1.5))
        image = timing_image(size, args.data).to(args.device)
        for c, name, model, dtype in runs:
            run_inference(c, model, dtype, image, args.device)  # warm-up at this size
        for _ in range(args.repeats):
            for c, name, model, dtype in runs:
                start = time.perf_counter()
                run_inference(c, model, dtype, image, args.device)
                times.setdefault((short, c.name, name), []).append(time.perf_counter() - start)
        print(f"    scaling {size[0]}x{size[1]} done", flush=True)
    rows = []
    for short in args.scaling_sizes:
        row = [f"{short}x{round(short * 1.5)}"]
        reference = statistics.median(times[(short, runs[0][0].name, "fp32")])
        for c, name, _, _ in runs:
            t = statistics.median(times[(short, c.name, name)])
            row.append(f"{t:.2f} ({t / reference:.2f}x)")
        rows.append(row)
    header = ["image"] + [f"{c.name.split()[0]} {name}" for c, name, _, _ in runs]
    return [header] + rows


# -------------------------------------------------------------------------------------- report
def machine_header(args) -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import detectron2

    lines = [
        f"CPU: {cpu}, {os.cpu_count()} cores; flags: {_cpu_flags()}; "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; detectron2 "
        f"{detectron2.__version__} ({detectron2_origin()})",
    ]
    if args.cuda:
        lines.append(f"GPU: {torch.cuda.get_device_name(args.device)}")
    lines.append(f"reduced precision: {args.reduced or f'none ({args.reduced_why})'}")
    lines.append("peak memory: " + peak_memory_method(args.device))
    return "\n".join(lines)


def _ratio(value, reference) -> str:
    if not reference or reference != reference or not isinstance(value, (int, float)) or value != value:
        return "-"
    return f"{value / reference:.2f}x"


def _mb(value: float) -> str:
    return "n/a" if value != value else f"{value / 2**20:.0f}"


def report(candidates: List[Candidate], verdicts, analysis, args) -> List[str]:
    """The tables, as markdown."""
    out = []
    by_arch: Dict[str, List[Candidate]] = {}
    for c in candidates:
        by_arch.setdefault(c.architecture, []).append(c)
    rows = []
    for arch, group in by_arch.items():
        builtin = next((c for c in group if c.kind == "builtin"), None)
        ref = builtin.results["inference"]["fp32"] if builtin else None
        for c in group:
            for setting, (seconds, peak, tensors) in c.results["inference"].items():
                rows.append([arch, c.name, setting, f"{seconds:.3f}", _ratio(seconds, ref and ref[0]),
                             _mb(peak), _ratio(peak, ref and ref[1]),
                             verdicts.get(c.name, "reference" if c.peer is None else "-")
                             if setting == "fp32" else "",
                             _mb(tensors), _ratio(tensors, ref and ref[2])])
    out.append(f"Inference, one {args.size[0]}x{args.size[1]} image, median of {args.repeats} "
               f"interleaved rounds (ratios: to the builtin fp32 model of the same architecture)")
    out.append(tabulate(rows, headers=["architecture", "model", "setting", "s/image", "time ratio",
                                       "peak MB", "memory ratio", "same detections (fp32)",
                                       "tensor peak MB", "tensor ratio"],
                        tablefmt="github"))
    rows = []
    for arch, group in by_arch.items():
        builtin = next((c for c in group if c.kind == "builtin"), None)
        ref = builtin.results["training"]["fp32"] if builtin else None
        for c in group:
            for precision, (seconds, peak, rpn_diff, total_diff, tensors) in c.results["training"].items():
                within = "reference" if precision == "fp32" else (
                    f"{rpn_diff:.1e} {'ok' if rpn_diff <= LOSS_TOLERANCE else 'OVER'} / {total_diff:.1e}")
                rows.append([arch, c.name, precision, f"{seconds:.3f}", _ratio(seconds, ref and ref[0]),
                             _mb(peak), _ratio(peak, ref and ref[1]), within,
                             _mb(tensors), _ratio(tensors, ref and ref[4])])
    h, w = args.train_size
    out.append(f"\nTraining step (forward, backward, SGD), batch {args.train_batch} of {h}x{w}, "
               f"median of {args.train_repeats} interleaved steps after {args.train_warmup}")
    out.append(tabulate(rows, headers=["architecture", "model", "precision", "s/step", "time ratio",
                                       "peak MB", "memory ratio",
                                       f"loss rel. diff: RPN (tolerance {LOSS_TOLERANCE}) / total",
                                       "tensor peak MB", "tensor ratio"],
                        tablefmt="github"))
    rows = [[c.architecture, c.name, f"{c.results['params']:.2f}",
             c.results["gflops"] if isinstance(c.results["gflops"], str) else f"{c.results['gflops']:.1f}"]
            for c in candidates]
    out.append(f"\nParameters and FLOPs of one {args.size[0]}x{args.size[1]} inference "
               "(fvcore, one multiply-add = one flop)")
    out.append(tabulate(rows, headers=["architecture", "model", "params (M)", "GFLOPs"], tablefmt="github"))
    if analysis:
        out.append(f"\nInference s/image against the image size (R50-FPN, median of {args.repeats}; "
                   "ratio to the builtin fp32 model at that size)")
        out.append(tabulate(analysis[1:], headers=analysis[0], tablefmt="github"))
    return out


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    p.add_argument("--size", type=int, nargs=2, default=(800, 1199), metavar=("H", "W"))
    p.add_argument("--repeats", type=int, default=5, help="timed inference rounds (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed inference rounds first")
    p.add_argument("--train-size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--train-repeats", type=int, default=5, help="timed training steps (median)")
    p.add_argument("--train-warmup", type=int, default=2)
    p.add_argument("--scaling-sizes", type=int, nargs="*", default=[400, 600, 800, 1000, 1200],
                   help="short sides for the size table (none: skip it)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 settings on CPU: 'auto' only where the CPU has native bf16")
    p.add_argument("--device", default="cpu", help="cpu or cuda (fp16 AMP instead of bf16)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--data", default=DEFAULT_DATA, help="folder whose val2017/ gives the photo")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 320x480 (training 192x256), one round of everything without "
                   "warm-up, scaling at 256 and 384")
    args = p.parse_args(argv)
    if args.quick:  # a smoke test: no warm-up, its times are not for reading
        args.size, args.repeats, args.warmup = (320, 480), 1, 0
        args.train_size, args.train_batch, args.train_repeats, args.train_warmup = (192, 256), 1, 1, 0
        args.scaling_sizes = [256, 384]
    args.cuda = args.device.startswith("cuda")
    if args.cuda:
        args.reduced, args.reduced_why = "fp16", ""
    elif args.bf16 == "off":
        args.reduced, args.reduced_why = None, "--bf16 off"
    elif args.bf16 == "on":
        args.reduced, args.reduced_why = "bf16", ""
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            choice = choose_precision("auto", "cpu", setting="--bf16")
        native = choice.name == "bf16"
        args.reduced = "bf16" if native else None
        args.reduced_why = "" if native else "this CPU has no native bf16: emulated, hundreds of times slower"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_header(args), flush=True)
    image = timing_image(tuple(args.size), args.data).to(args.device)
    candidates, verdicts, analysis = [], {}, None
    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the bf16-is-emulated warning: measured
        for arch in args.models:
            print(f"{arch}: ({time.perf_counter() - started:.0f} s into the run)", flush=True)
            group = build_architecture(arch, image, args.device, tmp)
            verdicts.update(same_detections(group, image, args.device))
            for c in group:
                c.results["gflops"], c.results["params"] = flops_and_params(c, image)
            time_inference(group, image, args)
            time_training(group, args)
            candidates += group
            if arch == "R50-FPN" and args.scaling_sizes:
                analysis = time_scaling(group, args)
            for c in group:  # results kept, models freed before the next architecture
                c.model = None
    print()
    print("\n".join(report(candidates, verdicts, analysis, args)))
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
