"""The command ``python -m fpn_plugin.data.check``: which datasets to check, the printed
reports, the drawings and the exit status (see :mod:`fpn_plugin.data.check`)."""
import argparse
import os
import sys
from typing import Optional, Sequence

__all__ = ["main"]


def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m fpn_plugin.data.check",
        description="Check a detection dataset: counts, class histogram, id mapping, problems, "
        "drawings.",
    )
    p.add_argument("datasets", nargs="*", help="registered dataset names")
    p.add_argument("--config-file", help="check the TRAIN and TEST datasets of this config")
    p.add_argument("--coco", nargs=2, metavar=("JSON", "IMAGE_DIR"),
                   help="a COCO JSON and its images")
    p.add_argument("--vocdevkit", nargs=2, metavar=("DIR", "SPLIT"),
                   help="a VOCdevkit folder and split")
    p.add_argument("--voc-folder", metavar="DIR", help="a flat folder of images and XMLs")
    p.add_argument("--classes", default="",
                   help="comma-separated class names (VOC), else from the data")
    p.add_argument("--draw", type=int, default=4,
                   help="images to draw the ground truth on (default 4)")
    p.add_argument("--output", default="dataset_check", help="folder for the drawings")
    p.add_argument("--no-images", action="store_true", help="do not open the images (faster)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the check; returns 0 when no problem was found, 1 when problems were found, and 2
    when the check could not run (bad arguments, a config or file it cannot read)."""
    args = _parse_args(argv)
    try:
        return _run(args)
    except Exception as e:  # the check itself failed: say so, apart from "problems found"
        print(f"python -m fpn_plugin.data.check could not run: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


def _reports(args) -> list:
    """One report per dataset the arguments name, in the order of the options."""
    from .coco import check_coco
    from .registered import check_dataset
    from .voc import check_voc, check_vocdevkit

    check_images = not args.no_images
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    reports = []
    if args.coco:
        reports.append(check_coco(args.coco[0], args.coco[1], check_images, args.draw))
    if args.vocdevkit:
        reports.append(check_vocdevkit(*args.vocdevkit, classes, check_images, args.draw))
    if args.voc_folder:
        reports.append(check_voc(args.voc_folder, args.voc_folder, None, classes, check_images,
                                 args.draw))
    names = list(args.datasets)
    if args.config_file:
        from ...config import setup_config

        # Registered, not loaded: reading the files is the check's job, reporting what fails.
        cfg = setup_config(args.config_file, device="cpu", datasets="register")
        names += [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) if n not in names]
    for name in names:
        reports.append(check_dataset(name, check_images, args.draw))
    return reports


def _run(args) -> int:
    import fpn_plugin  # noqa: F401  (compat fixes and builtin registrations)

    from .draw import draw_ground_truth

    reports = _reports(args)
    if not reports:
        print("Nothing to check: give dataset names, --config-file, --coco, --vocdevkit or "
              "--voc-folder.", file=sys.stderr)
        return 2
    failed = False
    for k, report in enumerate(reports):
        print(report.format())
        if args.draw:
            out = os.path.join(args.output, str(k) if len(reports) > 1 else "")
            written = draw_ground_truth(report, out)
            print(f"ground truth drawn on {len(written)} image(s) in {os.path.abspath(out)}")
        failed |= bool(report.problems)
        print()
    return 1 if failed else 0
