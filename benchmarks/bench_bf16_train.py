#!/usr/bin/env python
"""Training-step speed of bf16 autocast vs fp32 on CPU (or fp16 vs fp32 on CUDA).

    python benchmarks/bench_bf16_train.py [--models r18 r50] [--iters 8] [--batch 4]
        [--roi-align torchvision gather]

For each model (detectron2's builtin Faster R-CNN FPN from its model-zoo config, ResNet depth
18 or 50, random weights), it times full training steps (forward, backward, SGD step) on the
same random batch of ``--batch`` 192x256 images with boxes, in fp32 and in the mixed
precision the trainer uses (``fpn_plugin.engine.precision.Precision``), and prints a table:
model, ROIAlign, precision, median s/iter, ratio to the fp32 step with detectron2's ROIAlign
(torchvision's kernel), and the relative difference of the loss from that step's at the same
weights and random draws. ``--roi-align gather`` times the model with the ROIAlign fpn_plugin's
Trainer uses on CPU (``MODEL.PLUGIN_ROI_ALIGN`` auto: ``fpn_plugin.modeling.roi_align``).
Whether bf16 is fast on a CPU depends on native bf16 instructions (avx512_bf16, AMX; see
``python -m fpn_plugin.env``): without them the bf16 convolutions are emulated and slower than
fp32.
"""
import argparse
import copy
import statistics
import time

import torch
from tabulate import tabulate

import fpn_plugin  # noqa: F401  (first: detectron2 compatibility fixes)
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from fpn_plugin.device import resolve_device
from fpn_plugin.engine.precision import Precision
from fpn_plugin.modeling.roi_align import use_gather_roi_align
from fpn_plugin.precision import choose_precision
from fpn_plugin.env import _cpu_flags


def build(depth: int, device: str):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"  # random weights: FrozenBN's identity statistics explode
    torch.manual_seed(0)
    return build_model(cfg)


def batch(n: int, device: str):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        image = torch.randint(0, 256, (3, 192, 256), dtype=torch.uint8, generator=g)
        xy = torch.rand(3, 2, generator=g) * torch.tensor([150.0, 100.0])
        wh = 20 + torch.rand(3, 2, generator=g) * 80
        gt = Instances((192, 256), gt_boxes=Boxes(torch.cat([xy, xy + wh], 1)))
        gt.gt_classes = torch.randint(0, 80, (3,), generator=g)
        out.append({"image": image.to(device), "instances": gt.to(device)})
    return out


def first_loss(model, data, precision: Precision) -> float:
    """Total loss at the given weights, with the same random draws (anchor/ROI sampling)."""
    torch.manual_seed(123)
    with EventStorage(0), torch.no_grad(), precision.autocast():
        return float(sum(model(data).values()))


def time_steps(model, data, precision: Precision, warmup: int, iters: int) -> list:
    model = copy.deepcopy(model)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    times = []
    with EventStorage(0):
        for i in range(warmup + iters):
            start = time.perf_counter()
            with precision.autocast():
                losses = sum(model(data).values())
            optimizer.zero_grad()
            precision.backward(losses)
            precision.step(optimizer)
            if precision.device_type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["r18"], choices=["r18", "r34", "r50"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=8, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--roi-align", nargs="+", default=["torchvision", "gather"],
                        choices=["torchvision", "gather"],
                        help="ROIAlign kernels to time (the first is the ratios' reference)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    # The reduced precision this device trains in, forced to bf16 on a CPU (the policy warns
    # where it is emulated): what is measured here is its cost.
    mixed = choose_precision("fp16" if device.startswith("cuda") else "bf16", device).name
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU flags: {_cpu_flags()}, batch {args.batch} x 3x192x256, "
          f"{args.warmup} warm-up + {args.iters} timed steps")
    rows = []
    for name in args.models:
        built = build(int(name[1:]), device)
        data = batch(args.batch, device)
        ref_loss = first_loss(built, data, Precision("fp32", device))
        reference = None
        for roi_align in args.roi_align:
            model = copy.deepcopy(built)
            if roi_align == "gather":
                use_gather_roi_align(model)
            for precision in ("fp32", mixed):
                p = Precision(precision, device)
                times = time_steps(model, data, p, args.warmup, args.iters)
                seconds, loss = statistics.median(times), first_loss(model, data, p)
                reference = reference or seconds
                print(f"  {name}-FPN {roi_align} {precision}: steps "
                      f"{', '.join(f'{t:.2f}' for t in times)} s", flush=True)
                rows.append((f"{name}-FPN", roi_align, precision, f"{seconds:.3f}",
                             f"{seconds / reference:.2f}x", f"{abs(loss - ref_loss) / abs(ref_loss):.2e}"))
    print(tabulate(rows, headers=("model", "ROIAlign", "precision", "s/iter (median)",
                                  f"ratio to fp32 {args.roi_align[0]}", "loss rel. diff"),
                   tablefmt="github"))


if __name__ == "__main__":
    main()
