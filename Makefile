# Fresh-machine entry points (README): `make run` starts the service on the embedded default, `make test` runs
# the tests. Both create .venv and install deltamu into it first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: the 2.13.0 wheel (CPU on this kind of machine). A range 2.13.0 satisfies is pinned in pyproject.toml so
# pip never resolves a newer release on its own. The fla extra (flash-linear-attention, for tests/gdn/test_apply.py)
# pulls no torch of its own.
TORCH ?= torch==2.13.0

.PHONY: install run test test-fast coordcheck sweep clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,fla]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/deltamu up

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

coordcheck: install
	$(BIN)/deltamu coordcheck --widths 64,128,256,512 --parametrization mup,sp --plot coordcheck.png

sweep: install
	$(BIN)/deltamu sweep --width 64 --depth 2 --seq-len 128 --steps 200 --count 5 --plot sweep.png

clean:
	rm -rf $(VENV) .pytest_cache .deltamu
