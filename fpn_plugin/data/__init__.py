"""Datasets: builtin COCO/VOC, custom data declared in the config, the synthetic default."""
