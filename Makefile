# One-command setup: `make test` and `make demo` create .venv when missing and (re)install the pinned
# requirements and rebuild the compiled ops (tuco_kernels._C from csrc/) only when requirements.txt,
# constraints.txt, setup.py or the C++/CUDA sources change (the stamp holds their hash).
PY    := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)   # the venv's ninja (and tools) for the compiled ops
HASH  := $(shell cat requirements.txt constraints.txt setup.py tuco_kernels/ops/build_config.py csrc/* | sha256sum | cut -c1-16)
STAMP := .venv/.installed-$(HASH)

.PHONY: venv test quick-test demo studies bench gpu-check clean
venv: $(STAMP)

$(STAMP):
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0          # first: nothing may pull a CUDA build of torch
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .   # builds tuco_kernels._C (ninja)
	rm -f .venv/.installed-* && touch $(STAMP)

test: venv
	$(PY) -m pytest tests bench -q -rs --benchmark-disable --durations=15

quick-test: venv   # the quick loop: neither slow nor needing a pinned wheel
	$(PY) -m pytest tests -q -m "not slow and not network" --benchmark-disable

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

# On a GPU machine, with its own Python as it is (no venv, no network): tests marked gpu, the kernel, engine and
# streaming benchmarks; results in $$OUT or bench/results/gpu-check/<device>/. PHASE=tests|kernels|stream runs one
# phase (each fits a 10-minute call); DRY=1 runs the plumbing on CPU with tiny shapes (CI does).
PHASE ?= all
GPU_PY ?= python3
gpu-check: $(if $(DRY),venv)
	$(if $(DRY),$(PY),$(GPU_PY)) bench/gpu_check.py --phase $(PHASE) $(if $(DRY),--dry-run)

clean:
	rm -rf .venv build *.egg-info out tuco_kernels/_C*.so tuco_kernels/_build_info.py
