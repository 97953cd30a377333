#!/usr/bin/env python
"""Fetch Pascal VOC 2007 (trainval + test) and 2012 (trainval) into the datasets root.

Resumable (run it again after an interruption) and verified against the published checksums.
Usage: python datasets/fetch_voc.py [voc2007 voc2012] [--root DIR] [--keep-archives]
"""
import sys

from _standalone import load_data_module  # this folder is on sys.path when a script runs

main = load_data_module("fetch").main

if __name__ == "__main__":
    sys.exit(main(default=("voc2007", "voc2012")))
