"""``python -m fpn_plugin.export``: write a detector as TorchScript or ONNX (see the package
docstring for what the files take and return)."""
import argparse
import sys

from .exporter import FORMATS, ExportError, export_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fpn_plugin.export",
        description="Export a detector to TorchScript (model.ts) or ONNX (model.onnx), with export.json.",
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="weights file (or URL) the Predictor loads")
    parser.add_argument("--format", required=True, choices=list(FORMATS))
    parser.add_argument("--output", required=True, help="folder for the model file and export.json")
    parser.add_argument("--sample-image", help="image traced on (default: seeded noise)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip comparing the file with the eager model on two input sizes")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="fpn_plugin")
    try:
        path = export_model(args.config_file, args.weights, args.format, args.output,
                            sample_image=args.sample_image, opts=args.opts, check=not args.no_check)
    except ExportError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
