#!/usr/bin/env python
"""Check the datasets root and say precisely what is missing: python datasets/check_layout.py."""
import importlib.util
import sys
from pathlib import Path

# Loaded from its file, not through `import fpn_plugin`: this needs neither torch nor detectron2,
# so it runs on a machine (or before `make install`) that only stores the data.
_PATH = Path(__file__).resolve().parents[1] / "fpn_plugin" / "data" / "layout.py"
_spec = importlib.util.spec_from_file_location("fpn_plugin_data_layout", _PATH)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
main = _module.main

if __name__ == "__main__":
    sys.exit(main())
