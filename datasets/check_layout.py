#!/usr/bin/env python
"""Check the datasets root and say precisely what is missing: python datasets/check_layout.py."""
import sys

from _standalone import load_data_module  # this folder is on sys.path when a script runs

main = load_data_module("layout").main

if __name__ == "__main__":
    sys.exit(main())
