# moegrad: one Makefile for the engine, the nn library, the demos, the tests and the benchmarks.
#
#   make              build the library, the tests and every demo
#   make run          run demo level 1 with its defaults
#   make test         build and run the test suite (CUDA tests skip without a GPU)
#   make sanitize     the test suite under AddressSanitizer + UBSan (CPU only)
#   make bench        build and run the benchmarks (needs OpenBLAS: apt-get install libopenblas-dev)
#   make demos        build every demos/NN_name/ folder
#   make stats        line counts of engine/ and nn/
#   make gpu-check    on a machine with an NVIDIA GPU: CUDA tests, compute-sanitizer, demos and
#                     benchmarks on the GPU, one summary (.ci/gpu-check)
#   make cuda-emu-check  no GPU: the CUDA test suite with the kernels run on an emulated device (CPU)
#
# Knobs: CUDA=auto|0|1  DEBUG=1  SANITIZE=1  DOCTEST_INC=dir  STB_INC=dir  BUILD=dir

CXX      ?= g++
NVCC     ?= nvcc
CUDA     ?= auto
BUILD    ?= build
DEBUG    ?= 0
SANITIZE ?= 0

# ---------------------------------------------------------------------------------------------
# Third-party headers: doctest (tests) and stb_image_write (plots). Debian ships both.
DOCTEST_INC ?= /usr/include/doctest
STB_INC     ?= /usr/include/stb
APT_PACKAGES := doctest-dev libstb-dev
HAVE_DOCTEST := $(wildcard $(DOCTEST_INC)/doctest.h)
HAVE_STB     := $(wildcard $(STB_INC)/stb_image_write.h)
ifeq ($(HAVE_DOCTEST)$(HAVE_STB),)
  MISSING_DEPS := 1
else ifeq ($(HAVE_DOCTEST),)
  MISSING_DEPS := 1
else ifeq ($(HAVE_STB),)
  MISSING_DEPS := 1
endif
ifeq ($(MISSING_DEPS),1)
  ifeq ($(shell id -u),0)
    ifneq ($(shell command -v apt-get),)
      $(info → doctest or stb_image_write missing: installing $(APT_PACKAGES) with apt-get)
      $(shell apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null 2>&1)
      HAVE_DOCTEST := $(wildcard $(DOCTEST_INC)/doctest.h)
      HAVE_STB     := $(wildcard $(STB_INC)/stb_image_write.h)
    endif
  endif
endif
ifeq ($(HAVE_DOCTEST),)
  $(error ✗ doctest.h not found in $(DOCTEST_INC). Install it: sudo apt-get install $(APT_PACKAGES)  (or set DOCTEST_INC=dir))
endif
ifeq ($(HAVE_STB),)
  $(error ✗ stb_image_write.h not found in $(STB_INC). Install it: sudo apt-get install $(APT_PACKAGES)  (or set STB_INC=dir))
endif

# ---------------------------------------------------------------------------------------------
# Compiler flags
# -fno-trapping-math: we never read floating-point exception flags, and without it GCC will not
# turn a select like `x < lo ? lo : x` into a vector blend, so loops such as the float32 erf of
# engine/cpu/fast_math.h stay scalar. It changes no value (unlike -ffast-math).
CXXFLAGS := -std=c++20 -march=native -fopenmp -fno-trapping-math -Wall -Wextra -Wshadow -Wno-unused-parameter -MMD -MP -I.
ifeq ($(DEBUG),1)
  CXXFLAGS += -O0 -g
else
  CXXFLAGS += -O3
endif
ifeq ($(SANITIZE),1)
  CXXFLAGS += -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS  += -fsanitize=address,undefined
  CUDA := 0
endif
LDFLAGS += -fopenmp
LDLIBS  :=

# ---------------------------------------------------------------------------------------------
# CUDA: compiled whenever nvcc exists (CUDA=auto), never with CUDA=0, required with CUDA=1.
NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null)
ifeq ($(CUDA),auto)
  CUDA := $(if $(NVCC_PATH),1,0)
endif
ifeq ($(CUDA),1)
  ifeq ($(NVCC_PATH),)
    $(error ✗ CUDA=1 but $(NVCC) not found)
  endif
  CUDA_HOME  ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC_PATH)))
  # The GPU of this machine when there is one, else Ampere and Hopper.
  GPU_ARCH   := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
  ifneq ($(GPU_ARCH),)
    NVCC_ARCH := -gencode arch=compute_$(GPU_ARCH),code=sm_$(GPU_ARCH)
  else
    NVCC_ARCH := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
  endif
  NVCCFLAGS  := -std=c++20 -O3 $(NVCC_ARCH) -I. -Xcompiler -fopenmp,-march=native -MMD -MP --expt-relaxed-constexpr --extended-lambda -DMG_CUDA=1
  CXXFLAGS   += -DMG_CUDA=1 -I$(CUDA_HOME)/include
  LDLIBS     += -L$(CUDA_HOME)/lib64 -lcudart -Wl,-rpath,$(CUDA_HOME)/lib64
endif

# ---------------------------------------------------------------------------------------------
# Sources. engine/ and nn/ form libmoegrad.a; demos/common/ forms libdemokit.a.
ENGINE_SRC := $(wildcard engine/*.cpp engine/cpu/*.cpp engine/cuda/*.cpp)
CUDA_SRC   := $(if $(filter 1,$(CUDA)),$(wildcard engine/cuda/*.cu))
NN_SRC     := $(wildcard nn/*.cpp)
KIT_SRC    := $(wildcard demos/common/*.cpp)
TEST_SRC   := $(wildcard tests/*.cpp)
DEMO_DIRS  := $(sort $(dir $(wildcard demos/[0-9][0-9]_*/main.cpp)))
DEMO_NAMES := $(patsubst demos/%/,%,$(DEMO_DIRS))
DEMO_BINS  := $(addprefix $(BUILD)/demos/,$(DEMO_NAMES))
BENCH_SRC  := $(wildcard bench/*.cpp bench/gemm/*.cpp)
BENCH_BINS := $(patsubst %.cpp,$(BUILD)/%,$(BENCH_SRC))
# GPU benchmarks (bench/*.cu) are built only with CUDA=1.
BENCH_CU_BINS := $(if $(filter 1,$(CUDA)),$(patsubst %.cu,$(BUILD)/%,$(wildcard bench/*.cu)))

LIB_OBJ := $(patsubst %.cpp,$(BUILD)/%.o,$(ENGINE_SRC) $(NN_SRC)) $(patsubst %.cu,$(BUILD)/%.cu.o,$(CUDA_SRC))
KIT_OBJ := $(patsubst %.cpp,$(BUILD)/%.o,$(KIT_SRC))
LIB     := $(BUILD)/libmoegrad.a
KIT     := $(BUILD)/libdemokit.a
TESTS   := $(BUILD)/tests/moegrad_tests

.PHONY: all run test sanitize bench demos stats clean found docs-check gpu-check cuda-emu-check
# Keep intermediate objects (demo and snippet objects) so that a second make relinks nothing.
.SECONDARY:
all: found $(LIB) $(KIT) $(TESTS) $(DEMO_BINS)

found:
	@echo "moegrad build ($(BUILD)):"
	@echo "  ✓ $(CXX) $$($(CXX) -dumpversion), OpenMP -fopenmp, -march=native"
	@echo "  ✓ doctest: $(DOCTEST_INC)    ✓ stb_image_write: $(STB_INC)"
	@if [ "$(CUDA)" = "1" ]; then echo "  ✓ nvcc: $(NVCC_PATH), CUDA backend compiled for $(NVCC_ARCH)"; \
	 else echo "  ✗ CUDA backend not compiled (nvcc not found or CUDA=0): building CPU-only"; fi

$(BUILD)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -isystem $(DOCTEST_INC) -isystem $(STB_INC) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(@D)
	@rm -f $@
	ar rcs $@ $^

$(KIT): $(KIT_OBJ)
	@mkdir -p $(@D)
	@rm -f $@
	ar rcs $@ $^

$(TESTS): $(patsubst %.cpp,$(BUILD)/%.o,$(TEST_SRC)) $(KIT) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

# A demo's object lives in demo_obj/, so that build/demos/NN_name can be the program itself.
$(BUILD)/demo_obj/%/main.o: demos/%/main.cpp
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -isystem $(DOCTEST_INC) -isystem $(STB_INC) -c $< -o $@

$(BUILD)/demos/%: $(BUILD)/demo_obj/%/main.o $(KIT) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

demos: $(DEMO_BINS)

# The test binary runs the demos' --quick smoke tests itself, so they must be built first.
test: all docs-check
	MOEGRAD_BUILD=$(BUILD) ./$(TESTS)

run: all
	./$(BUILD)/demos/01_sentiment_moe

# Sanitized build in its own folder: ASan + UBSan, CPU only, demos in smoke mode.
sanitize:
	$(MAKE) --no-print-directory BUILD=build-sanitize SANITIZE=1 CUDA=0 all
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 MOEGRAD_BUILD=build-sanitize MOEGRAD_SMOKE=1 \
	  ./build-sanitize/tests/moegrad_tests

# On a machine with an NVIDIA GPU: build, the whole suite with the CUDA tests, compute-sanitizer
# on the parity tests, every demo's --quick on the GPU, the GPU benchmarks; one summary (.ci/gpu-check).
gpu-check:
	DOCTEST_INC=$(DOCTEST_INC) STB_INC=$(STB_INC) ./.ci/gpu-check

# No GPU? The CUDA test suite with every kernel run on an emulated device, on the CPU
# (tools/cuda_emu/README.md: it checks kernel logic, not speed or the memory model). Minutes.
cuda-emu-check:
	$(MAKE) --no-print-directory CUDA=1 all
	BUILD=$(BUILD) ./tools/cuda_emu/run.sh

# Benchmarks link OpenBLAS (the yardstick only; the engine never uses it).
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(KIT) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -lopenblas -o $@

# GPU benchmarks link cuBLAS (the yardstick only; the engine never uses it).
$(BENCH_CU_BINS): $(BUILD)/bench/%: $(BUILD)/bench/%.cu.o $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -lcublas -o $@

bench: $(LIB) $(KIT) $(BENCH_BINS) $(BENCH_CU_BINS)
	@test -f /usr/include/x86_64-linux-gnu/cblas.h -o -f /usr/include/cblas.h || \
	  { echo "✗ OpenBLAS headers missing: apt-get install libopenblas-dev"; exit 1; }
	./bench/run_all.sh $(BUILD)

# docs-check: every docs/snippets/*.cpp is a small program that checks its own result, so the
# code shown in docs/ always compiles and stays true. `make test` runs it too.
DOC_SNIPPETS := $(wildcard docs/snippets/*.cpp)
DOC_BINS     := $(patsubst %.cpp,$(BUILD)/%,$(DOC_SNIPPETS))

$(BUILD)/docs/snippets/%: $(BUILD)/docs/snippets/%.o $(KIT) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

docs-check: $(DOC_BINS)
	@for b in $(DOC_BINS); do ./$$b > /dev/null || { echo "✗ $$b failed"; exit 1; }; done
	@echo "✓ $(words $(DOC_BINS)) doc snippets compiled and ran: $(notdir $(DOC_BINS))"

stats:
	@echo "lines of code (excluding blank lines):"
	@for d in engine engine/cpu engine/cuda nn demos/common; do \
	  printf "  %-14s %6s\n" $$d "$$(cat $$d/*.h $$d/*.cpp $$d/*.cu $$d/*.cuh 2>/dev/null | grep -cv '^\s*$$')"; done

clean:
	rm -rf $(BUILD) build-sanitize

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
