# One-command setup: `make test` and `make demo` create .venv when missing and (re)install the pinned
# requirements and rebuild the compiled ops (tuco_kernels._C from csrc/) only when requirements.txt,
# constraints.txt, setup.py or the C++/CUDA sources change (the stamp holds their hash).
PY    := .venv/bin/python
HASH  := $(shell cat requirements.txt constraints.txt setup.py tuco_kernels/ops/build_config.py csrc/* | sha256sum | cut -c1-16)
STAMP := .venv/.installed-$(HASH)

.PHONY: venv test demo bench clean
venv: $(STAMP)

$(STAMP):
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0          # first: nothing may pull a CUDA build of torch
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .   # builds tuco_kernels._C (ninja)
	rm -f .venv/.installed-* && touch $(STAMP)

test: venv
	$(PY) -m pytest tests bench -q -rs --benchmark-disable

demo: venv
	$(PY) python/demo.py

bench: venv
	$(PY) -m pytest bench -q -rs
	$(PY) bench/kernels.py
	$(PY) bench/engine_overhead.py
	$(PY) bench/stream.py $$($(PY) -c "import torch; print('' if torch.cuda.is_available() else '--small --device cpu --no-csv')")

clean:
	rm -rf .venv build *.egg-info out tuco_kernels/_C*.so tuco_kernels/_build_info.py
