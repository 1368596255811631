#!/usr/bin/env bash
# bench/run_all.sh: run every benchmark binary that has been built, in a sensible order.
#
#   ./bench/run_all.sh [build_dir]        (default: build; `make bench` calls it)
#   BENCH_ALL=1 ./bench/run_all.sh        also run the numbered teaching programs bench/gemm/*
#   BENCH_ARGS="--quick" ./bench/run_all.sh   extra arguments passed to every program
#
# Order: peak_flops (the roof), gemm_vs_openblas, then every other binary in $build/bench/ by
# name. New bench/*.cpp programs are picked up without editing this script.
#
# Environment: OpenBLAS is run at its best. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are cleared so
# it detects this CPU itself, and OMP_WAIT_POLICY=PASSIVE makes our OpenMP threads sleep (not
# spin) between calls, so they do not steal cycles from OpenBLAS's threads when the two alternate.
set -euo pipefail

build="${1:-build}"
bench_dir="$build/bench"
if [[ ! -d "$bench_dir" ]]; then
    echo "✗ $bench_dir not found: build the benchmarks first (make bench)" >&2
    exit 1
fi
read -r -a extra_args <<< "${BENCH_ARGS:-}"

run() {
    local binary="$1"
    echo
    echo "=== $binary ${extra_args[*]:-}"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \
        "$binary" ${extra_args[@]+"${extra_args[@]}"}
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cpus; $(date -u +%Y-%m-%dT%H:%MZ)"

status=0
ordered=(peak_flops gemm_vs_openblas)
for name in "${ordered[@]}"; do
    if [[ -x "$bench_dir/$name" ]]; then run "$bench_dir/$name" || status=1; fi
done
for binary in "$bench_dir"/*; do
    name="$(basename "$binary")"
    [[ -f "$binary" && -x "$binary" ]] || continue
    [[ " ${ordered[*]} " == *" $name "* ]] && continue
    run "$binary" || status=1
done
if [[ "${BENCH_ALL:-0}" == "1" && -d "$bench_dir/gemm" ]]; then
    for binary in "$bench_dir"/gemm/*; do
        [[ -f "$binary" && -x "$binary" ]] || continue
        run "$binary" || status=1
    done
fi
exit $status
