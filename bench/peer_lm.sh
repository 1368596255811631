#!/usr/bin/env bash
# bench/peer_lm.sh: our --peer-config against the PyTorch peer (shared/peers/moe_lm.py), the same
# model on the same bytes, alternating runs in one session so that both see the same machine.
#
#   ./bench/peer_lm.sh [runs] [ffn]        (defaults: 3 moe; run from the repository root after make)
#   THREADS=1 ./bench/peer_lm.sh           both on one thread (less exposed to a busy machine)
#
# Both run with the settings shared/peers/README.md gives for PyTorch at its best: OpenBLAS left to
# detect the CPU (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset), OMP_WAIT_POLICY=PASSIVE, 2 threads;
# 5 warmup + 30 timed training steps of 16 x 128 bytes each. Prints each run's JSON line, then
# the medians and the ratio. Needs /usr/bin/python3 with torch (apt-get install python3-torch).
set -euo pipefail
runs="${1:-3}"
ffn="${2:-moe}"
threads="${THREADS:-2}"
peers="${PEERS:-../shared/peers}"
data="${TMPDIR:-/tmp}/moegrad_peer"
mkdir -p "$data"
if [[ ! -s "$data/peer_train.txt" ]]; then
    /usr/bin/python3 -c "import sys; sys.path.insert(0,'$peers'); from gen_text import generate; \
open('$data/peer_train.txt','wb').write(generate(400000,1234)); open('$data/peer_eval.txt','wb').write(generate(40000,999))"
fi
bin="${BIN:-./build/demos/03_moe_vs_dense_lm}"
best=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cpus; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)"
"${best[@]}" /usr/bin/python3 bench/peer_step0.py --peers "$peers" --ffn "$ffn"
ours=() theirs=()
for i in $(seq "$runs"); do
    line=$("${best[@]}" "$bin" --peer-config --peer-ffn "$ffn" --threads "$threads" \
        --peer-train "$data/peer_train.txt" --peer-eval "$data/peer_eval.txt" | tail -1)
    echo "moegrad: $line"
    ours+=("$(sed -n 's/.*"train_tok_s": \([0-9.]*\).*/\1/p' <<< "$line")")
    line=$(cd "$peers" && "${best[@]}" /usr/bin/python3 moe_lm.py --ffn "$ffn" --threads "$threads" --steps 35 \
        --infer-iters 5 --eval-batches 1 | tail -1)
    echo "pytorch: $line"
    theirs+=("$(sed -n 's/.*"train_tok_s": \([0-9.]*\).*/\1/p' <<< "$line")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
m_ours=$(median "${ours[@]}") m_theirs=$(median "${theirs[@]}")
echo "median train tokens/s: moegrad $m_ours, pytorch $m_theirs, ratio $(awk -v a="$m_ours" -v b="$m_theirs" 'BEGIN {printf "%.2f", a/b}')x"
