# tests/cuda_emu/emu.mk: the emulated CUDA build, included by the Makefile.
#
#   make emu              build-emu/fast: cuda/*.cu rewritten by cu2cpp.pl (launches only) and built
#                         as host C++ against tests/cuda_emu/include, the CPU sources with
#                         -DENTRANK_CUDA, the GPU test programs (gpu_mpi_nccl too, run under
#                         mpirun), the emulated-NCCL fault programs (tests/emu_nccl_faults.c), the
#                         emulator's self-test and an entrank binary whose train.device = "cuda"
#                         runs on the emulator
#   make test-emu         the above, then the self-test, every GPU test program, the determinism
#                         check and the NCCL cases under mpirun (tests/run_emu.sh); `make test`
#                         runs the same section
#   make test-emu-asan    the same in build-emu/asan, under AddressSanitizer + UBSan
# build/ (the nvcc build) is never touched; one variant per make invocation (EMU_VARIANT).
EMU_VARIANT ?= fast
EMU_DIR     := build-emu/$(EMU_VARIANT)
EMU_SRC_DIR := tests/cuda_emu
EMU_INC     := -I$(EMU_SRC_DIR)/include
ifeq ($(EMU_VARIANT),asan)
EMU_OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
EMU_OPT     := -O2 -g $(ARCH)
endif
# The GPU contracts a*b+c into an fma unless told not to (nvcc's default): so do the kernels here.
EMU_FP      := -ffp-contract=fast
EMU_CFLAGS   = $(EMU_OPT) -std=c11 -D_GNU_SOURCE -fopenmp -Wall -Wextra -MMD -MP -DENTRANK_CUDA -DENTRANK_CUDA_EMU $(EMU_INC) \
               $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(shell $(BLAS_PC) --cflags openblas 2>/dev/null) \
               -DENTRANK_REVISION='"$(REVISION)"'
EMU_CXXFLAGS = $(EMU_OPT) $(EMU_FP) -std=c++17 -Wall -Wextra -Wno-unused-function -MMD -MP -DENTRANK_CUDA_EMU $(EMU_INC) -Icuda
EMU_LDLIBS   = -pthread $(HDF5_HL) $(shell pkg-config --libs $(PKGS) cmocka 2>/dev/null) $(shell $(BLAS_PC) --libs openblas 2>/dev/null) \
               -Wl,-rpath,$(BLAS_DIR) -lfftw3f -lm -fopenmp -lstdc++ $(filter -fsanitize=%,$(EMU_OPT))

EMU_CPU_OBJ  = $(patsubst %.c,$(EMU_DIR)/%.o,$(wildcard src/*.c src/*/*.c))
EMU_CU       = $(notdir $(basename $(wildcard cuda/*.cu)))
EMU_CU_OBJ   = $(patsubst %,$(EMU_DIR)/cuda/%.o,$(EMU_CU)) $(EMU_DIR)/cuda/comm_nccl.o
# The CUDA runtime and libraries; NCCL (over MPI) only where MPI is linked.
EMU_CORE_OBJ = $(EMU_DIR)/emu/runtime.o $(EMU_DIR)/emu/libs.o $(EMU_DIR)/emu/streams.o
EMU_RT_OBJ   = $(EMU_CORE_OBJ) $(EMU_DIR)/emu/nccl_mpi.o
EMU_LIB_OBJ  = $(filter-out $(EMU_DIR)/src/main.o,$(EMU_CPU_OBJ)) $(EMU_CU_OBJ) $(EMU_RT_OBJ)
EMU_TEST_BIN = $(patsubst tests/%.c,$(EMU_DIR)/tests/%,$(wildcard tests/gpu_test_*.c))
EMU_MPI_BIN  = $(EMU_DIR)/tests/gpu_mpi_nccl $(EMU_DIR)/tests/emu_nccl_faults
EMU_ALL      = $(EMU_TEST_BIN) $(EMU_MPI_BIN) $(EMU_DIR)/tests/emu_selftest $(EMU_DIR)/entrank

.PHONY: emu test-emu test-emu-asan emu-build
emu:
	@$(MAKE) --no-print-directory EMU_VARIANT=fast emu-build
emu-build: $(EMU_ALL) $(EMU_DIR)/shared-memory.ok
# The NCCL cases compare a training run with the CPU binary's.
test-emu: emu bin/entrank
	@bash tests/run_emu.sh build-emu/fast
test-emu-asan: bin/entrank
	@$(MAKE) --no-print-directory EMU_VARIANT=asan emu-build
	@EMU_ASAN=1 bash tests/run_emu.sh build-emu/asan

$(EMU_DIR)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	@echo "CC (emu $(EMU_VARIANT)) $<"
	@$(CC) $(EMU_CFLAGS) -c -o $@ $<

# cuda/*.cu unchanged but for the launch syntax; the generated file keeps the source's line numbers.
$(EMU_DIR)/gen/%.cpp: cuda/%.cu $(EMU_SRC_DIR)/cu2cpp.pl
	@mkdir -p $(dir $@)
	@printf '#line 1 "%s"\n' $< > $@.tmp && perl $(EMU_SRC_DIR)/cu2cpp.pl < $< >> $@.tmp && mv $@.tmp $@

$(EMU_DIR)/cuda/%.o: $(EMU_DIR)/gen/%.cpp
	@mkdir -p $(dir $@)
	@echo "CXX (emu $(EMU_VARIANT)) cuda/$*.cu"
	@$(CXX) $(EMU_CXXFLAGS) -c -o $@ $<

$(EMU_DIR)/cuda/comm_nccl.o: cuda/comm_nccl.c
	@mkdir -p $(dir $@)
	@echo "CC (emu $(EMU_VARIANT)) $<"
	@$(CC) $(EMU_CFLAGS) -c -o $@ $<

$(EMU_DIR)/emu/nccl_mpi.o: $(EMU_SRC_DIR)/nccl_mpi.cpp
	@mkdir -p $(dir $@)
	@echo "CXX (emu $(EMU_VARIANT)) $<"
	@$(CXX) $(EMU_CXXFLAGS) $(shell $(CC) --showme:compile 2>/dev/null) -c -o $@ $<

$(EMU_DIR)/emu/%.o: $(EMU_SRC_DIR)/%.cpp
	@mkdir -p $(dir $@)
	@echo "CXX (emu $(EMU_VARIANT)) $<"
	@$(CXX) $(EMU_CXXFLAGS) $(shell pkg-config --cflags fftw3 2>/dev/null) -c -o $@ $<

$(EMU_DIR)/tests/gpu_%: tests/gpu_%.c $(EMU_LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "LD (emu $(EMU_VARIANT)) $@"
	@$(CC) $(EMU_CFLAGS) -Isrc -o $@ $< $(EMU_LIB_OBJ) $(EMU_LDLIBS)

$(EMU_DIR)/gen/selftest.cpp: $(EMU_SRC_DIR)/selftest.cu $(EMU_SRC_DIR)/cu2cpp.pl
	@mkdir -p $(dir $@)
	@printf '#line 1 "%s"\n' $< > $@.tmp && perl $(EMU_SRC_DIR)/cu2cpp.pl < $< >> $@.tmp && mv $@.tmp $@

$(EMU_DIR)/tests/emu_nccl_faults: tests/emu_nccl_faults.c $(EMU_LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "LD (emu $(EMU_VARIANT)) $@"
	@$(CC) $(EMU_CFLAGS) -Isrc -o $@ $< $(EMU_LIB_OBJ) $(EMU_LDLIBS)

$(EMU_DIR)/tests/emu_selftest: $(EMU_DIR)/gen/selftest.cpp $(EMU_CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "LD (emu $(EMU_VARIANT)) $@"
	@$(CXX) $(EMU_CXXFLAGS) -o $@ $< $(EMU_CORE_OBJ) $(EMU_LDLIBS)

$(EMU_DIR)/entrank: $(EMU_CPU_OBJ) $(EMU_CU_OBJ) $(EMU_RT_OBJ)
	@echo "LD (emu $(EMU_VARIANT)) $@"
	@$(CC) -o $@ $^ $(EMU_LDLIBS)

# nvcc rejects a kernel with more than 48 KiB of static shared memory; the emulator cannot see
# per-kernel sizes, so it checks each file's total (an upper bound for every kernel in it).
$(EMU_DIR)/shared-memory.ok: $(EMU_CU_OBJ)
	@for o in $(filter $(EMU_DIR)/cuda/%.o,$^); do \
	  n=$$(size -A $$o | awk '$$1 == "emu_shared" {print $$2}'); \
	  if [ "$${n:-0}" -gt 49152 ]; then echo "emu: $$o: $$n bytes of __shared__ in one file, over 48 KiB: check each kernel"; exit 1; fi; \
	done; touch $@

.PRECIOUS: $(EMU_DIR)/gen/%.cpp
-include $(wildcard $(EMU_DIR)/*/*.d $(EMU_DIR)/*/*/*.d)
