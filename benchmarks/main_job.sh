#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install; sample, describe and export architectures;
# profile this machine's CPU briefly with ONNX Runtime; fit surrogates and predict; print and plot the
# predicted Pareto frontiers; co-design an (architecture, device) pair. Output lands in out/main_job/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/main_job
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
# A plain (non-editable) install, as a user gets it: the code and the shipped data come from the
# installed package, not from this source tree.
pip install -q ".[all]"
rm -rf build
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

# Hardware profiles: this machine, the profiles committed under datasets/profiles/, and the public
# boards when ../shared/data is beside the repository. Accuracy: the GLUE average of the 250
# NAS-Bench-BERT architectures shipped in datasets/accuracy/ (0-100 scale).
profiles=("$out/runs/local-cpu.sqlite" datasets/profiles/*.sqlite)
accuracy=datasets/accuracy/nasbench_bert_250.json
task=glue
if [ -d ../shared/data/protran ]; then
    profiles+=(../shared/data/protran/*.json)
fi
echo "== 5. predicted Pareto frontiers of accuracy ($task, $accuracy) against latency, every device"
protran pareto --profile "${profiles[@]}" --accuracy "$accuracy" --task "$task" --measure latency \
    --plot "$out/pareto.png" --json > "$out/pareto.json"
protran pareto --profile "$out/runs/local-cpu.sqlite" --accuracy "$accuracy" --task "$task" --measure latency
echo "plot: $out/pareto.png; every device's frontier: $out/pareto.json"

echo "== 6. co-design with the paper's weights (alpha 0.5, beta 0.2, gamma 0.2, epsilon 0.1)"
profile_args=()
for profile in "${profiles[@]}"; do profile_args+=(--profile "$profile"); done
if ! boshcode codesign "${profile_args[@]}" --accuracy "$accuracy" --task "$task" \
        --alpha 0.5 --beta 0.2 --gamma 0.2 --epsilon 0.1 --export "$out/codesign" --json \
        > "$out/codesign.json" 2> "$out/codesign.err"; then
    cat "$out/codesign.err" >&2
    # Only the documented case falls back: no profiled device has a power meter.
    grep -q "no device can give every measure" "$out/codesign.err" || exit 1
    echo "co-designing for accuracy and latency only (alpha 0.5 and epsilon 0.1, rescaled to sum to 1)"
    boshcode codesign "${profile_args[@]}" --accuracy "$accuracy" --task "$task" \
        --alpha 0.8333333333 --beta 0 --gamma 0 --epsilon 0.1666666667 --export "$out/codesign" \
        --json > "$out/codesign.json"
else
    cat "$out/codesign.err" >&2
fi
python - "$out/codesign.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
print(f"recommended pair: {result['hash']} on {result['device']} "
      f"(P = {result['performance']:.4f} ± {result['performance_std']:.4f}, lower bound "
      f"{result['performance_lcb']:.4f} at risk {result['risk']:g}; {result['normalise']} normalisation; "
      f"{len(result['history'])} evaluations in {result['elapsed_s']:.1f} s)")
print("  model_dict:", json.dumps(result["model_dict"]))
for name, value in result["predicted"].items():
    std = result["predicted_std"][name]
    print(f"  predicted {name}: {'not available' if value is None else f'{value:.6g} ± {std or 0:.3g}'}")
for reason in result.get("extrapolation", []):
    print(f"  an extrapolation: {reason}")
for other in result.get("alternatives", []):
    print(f"  alternative: P = {other['performance']:.4f} ± {other['performance_std']:.4f} on {other['device']} "
          f"({other['hash']})")
print("  ONNX:", result.get("onnx"))
PY
