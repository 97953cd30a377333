"""Backbones and ROI heads, registered in detectron2's registries on import."""
