# entrank: build, set-up, tests and benchmarks.
#
#   make run     set up what is missing, build, train configs/tiny.cfg on the embedded default task
#   make test    set up what is missing, build, run the whole suite (prints "N passed, N failed")
#   make bench   throughput benchmarks (tokens/s, GFLOP/s against measured cblas_sgemm)
#   make test-gpu      (CUDA builds, on a GPU) every CUDA op and the whole model against the CPU, NCCL
#   make bench-gpu     (CUDA builds, on a GPU) tokens/s and MFU; results in bench/results/
#   make gpu-check     (on a lent GPU machine) build, test-gpu and a short bench-gpu in one command, < 8 min
#   make emu     the CUDA backend built for the CPU (emulated CUDA, build-emu/; tests/cuda_emu/emu.mk);
#                make test runs every GPU test program on it; make test-emu-asan under ASan + UBSan
#   make deps    install the Debian packages (as root) or print exactly what is missing, then the
#                tools' pinned Python packages (tools/requirements.txt) into the project venv .venv

# Debian's interpreter carries numpy/h5py/matplotlib; a python3 earlier on PATH may not.
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do $$p -c 'import h5py, numpy' 2>/dev/null && { command -v $$p; break; }; done)
CC      = mpicc
PKGS    = hdf5-openmpi libconfig fftw3 fftw3f
# OpenBLAS's OpenMP build shares libgomp's thread pool with our own OpenMP loops; the default
# pthread build keeps a second pool whose spinning threads fight ours for the cores.
BLAS_DIR = /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_PC  = PKG_CONFIG_PATH=$(BLAS_DIR)/pkgconfig pkg-config
ARCH   ?= -march=native
CFLAGS ?= -O3 $(ARCH)
CFLAGS += -std=c11 -D_GNU_SOURCE -fopenmp -Wall -Wextra -Werror -MMD -MP
# No FP traps are ever enabled here, and with GCC's default (-ftrapping-math) the conditionals of
# src/cpu/fast_math.inc (the clamps, before they became masks; logf_fast's range step) are branches
# that keep every loop calling them scalar (GELU, softmax, cross-entropy: 22% of the small step).
# This changes no value: each operation still rounds as IEEE says, and nothing is reassociated.
CFLAGS += -fno-trapping-math
# Nothing here reads errno after a math function (only after strtol/strtod, which this does not
# touch), and a sqrt that may set errno keeps its loop scalar: AdamW's update ran one element at a
# time. Values are unchanged: sqrt is still the correctly rounded IEEE square root.
CFLAGS += -fno-math-errno
# In ISO C mode (-std=c11) GCC never fuses a * b + c into one fused multiply-add, so on a CPU with
# FMA the polynomials of fast_math.inc's exp and log ran as dependent multiply and add pairs, and
# SGA's statistics (two logs per coefficient) were bound by that latency. Fused, each such step
# rounds once instead of twice: values change in the last bits, not in kind (the tolerances of the
# fp64 oracle and the GPU twins hold; nvcc fuses by default too), and a build stays deterministic.
# One thread, (1024, 512) rows on a Zen 3: SGA statistics forward 2.3-2.6 -> 1.5 ns an element,
# backward 2.0-2.2 -> 1.3, the causal softmax 1.3 -> 1.0, cross-entropy 1.0 -> 0.7.
CFLAGS += -ffp-contract=fast
CFLAGS += $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(shell $(BLAS_PC) --cflags openblas 2>/dev/null)
REVISION := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
CFLAGS += -DENTRANK_REVISION='"$(REVISION)"'
# libhdf5_hl: the dimension scales (H5DS) of metrics.h5's layer and head axes; the pkg-config file
# of hdf5-openmpi names only libhdf5, whose -L directory also holds the high-level library.
HDF5_HL = $(filter -L%,$(shell pkg-config --libs hdf5-openmpi 2>/dev/null)) -lhdf5_hl
LDLIBS  = $(HDF5_HL) $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(shell $(BLAS_PC) --libs openblas 2>/dev/null) -Wl,-rpath,$(BLAS_DIR) -lm -fopenmp

# The CUDA backend is built whenever the toolkit is present (CI compiles and links it without a
# GPU); without it the binary is CPU-only and train.device = "cuda" is refused.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
CUDA      ?= $(shell test -x $(NVCC) && echo 1 || echo 0)
# Binaries for A100 (sm_80) and H100/H200 (sm_90), and compute_90 PTX that the driver compiles
# for GPU generations after those.
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3
NVCCFLAGS += -std=c++17 $(CUDA_ARCH) -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -MMD -MP
ifeq ($(CUDA),1)
CFLAGS += -DENTRANK_CUDA -I$(CUDA_HOME)/include
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart_static -lcublas -lcufft -lnccl -lstdc++ -ldl -lrt -lpthread
CUDA_SRC = $(wildcard cuda/*.cu)
CUDA_C_SRC = $(wildcard cuda/*.c)
endif
TEST_LDLIBS = $(LDLIBS) $(shell pkg-config --libs cmocka 2>/dev/null)

# mpirun refuses root and more ranks than cores unless told; tests and the demo run as root here.
export OMPI_ALLOW_RUN_AS_ROOT = 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = 1
export OMPI_MCA_rmaps_base_oversubscribe = 1
# Idle OpenMP threads (OpenBLAS's too) sleep after a short spin in every program the suite runs:
# libgomp's default spin takes the cores from the other tests and jobs of a shared machine. The
# benchmarks and `make run` leave the choice to entrank, which sets a spin of a given duration
# for the CPU (src/thread_policy.h). A value in the environment stands everywhere.
ifeq ($(origin GOMP_SPINCOUNT),undefined)
SPIN_CHOSEN_BY_ENTRANK = env -u GOMP_SPINCOUNT
endif
export GOMP_SPINCOUNT ?= 1000
export PYTHON

BUILD   = build
SRC     = $(wildcard src/*.c src/*/*.c) $(CUDA_C_SRC)
OBJ     = $(patsubst %.c,$(BUILD)/%.o,$(SRC)) $(patsubst %.cu,$(BUILD)/%.o,$(CUDA_SRC))
LIB_OBJ = $(filter-out $(BUILD)/src/main.o,$(OBJ))
TEST_SRC = $(wildcard tests/test_*.c)
ifneq ($(CUDA),1)
TEST_SRC := $(filter-out tests/test_cuda_%.c,$(TEST_SRC))
endif
TEST_BIN = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
# GPU programs (CUDA builds only): `make test` compiles them, so that CI without a GPU keeps them
# building; `make test-gpu` and `make bench-gpu` run them.
ifeq ($(CUDA),1)
GPU_TEST_SRC = $(wildcard tests/gpu_test_*.c tests/gpu_mpi_*.c)
GPU_BENCH_BIN = $(BUILD)/tests/bench_gpu
endif
GPU_TEST_BIN = $(patsubst tests/%.c,$(BUILD)/tests/%,$(GPU_TEST_SRC))
# MPI programs that pytest runs under mpirun
MPI_TEST_SRC = $(wildcard tests/mpi_*.c)
MPI_TEST_BIN = $(patsubst tests/%.c,$(BUILD)/tests/%,$(MPI_TEST_SRC))
BENCH_SRC = $(filter-out tests/bench_gpu.c,$(wildcard tests/bench_*.c))
BENCH_BIN = $(patsubst tests/%.c,$(BUILD)/tests/%,$(BENCH_SRC))

.PHONY: all run test test-c test-py bench test-gpu bench-gpu deps deps-debian check-deps check-system-deps clean
all: bin/entrank

bin/entrank: $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	@echo "NVCC $<"
	@$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "CC $@"
	@$(CC) $(CFLAGS) -Isrc -o $@ $< $(LIB_OBJ) $(TEST_LDLIBS)

# The FFTW wisdom the fp32 backend ships for SGA's DCTs: `make fftw-wisdom` on a quiet machine after
# FFTW changes (tests/gen_fftw_wisdom.c; test_fftw_wisdom fails when the shipped text no longer imports).
# The generator needs only FFTW, so it builds even while the shipped file is being replaced.
.PHONY: fftw-wisdom
fftw-wisdom: $(BUILD)/tests/gen_fftw_wisdom
	$(BUILD)/tests/gen_fftw_wisdom > src/cpu/dct_wisdom_f32.inc.new
	mv src/cpu/dct_wisdom_f32.inc.new src/cpu/dct_wisdom_f32.inc

$(BUILD)/tests/gen_fftw_wisdom: tests/gen_fftw_wisdom.c src/cpu/dct_fftw_plan.inc
	@mkdir -p $(dir $@)
	@echo "CC $@"
	@$(CC) $(CFLAGS) -Isrc -o $@ $< $(LDLIBS)

# ---------------------------------------------------------------------------------------------
# Set-up. Every target that needs the toolchain first runs check-deps, which is quick when all
# is present and otherwise installs (root on Debian) or lists what is missing and stops.
DEB_PACKAGES = build-essential pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools \
               libconfig-dev libopenblas-openmp-dev libfftw3-dev libcmocka-dev python3-numpy python3-h5py \
               python3-matplotlib python3-pytest python3-venv
define missing_deps
$$( command -v mpicc >/dev/null || echo mpicc; command -v mpirun >/dev/null || echo mpirun; \
    command -v h5dump >/dev/null || echo h5dump; \
    for p in hdf5-openmpi libconfig fftw3 fftw3f cmocka; do pkg-config --exists $$p || echo "pkg-config:$$p"; done; \
    $(BLAS_PC) --exists openblas || echo "openblas-openmp"; \
    /usr/bin/python3 -c 'import numpy, h5py, matplotlib, pytest' 2>/dev/null || echo "python3:numpy,h5py,matplotlib,pytest" )
endef

check-deps: check-system-deps
	@$(MAKE) --no-print-directory $(VENV_STAMP)

# The Debian packages alone: all that the trainer, the analysis scripts and so `make run` need.
check-system-deps:
	@missing="$(call missing_deps)"; \
	if [ -n "$$missing" ]; then echo "entrank: missing: $$missing"; $(MAKE) --no-print-directory deps-debian; fi

# The tools' Python packages (tokenizers, torch, transformers, ...) have no Debian packages at the
# pinned versions: they go into .venv, made from Debian's interpreter with its site packages
# (numpy, h5py, pytest stay Debian's). The stamp makes a present, current venv cost nothing; a
# changed requirements file reinstalls. Nothing is downloaded when the tools run.
VENV       = .venv
VENV_STAMP = $(VENV)/.installed
$(VENV_STAMP): tools/requirements.txt
	@echo "entrank: installing tools/requirements.txt into $(VENV)"
	@test -x $(VENV)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt
	@touch $@

deps: deps-debian
	@$(MAKE) --no-print-directory $(VENV_STAMP)

deps-debian:
	@missing="$(call missing_deps)"; \
	if [ -z "$$missing" ]; then echo "entrank: all dependencies present"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "entrank: installing Debian packages: $(DEB_PACKAGES)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEB_PACKAGES) || exit 1; \
	else \
	  echo "entrank: missing: $$missing"; \
	  echo "entrank: as root on Debian run: apt-get install $(DEB_PACKAGES)"; exit 1; \
	fi

# ---------------------------------------------------------------------------------------------
# The demo needs no tool of tools/, so not the venv (minutes and gigabytes on a fresh clone).
RUN_DIR ?= runs/tiny-logic
run: check-system-deps
	@$(MAKE) --no-print-directory all
	rm -rf $(RUN_DIR)
	$(SPIN_CHOSEN_BY_ENTRANK) bin/entrank train -c configs/tiny.cfg --run-dir $(RUN_DIR) --resume never
	$(PYTHON) analysis/summarize $(RUN_DIR)
	$(PYTHON) analysis/plot $(RUN_DIR) -o $(RUN_DIR)/plots

test: check-deps
	@$(MAKE) --no-print-directory all $(TEST_BIN) $(MPI_TEST_BIN) $(GPU_TEST_BIN) $(GPU_BENCH_BIN)
	@$(MAKE) --no-print-directory EMU_VARIANT=fast emu-build
	@EMU_BIN_DIR=build-emu/fast bash tests/run_all.sh $(BUILD)/tests

bench: check-deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@$(SPIN_CHOSEN_BY_ENTRANK) bash tests/run_bench.sh $(BENCH_BIN)

NO_CUDA_MSG = needs the CUDA backend, and this build has none ($(NVCC) not found, or CUDA=0)
# Each GPU test against the CPU (exit 77 = skipped where no GPU is visible); NCCL tests under
# mpirun with one rank per GPU when there are several. Prints "N passed, N failed".
test-gpu: check-deps
ifeq ($(CUDA),1)
	@$(MAKE) --no-print-directory all $(GPU_TEST_BIN)
	@bash tests/run_gpu.sh $(BUILD)/tests
else
	@echo "entrank: make test-gpu $(NO_CUDA_MSG)"; exit 1
endif

# One GPU: baseline, SGA and R3SI throughput and MFU; writes bench/results/gpu-<date>-<gpu>.txt.
bench-gpu: check-deps
ifeq ($(CUDA),1)
	@$(MAKE) --no-print-directory all $(GPU_BENCH_BIN)
	@$(GPU_BENCH_BIN) --out bench/results
else
	@echo "entrank: make bench-gpu $(NO_CUDA_MSG)"; exit 1
endif

.PHONY: gpu-check
# The first run on a lent GPU: tests/gpu_check.sh (machine, build, test-gpu, short bench-gpu; log in bench/results).
gpu-check: check-deps
ifeq ($(CUDA),1)
	@bash tests/gpu_check.sh
else
	@echo "entrank: make gpu-check $(NO_CUDA_MSG)"; exit 1
endif

clean:
	rm -rf $(BUILD) bin build-emu

include tests/cuda_emu/emu.mk

-include $(OBJ:.o=.d)
-include $(wildcard $(BUILD)/tests/*.d)
