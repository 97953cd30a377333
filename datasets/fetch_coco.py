#!/usr/bin/env python
"""Fetch COCO 2017 (annotations, val, train; coco2014 on request) into the datasets root.

Resumable (run it again after an interruption) and verified against the published checksums.
Usage: python datasets/fetch_coco.py [coco2017 coco2014] [--root DIR] [--keep-archives]
"""
import sys

from _standalone import load_data_module  # this folder is on sys.path when a script runs

main = load_data_module("fetch").main

if __name__ == "__main__":
    sys.exit(main(default=("coco2017",)))
