#!/usr/bin/env bash
# Measure this machine as a real board, as committed under datasets/profiles/: for ONNX Runtime and for
# OpenVINO (f32), batch 1, sequence 128, one thread, the active-learning profiler run to 64 measurements
# (16 Latin-hypercube seeds, then uncertainty-first queries; patience set high so the stopping rule does
# not end it early), then 32 random architectures the loop never chose (the held-out test set), and for
# ONNX Runtime a second measurement of the 16 seeds (test-retest). Each step resumes where it stopped
# when rerun. About 70 minutes per runtime on an idle 2-core machine (large models take up to a minute).
#   bash benchmarks/profile_local.sh [OUT_DIR]        (default datasets/profiles)
#   PROFILE_RUNTIMES=onnxruntime bash benchmarks/profile_local.sh     (one runtime)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-datasets/profiles}
host=${PROFILE_HOST:-epyc-cpu}
runtimes=${PROFILE_RUNTIMES:-onnxruntime openvino}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

flexibert sample -n 32 --method random --seed 1 --out "$work/holdout.jsonl" > /dev/null
flexibert sample -n 16 --method lhs_split --seed 0 --out "$work/seeds.jsonl" > /dev/null

for runtime in $runtimes; do
    device="$host-$runtime"
    protran profile --device "$device" --runtime "$runtime" --threads 1 --meter auto --seed 0 \
        --max-samples 64 --patience 100 --out "$out" --resume
    protran measure "$work/holdout.jsonl" --device "$device" --runtime "$runtime" --threads 1 --meter auto \
        --purpose holdout --out "$out" --resume
    if [ "$runtime" = onnxruntime ]; then
        protran measure "$work/seeds.jsonl" --device "$device" --runtime "$runtime" --threads 1 --meter auto \
            --purpose retest --out "$out" --resume
    fi
done
