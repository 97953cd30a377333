#!/usr/bin/env python
"""Fetch COCO 2017 (annotations, val, train; coco2014 on request) into the datasets root.

Resumable (run it again after an interruption) and verified against the published checksums.
Usage: python datasets/fetch_coco.py [coco2017 coco2014] [--root DIR] [--keep-archives]
"""
import importlib.util
import sys
from pathlib import Path

# Loaded from its file, not through `import fpn_plugin`: this needs neither torch nor detectron2,
# so it runs on a machine (or before `make install`) that only stores the data.
_PATH = Path(__file__).resolve().parents[1] / "fpn_plugin" / "data" / "fetch.py"
_spec = importlib.util.spec_from_file_location("fpn_plugin_data_fetch", _PATH)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
main = _module.main

if __name__ == "__main__":
    sys.exit(main(default=("coco2017",)))
