# sodium-node: the two commands of the README bootstrap everything they need on a fresh Debian 12.
#   make demo   simulate a session and run it through the node
#   make test   ruff, mypy and pytest
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Debian packages used as real peers: dcmtk (storescu/echoscu/storescp), orthanc (PACS),
# dicom3tools (dciodvfy IOD validator), dcm2niix (reference converter).
APT_TOOLS := storescu:dcmtk Orthanc:orthanc dciodvfy:dicom3tools dcm2niix:dcm2niix

.PHONY: demo test lint typecheck pytest tools venv clean

demo: venv tools
	$(BIN)/sodium-node demo

test: venv tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

tools:
	@missing=""; for pair in $(APT_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
