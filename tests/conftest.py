# fpn_plugin must be imported before any detectron2 submodule (see fpn_plugin/compat.py);
# importing it here makes that true for every test module, whatever it imports first.
import fpn_plugin  # noqa: F401
