"""``predict.py``: run a detector on image files, folders, globs and videos.

Writes one visualisation per image (or an annotated video per video) and one
``predictions.json`` in COCO results format, with file and class names alongside, then prints
a summary. The exit code is 1 when any input could not be read, 2 for bad arguments.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from ..config import setup_config
from ..precision import PRECISIONS
from .images import ImageLoadError, load_image
from .inputs import expand_inputs
from .predictor import Predictor
from .proposals import ProposalsOnly, draw_proposals
from .results import class_ids_for_names, select, to_coco_results

__all__ = ["main", "build_parser"]

logger = logging.getLogger("fpn_plugin.predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run a trained detector on new images or videos.")
    p.add_argument("--config-file", help="the config the model was trained with")
    p.add_argument("--exported", metavar="DIR",
                   help="instead of --config-file/--weights: run an export folder of "
                        "`python -m fpn_plugin.export` (TorchScript, or ONNX with onnxruntime)")
    p.add_argument("--weights", help="checkpoint to load (default: MODEL.WEIGHTS of the config)")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="load a trusted weights file even if it asks to run code (refused by default; "
                        "MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE True)")
    p.add_argument("--input", nargs="+", required=True, help="image files, folders, glob patterns or videos")
    p.add_argument("--output", default="output/predict", help="folder for visualisations and predictions.json")
    p.add_argument("--score-threshold", type=float, default=0.5, help="drop detections scored below this")
    p.add_argument("--classes", nargs="+", help="keep only these class names")
    p.add_argument("--max-detections", type=int, default=100, help="keep at most this many per image")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'...")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default: the evaluator's detections), or reduced precision under "
                        "autocast: 'auto' (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), "
                        "'bf16' (warns where the CPU emulates it), 'fp16' (CUDA)")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                   help="the same as --precision bf16")
    p.add_argument("--fast-cpu", action="store_true",
                   help="CPU fast path: norms folded into convs, NHWC "
                        "(same detections up to fp32 rounding); with bf16 also bf16 in the backbone")
    p.add_argument("--int8-rpn", nargs="+", metavar="IMAGE",
                   help="with --fast-cpu: run the RPN head's 3x3 conv in int8, calibrated on these "
                        "images (files, folders, globs: a few like the ones to predict); the "
                        "detections change a little (README, 'CPU fast path')")
    p.add_argument("--coco-gt", help="COCO ground-truth JSON: take image and category ids from it")
    p.add_argument("--no-vis", action="store_true", help="write predictions.json only")
    p.add_argument("--fiftyone", metavar="NAME",
                   help="put the images and predictions into the FiftyOne dataset NAME (replaced if it "
                        "exists); with --coco-gt also the ground truth, and print FiftyOne's evaluation")
    p.add_argument("--proposals", type=int, default=0, metavar="K",
                   help="also draw each image's top K RPN proposals into <output>/proposals/")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p


def _setup_cfg(args):
    # The config's own datasets (DATASETS.CUSTOM ...) registered for their class names, when
    # the checkpoint carries none (nothing is loaded, so their files need not exist).
    cfg = setup_config(args.config_file, args.opts, device=args.device, datasets="register")
    if args.weights:
        cfg.MODEL.WEIGHTS = args.weights
    if args.allow_unsafe_pickle:
        cfg.MODEL.PLUGIN_WEIGHTS.ALLOW_UNSAFE_PICKLE = True
    cfg.freeze()
    return cfg


class _GroundTruthIds:
    """Image ids by file name and category ids by class name, from a COCO ground-truth file."""

    def __init__(self, path: Optional[str], class_names):
        self.by_file, self.category_ids, self._next = {}, None, 0
        if not path:
            return
        with open(path) as f:
            gt = json.load(f)
        self.by_file = {Path(im["file_name"]).name: im["id"] for im in gt["images"]}
        self._next = max(self.by_file.values(), default=-1) + 1
        by_name = {c["name"]: c["id"] for c in gt["categories"]}
        missing = [n for n in (class_names or []) if n not in by_name]
        if not class_names or missing:
            raise SystemExit(f"--coco-gt {path}: its categories {sorted(by_name)} do not name the model's classes {class_names}")
        self.category_ids = [by_name[n] for n in class_names]

    def image_id(self, file_name: str) -> int:
        if file_name not in self.by_file:
            self.by_file[file_name] = self._next
            self._next += 1
        return self.by_file[file_name]


class _Run:
    """One prediction run: turns predictions into files and counts what happened."""

    def __init__(self, args, predictor: Predictor):
        self.args, self.predictor = args, predictor
        self.out = Path(args.output)
        (self.out / "vis").mkdir(parents=True, exist_ok=True)
        names = predictor.class_names
        self.class_ids = class_ids_for_names(args.classes, names) if args.classes else None
        self.ids = _GroundTruthIds(args.coco_gt, names)
        self.metadata = MetadataCatalog.get("__fpn_plugin_predict__")
        if names and not self.metadata.get("thing_classes", None):
            self.metadata.set(thing_classes=list(names))
        self.rpn = ProposalsOnly(predictor.model) if args.proposals > 0 else None
        if self.rpn is not None:
            (self.out / "proposals").mkdir(exist_ok=True)
        self.results: List[dict] = []
        self.sizes = {}  # file name -> (height, width), for FiftyOne
        self.failures: List[tuple] = []
        self.images_done = 0

    def _select(self, output):
        a = self.args
        return select(output["instances"], a.score_threshold, self.class_ids, a.max_detections)

    def _draw(self, rgb: np.ndarray, instances) -> np.ndarray:
        return Visualizer(rgb, self.metadata).draw_instance_predictions(instances).get_image()

    def add(self, name: str, rgb: np.ndarray, output, image_id: int) -> Optional[np.ndarray]:
        instances = self._select(output)
        self.sizes[name] = rgb.shape[:2]
        self.results += to_coco_results(
            instances, image_id, name, self.predictor.class_names, self.ids.category_ids
        )
        self.images_done += 1
        return None if self.args.no_vis else self._draw(rgb, instances)

    def images(self, paths: List[Path], bar) -> None:
        size = self.predictor.batch_size
        for start in range(0, len(paths), size):
            loaded = []
            for path in paths[start : start + size]:
                try:
                    loaded.append((path, load_image(path)))
                except ImageLoadError as e:
                    self.failures.append((str(path), str(e)))
                    bar.update(1)
            if not loaded:
                continue
            outputs = self.predictor.predict([rgb for _, rgb in loaded], "RGB")
            for (path, rgb), output in zip(loaded, outputs):
                drawn = self.add(path.name, rgb, output, self.ids.image_id(path.name))
                if drawn is not None:
                    cv2.imwrite(str(self.out / "vis" / (path.stem + ".jpg")), drawn[:, :, ::-1])
                if self.rpn is not None:
                    self._draw_proposals(path, rgb)
                bar.update(1)

    def _draw_proposals(self, path: Path, rgb: np.ndarray) -> None:
        (output,) = self.rpn([self.predictor.model_input(rgb)])
        drawn = draw_proposals(rgb, output["proposals"].to("cpu"), self.args.proposals)
        cv2.imwrite(str(self.out / "proposals" / (path.stem + ".jpg")), drawn[:, :, ::-1])

    def video(self, path: Path, bar) -> None:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            self.failures.append((str(path), "not a readable video"))
            return
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        writer, frame_index = None, 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            name = f"{path.name}#{frame_index:06d}"
            (output,) = self.predictor.predict([rgb], "RGB")
            drawn = self.add(name, rgb, output, self.ids.image_id(name))
            if drawn is not None:
                if writer is None:
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    h, w = drawn.shape[:2]
                    # Beside the drawn images, where the final "visualisations:" line points.
                    writer = cv2.VideoWriter(str(self.out / "vis" / (path.stem + "_pred.mp4")), fourcc, fps, (w, h))
                writer.write(np.ascontiguousarray(drawn[:, :, ::-1]))
            frame_index += 1
            bar.update(1)
        capture.release()
        if writer is not None:
            writer.release()
        if frame_index == 0:
            self.failures.append((str(path), "the video has no readable frame"))


def _to_fiftyone(args, run: _Run, images: List[Path]) -> None:
    from . import fiftyone_view

    done = [str(p) for p in images if p.name in run.sizes]
    dataset = fiftyone_view.images_to_fiftyone(done, run.sizes, args.fiftyone, overwrite=True)
    # FiftyOne deletes non-persistent datasets once no process uses them: this one is meant to
    # be opened after predict.py has exited.
    dataset.persistent = True
    fiftyone_view.add_coco_results(dataset, run.results, run.sizes)
    if args.coco_gt:
        with open(args.coco_gt) as f:
            fiftyone_view.add_coco_ground_truth(dataset, json.load(f))
        fiftyone_view.evaluate_detections(dataset)
    print(f"FiftyOne dataset: {args.fiftyone} ({len(dataset)} samples); open it with "
          f"`import fiftyone as fo; fo.launch_app(fo.load_dataset({args.fiftyone!r}))`")


def _calibration_images(specs: Optional[List[str]]) -> Optional[List[Path]]:
    """The images ``--int8-rpn`` names; an error for anything else, so none is silently left out."""
    if specs is None:
        return None
    found = expand_inputs(specs)
    unusable = [f"{spec} ({reason})" for spec, reason in found.problems]
    unusable += [f"{video} (a video: give image files)" for video in found.videos]
    if unusable or not found.images:
        raise ValueError("--int8-rpn needs calibration images; unusable: "
                         + (", ".join(unusable) or "none found in " + " ".join(specs)))
    return found.images


def _predictor(args):
    """The eager Predictor of --config-file/--weights, or the runner of an --exported folder."""
    if not args.exported:
        if not args.config_file:
            raise ValueError("give --config-file (with --weights) or --exported DIR")
        return Predictor(_setup_cfg(args), args.batch_size, args.precision, fast_cpu=args.fast_cpu,
                         int8_rpn_images=_calibration_images(args.int8_rpn))
    # The export fixed the model, its weights, precision, device (CPU) and batch of one.
    fixed = {"--config-file": args.config_file, "--weights": args.weights, "--fast-cpu": args.fast_cpu,
             "--int8-rpn": args.int8_rpn,
             "--proposals": args.proposals, "--precision": args.precision != "fp32",
             "--batch-size": args.batch_size != 1, "--device": args.device not in ("auto", "cpu"),
             "config overrides": args.opts}
    given = [name for name, value in fixed.items() if value]
    if given:
        raise ValueError(f"--exported runs the exported model as it was exported: {', '.join(given)} "
                         "cannot apply to it (export again with them instead)")
    from ..export import load_exported

    return load_exported(args.exported)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    inputs = expand_inputs(args.input)
    try:
        predictor = _predictor(args)
    except (ValueError, ImportError) as e:  # e.g. --fast-cpu with a CUDA device, no onnxruntime
        print(f"predict.py: {e}", file=sys.stderr)
        return 2
    try:
        run = _Run(args, predictor)
    except ValueError as e:
        print(f"predict.py: {e}", file=sys.stderr)
        return 2
    run.failures += [(spec, reason) for spec, reason in inputs.problems]

    frames = sum(int(cv2.VideoCapture(str(v)).get(cv2.CAP_PROP_FRAME_COUNT)) for v in inputs.videos)
    start = time.perf_counter()
    with tqdm(total=len(inputs.images) + frames, unit="img", desc="predict") as bar:
        run.images(inputs.images, bar)
        for video in inputs.videos:
            run.video(video, bar)
    seconds = time.perf_counter() - start

    with open(run.out / "predictions.json", "w") as f:
        json.dump(run.results, f)
    if args.fiftyone:
        _to_fiftyone(args, run, inputs.images)
    rate = run.images_done / seconds if seconds > 0 else 0.0
    print(f"\n{run.images_done} images, {len(run.results)} detections, {seconds:.1f} s ({rate:.2f} images/s)")
    for spec, reason in run.failures:
        print(f"  FAILED {spec}: {reason}")
    if inputs.skipped:  # not failures: files in the folders that are no image or video
        print(f"  skipped {len(inputs.skipped)} files that are neither images nor videos: "
              + ", ".join(str(p) for p in inputs.skipped[:10])
              + (f" ... and {len(inputs.skipped) - 10} more" if len(inputs.skipped) > 10 else ""))
    print(f"predictions: {run.out / 'predictions.json'}")
    if not args.no_vis:
        print(f"visualisations: {run.out / 'vis'}")
    return 1 if run.failures else 0
