# The two commands a user types: `make sim` and `make test`. Both bootstrap everything.
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
SIM      ?= verilator
JOBS     ?= auto
BUILD    := build

.PHONY: all sim test bench verilog synth synth-blocks clean distclean toolchain

all: test

# --- bootstrap ---------------------------------------------------------------------------
$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Icarus Verilog with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; \
	  else \
	    echo "error: Icarus Verilog (iverilog) is missing; install it, e.g. 'sudo apt-get install iverilog'" >&2; exit 1; \
	  fi; }
	@test -f /usr/include/lz4.h || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing liblz4-dev (Verilator's FST waveforms, WAVES=1) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblz4-dev; \
	  else \
	    echo "note: WAVES=1 on Verilator needs liblz4-dev, e.g. 'sudo apt-get install liblz4-dev'" >&2; \
	  fi; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

toolchain: $(STAMP)

# --- the two commands --------------------------------------------------------------------
sim: $(STAMP)
	$(VENV)/bin/convcore demo --backend $(SIM)

# One BLAS thread per pytest worker: the workers already fill the cores.
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) -q

# --- more --------------------------------------------------------------------------------
bench: $(STAMP)
	$(PY) -m sim.bench

# The engine as one Verilog file, a file list and its description (build/verilog/$(CONFIG)/).
CONFIG   ?= default
verilog: $(STAMP)
	$(PY) -m sim.verilog_export --config $(CONFIG)

# Yosys + nextpnr: the default configuration on ECP5, the ice40 configuration on iCE40, each
# placed with 3 seeds (the worst is reported); synth-blocks: each block on its own, quickly.
synth: $(STAMP)
	$(PY) -m sim.synth --all

synth-blocks: $(STAMP)
	$(PY) -m sim.synth --blocks

clean:
	rm -rf $(BUILD)

distclean: clean
	rm -rf $(VENV) *.egg-info
