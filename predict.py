#!/usr/bin/env python
"""Run a detector on new images, folders, globs or videos: see `python predict.py -h`."""
import sys

import fpn_plugin  # noqa: F401  (before detectron2: compatibility fixes, registrations)
from fpn_plugin.inference.predict_cli import main

if __name__ == "__main__":
    sys.exit(main())
