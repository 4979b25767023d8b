#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, sample and export architectures, profile this
# machine's CPU briefly with ONNX Runtime, fit surrogates and predict. Output lands in out/main_job/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/main_job
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
pip install -q -e .
mkdir -p "$out"

echo "== 1. sample 16 architectures (Latin hypercube, narrow/wide split) and describe them"
flexibert sample -n 16 --method lhs_split --seed 0 --out "$out/archs"
flexibert describe "$out/archs"

echo "== 2. export a BERT-Tiny-shaped mix of ops to ONNX, OpenVINO IR and TorchScript and run each once"
echo '{"l": 2, "o": [["sa_sdp_64", "l_dft_64"], ["sa_wma_64", "c_9_64"]], "h": [128, 128], "f": [[512], [256, 512]]}' \
    > "$out/tiny.json"
flexibert export "$out/tiny.json" --format onnx,openvino,torchscript --out "$out/exported" --run

echo "== 3. profile this CPU (ONNX Runtime, batch 1, seq 128, 1 thread): seeds + active learning"
protran meters
protran profile --device local-cpu --runtime onnxruntime --meter auto --seed-samples 12 \
    --max-samples "${MAIN_JOB_SAMPLES:-16}" --time-cap-s 5 --target-rel-ci 0.05 --out "$out/runs" --resume

echo "== 4. predict the sampled architectures with the fitted surrogates"
protran predict --surrogates "$out/runs" "$out/archs"
