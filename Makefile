# One-command setup: `make test` and `make demo` create .venv when missing and (re)install the pinned
# requirements and rebuild the compiled ops (tuco_kernels._C from csrc/) only when requirements.txt,
# constraints.txt, pyproject.toml, setup.py or the C++/CUDA sources change (the stamp holds their hash).
PY    := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)   # the venv's ninja (and tools) for the compiled ops
SOURCES := pyproject.toml setup.py tuco_kernels/ops/build_config.py csrc/*
HASH  := $(shell cat requirements.txt constraints.txt $(SOURCES) | sha256sum | cut -c1-16)
STAMP := .venv/.installed-$(HASH)
EXTRAS := triton,gguf,research,eval,dev
OLD_EXTRAS := triton,gguf,research,dev   # the oldest venv leaves lm-eval out (it and the datasets it brings are the pinned versions, not floors); its tests skip there by name

.PHONY: venv test quick-test test-oldest demo studies bench gpu-check clean
venv: $(STAMP)

$(STAMP):
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0          # first: nothing may pull a CUDA build of torch
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	# the package with what pyproject.toml declares, built against the torch above (one compile of tuco_kernels._C)
	$(PY) -m pip install -q -c constraints.txt --no-build-isolation -e ".[$(EXTRAS)]"
	rm -f .venv/.installed-* && touch $(STAMP)

test: venv
	$(PY) -m pytest tests bench -q -rs --benchmark-disable --durations=15

quick-test: venv   # the quick loop: neither slow nor needing a pinned wheel
	$(PY) -m pytest tests -q -m "not slow and not network" --benchmark-disable

# The oldest stack the package declares (pyproject.toml's lower bounds, every extra; torch stays the CPU pin) in a
# second venv, and the quick tests on it. CI runs it after `make test`.
OLD_PY    := .venv-oldest/bin/python
OLD_HASH  := $(shell cat .ci/oldest_constraints.py $(SOURCES) | sha256sum | cut -c1-16)
OLD_STAMP := .venv-oldest/.installed-$(OLD_HASH)

$(OLD_STAMP):
	test -x $(OLD_PY) || python3 -m venv .venv-oldest
	$(OLD_PY) -m pip install -q torch==2.13.0
	python3 .ci/oldest_constraints.py --extras $(OLD_EXTRAS) > .venv-oldest/constraints.txt
	$(OLD_PY) -m pip install -q -c .venv-oldest/constraints.txt setuptools ninja
	$(OLD_PY) -m pip install -q -c .venv-oldest/constraints.txt --no-build-isolation -e ".[$(OLD_EXTRAS)]"
	$(OLD_PY) .ci/oldest_constraints.py --check .venv-oldest/constraints.txt   # really installed the floors
	rm -f .venv-oldest/.installed-* && touch $(OLD_STAMP)

test-oldest: $(OLD_STAMP)
	PATH=$(CURDIR)/.venv-oldest/bin:$$PATH $(OLD_PY) -m pytest tests -q -m "not slow and not network" \
	    --benchmark-disable -p no:cacheprovider

demo: venv
	$(PY) -m tuco_research.demo

# The paper's studies on the default pair, sized for a 2-core CPU (each script's --help gives the full protocol).
studies: venv
	$(PY) -m tuco_research.eval_chat_adapter --n 100
	$(PY) -m tuco_research.studies.web_vs_chat --n 100
	$(PY) -m tuco_research.studies.many_shot --n 4 --answer-tokens 16 --max-question-chars 120 --n-templates 40
	$(PY) -m tuco_research.studies.jailbreak_detection --n 40
	$(PY) -m tuco_research.studies.alpha_mmlu --subjects astronomy,computer_security,high_school_computer_science --shots 1 --max-questions 40

bench: venv
	$(PY) -m pytest bench -q -rs
	$(PY) bench/kernels.py
	$(PY) bench/engine_overhead.py
	$(PY) bench/stream.py $$($(PY) -c "import torch; print('' if torch.cuda.is_available() else '--small --device cpu --no-csv')")
	$(PY) bench/distributed.py

# On a GPU machine, with its own Python as it is (no venv, no network; `python3 bench/gpu_check.py` without make):
# preflight, one install, the GPU tests, the kernel, engine and streaming benchmarks in ONE call of at most 540 s
# (each step under its own limit); summary.md and gpu-check.tar.gz into $$OUT. PHASE=tests|kernels|stream runs one
# phase more fully (a second call); DRY=1 runs the plumbing on CPU with tiny shapes (CI does).
PHASE ?= all
GPU_PY ?= python3
gpu-check: $(if $(DRY),venv)
	$(if $(DRY),$(PY),$(GPU_PY)) bench/gpu_check.py --phase $(PHASE) $(if $(DRY),--dry-run)

clean:
	rm -rf .venv .venv-oldest build *.egg-info out tuco_kernels/_C*.so tuco_kernels/_build_info.py
