#!/usr/bin/env bash
# Measure this machine as a real board, as committed under datasets/profiles/, the way users measure:
# while it is busy. A fixed synthetic load (benchmarks/synthetic_load.py) runs on CPU 0 for the whole
# session and the profiler is pinned to CPU 1 (--cpus 1). For each runtime (ONNX Runtime, then
# OpenVINO; f32, batch 1, sequence 128, one thread): the active-learning profiler run to 64
# measurements (16 Latin-hypercube seeds, then uncertainty-first queries; patience set high so the
# stopping rule does not end it early), then 32 random architectures the loop never chose (the
# held-out test set); then, at least RETEST_AFTER_MIN minutes (default 60) after each profile's first
# seed, the 16 seeds again (test-retest). Drift control and re-measurement of wide rows are on (the
# defaults: a reference architecture every 8 measurements, shared by the three runs of a runtime).
# Each step resumes where it stopped when rerun. About 60 minutes per runtime plus the retests.
#   bash benchmarks/profile_local.sh [OUT_DIR]        (default datasets/profiles)
#   PROFILE_RUNTIMES=onnxruntime bash benchmarks/profile_local.sh     (one runtime)
#   PROFILE_SAMPLES=24 HOLDOUT_SAMPLES=8 RETEST=0 ...   (a shorter profile: fewer rows, no retest)
#   SYNTHETIC_LOAD=0 ...   (no synthetic load: when other work keeps the other core busy)
#   REFERENCE_EVERY=1 ...   (the reference architecture around every row, each row corrected by the
#                            readings on both sides: --drift-correction bracket --drift-threshold 0;
#                            follows a host whose speed wanders within minutes, a reading per row)
#   DRIFT_CORRECTION=in-process ...   (each row's process also times the reference, right after the row,
#                            and the row is corrected by that reading: no reference measured on its own;
#                            threshold 0 unless DRIFT_THRESHOLD says otherwise)
#   DRIFT_CORRECTION=latest|bracket DRIFT_THRESHOLD=F ...   (override the drift rule)
#   PROCESSES=2 ...   (each row and each reference measured in two fresh processes, a third where they
#                      disagree, the median kept: --processes; a process's window does not say where the
#                      next process lands, see benchmarks/process_spread.py)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-datasets/profiles}
host=${PROFILE_HOST:-epyc-cpu}
runtimes=${PROFILE_RUNTIMES:-onnxruntime openvino}
load_cpus=${LOAD_CPUS:-0}
profile_cpus=${PROFILE_CPUS:-1}
retest_after_min=${RETEST_AFTER_MIN:-60}
samples=${PROFILE_SAMPLES:-64}
holdout=${HOLDOUT_SAMPLES:-32}
retest=${RETEST:-1}
synthetic_load=${SYNTHETIC_LOAD:-1}
reference_every=${REFERENCE_EVERY:-8}
processes=${PROCESSES:-1}
if [ "$reference_every" = 1 ]; then correction_default=bracket; else correction_default=latest; fi
drift_correction=${DRIFT_CORRECTION:-$correction_default}
if [ "$drift_correction" = latest ]; then threshold_default=0.05; else threshold_default=0; fi
drift_threshold=${DRIFT_THRESHOLD:-$threshold_default}
work=$(mktemp -d)
mkdir -p "$out"

load_pid=
if [ "$synthetic_load" = 1 ]; then
    python benchmarks/synthetic_load.py --cpus "$load_cpus" --log "$out/load.log" &
    load_pid=$!
fi
trap '[ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null; rm -rf "$work"' EXIT

flexibert sample -n "$holdout" --method random --seed 1 --out "$work/holdout.jsonl" > /dev/null
flexibert sample -n 16 --method lhs_split --seed 0 --out "$work/seeds.jsonl" > /dev/null
common=(--threads 1 --cpus "$profile_cpus" --meter auto --reference-every "$reference_every" --processes "$processes" \
    --drift-correction "$drift_correction" --drift-threshold "$drift_threshold" --out "$out" --resume)

for runtime in $runtimes; do
    device="$host-$runtime"
    protran profile --device "$device" --runtime "$runtime" --seed 0 --max-samples "$samples" --patience 100 \
        "${common[@]}"
    protran measure "$work/holdout.jsonl" --device "$device" --runtime "$runtime" --purpose holdout "${common[@]}"
done

for runtime in $runtimes; do
    [ "$retest" = 0 ] && break
    device="$host-$runtime"
    # wait until the profile's first seed is at least retest_after_min minutes old
    python - "$out/$device.sqlite" "$retest_after_min" <<'PY'
import sqlite3, sys, time
from datetime import datetime, timezone
store, minutes = sys.argv[1], float(sys.argv[2])
with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
    first = conn.execute("SELECT MIN(m.started_at) FROM measurements m JOIN runs r ON r.id = m.run_id "
                         "WHERE json_extract(r.config, '$.purpose') IS NULL").fetchone()[0]
age_s = (datetime.now(timezone.utc) - datetime.fromisoformat(first).astimezone(timezone.utc)).total_seconds()
wait_s = minutes * 60 - age_s
if wait_s > 0:
    print(f"waiting {wait_s / 60:.0f} min before the retest of {store}", flush=True)
    time.sleep(wait_s)
PY
    protran measure "$work/seeds.jsonl" --device "$device" --runtime "$runtime" --purpose retest "${common[@]}"
done

# The stores are committed and read from read-only installs: leave them in rollback-journal mode,
# which needs no -wal or -shm file beside them (a later protran write switches WAL back on).
for runtime in $runtimes; do
    python -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=DELETE'); c.close()" \
        "$out/$host-$runtime.sqlite"
done
