#!/bin/bash
# tools/cuda_emu/run.sh [doctest args...] (`make cuda-emu-check`): runs the CUDA test suite on an
# emulated device, on the CPU, for machines without a GPU. It rewrites every kernel launch of
# engine/cuda/*.cu into a call to the emulator (rewrite.py), compiles each file as host C++ with
# include/cuda_runtime.h (the emulated runtime) force-included, links them in place of the real
# CUDA objects into the test binary, and runs `-ts=cuda`. Needs `make all` first (CUDA=1, the
# default where nvcc exists): it reuses the tests' and the engine's object files from $BUILD.
# What it checks and what it cannot: README.md beside this script.
# Env: EMU_ORDER=forward|reverse|random (thread and block order between barriers: a result that
# changes is a race), EMU_OPT (default -O1), BUILD (default build).
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
WT=$(cd "$HERE/../.." && pwd)
BUILD_DIR=$WT/${BUILD:-build}
OUT=$BUILD_DIR/cuda_emu; mkdir -p $OUT/obj
[[ "$(uname -m)" == x86_64 ]] || { echo "✗ cuda_emu: the fiber switch is x86-64 assembly; this is $(uname -m)"; exit 1; }
[[ -d $BUILD_DIR/tests ]] || { echo "✗ cuda_emu: $BUILD_DIR/tests not found: run make all (with CUDA=1) first"; exit 1; }
CXX="g++ -std=c++20 ${EMU_OPT:--O1} -g -fopenmp -march=native -include cuda_runtime.h -I$HERE/include -I$WT -DMG_CUDA=1 -Wno-unknown-pragmas"
objs=()
# a kernel file is recompiled when it or any header it may include (engine/, the shim) changed
hdr=$(cat $WT/engine/*.h $WT/engine/cuda/*.h $WT/engine/cuda/*.cuh $HERE/include/cuda_runtime.h $HERE/include/cub/device/*.cuh | md5sum | cut -c1-32)
for f in $WT/engine/cuda/*.cu; do
    b=$(basename $f .cu)
    python3 $HERE/rewrite.py $f $OUT/obj/$b.cpp
    echo "// $hdr ${EMU_OPT:--O1}" >> $OUT/obj/$b.cpp
    if [ ! -f $OUT/obj/$b.o ] || ! cmp -s $OUT/obj/$b.cpp $OUT/obj/$b.cpp.built; then
        echo "compiling $b (emulated)"; $CXX -c $OUT/obj/$b.cpp -o $OUT/obj/$b.o && cp $OUT/obj/$b.cpp $OUT/obj/$b.cpp.built &
    fi
    objs+=($OUT/obj/$b.o)
done
[ $OUT/obj/emu_runtime.o -nt $HERE/emu_runtime.cpp ] || $CXX -c $HERE/emu_runtime.cpp -o $OUT/obj/emu_runtime.o &
wait
for o in "${objs[@]}"; do [ -f $o ] || { echo "build failed: $o"; exit 1; }; done
engine=$(ls $BUILD_DIR/engine/*.o $BUILD_DIR/engine/cpu/*.o $BUILD_DIR/engine/cuda/*.o $BUILD_DIR/nn/*.o | grep -v '\.cu\.o$')
g++ -fopenmp $BUILD_DIR/tests/*.o $BUILD_DIR/libdemokit.a "${objs[@]}" $OUT/obj/emu_runtime.o $engine -lpthread -o $OUT/moegrad_tests_emu
echo "built $OUT/moegrad_tests_emu"
cd $WT && MOEGRAD_BUILD=$BUILD_DIR $OUT/moegrad_tests_emu -ts=cuda "$@"
