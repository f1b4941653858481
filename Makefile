# Two commands: `make demo` (set up, then train LeNet on Fashion-MNIST) and `make test`.
# Each sets up what it needs (virtual environment, the package, the data set) and is idempotent.
# `make demo` installs only what running convzoo needs; `make test` (and `make setup`, the
# developer's set-up) adds the dev extra: test tools, linters, ONNX, TensorBoard, Jupyter (kernel and front end).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
DATA := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install setup data browser lint bench tour-notebook tour-notebook-run tour-pictures mutate

demo: install data
	$(BIN)/convzoo train lenet --recipe d2l --out runs/lenet-demo --overwrite
	@echo "the run's report (curves, confusion matrix, mistakes): open runs/lenet-demo/report.html in a browser"

test: setup data browser
	$(BIN)/python -m pytest -q

install: $(RUN_STAMP)

setup: $(DEV_STAMP)

$(RUN_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $(RUN_STAMP) $(DEV_STAMP)

# Debian ships the real Fashion-MNIST; elsewhere `convzoo data fetch` downloads it.
data:
	@if [ -f $(DATA)/train-images-idx3-ubyte.gz ] || $(BIN)/convzoo data check >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else $(BIN)/convzoo data fetch; fi

# Headless Chromium opens report.html in the tests; where it cannot be installed that test is skipped.
browser:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium could not be installed: the report's browser test will be skipped"

# docs/tour.md as a notebook (generated, not kept in git), and the tour run in docs/ to redraw docs/tour/*.png.
# `make tour-notebook-run` executes it headless in docs/ (its outputs saved in it); to open it: .venv/bin/jupyter notebook docs/tour.ipynb
tour-notebook: setup
	$(BIN)/python tools/tour_runner.py notebook docs/tour.md docs/tour.ipynb

tour-notebook-run: tour-notebook data
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 docs/tour.ipynb
	@echo "executed docs/tour.ipynb; open it with: .venv/bin/jupyter notebook docs/tour.ipynb"

tour-pictures: setup data
	$(BIN)/python tools/tour_runner.py run docs/tour.md --cwd docs

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

# Mutation testing of the core (slow: tens of minutes on 2 cores; docs/testing.md). GROUPS=ops models ... for some.
mutate: setup data
	$(PIP) -e '.[dev,mutation]'
	$(BIN)/python tools/mutation.py run $(GROUPS)
	$(BIN)/python tools/mutation.py report $(GROUPS) --survivors
