"""The measured process: ``python -m protran._measure_worker`` reads one JSON request on stdin and
writes one JSON reply on stdout.

It builds the model, exports and compiles it for the runtime and warms it up, then times repeats
(see :func:`protran._protocol.time_repeats`). Only the reply goes to stdout: file descriptor 1 is
pointed at stderr first, so whatever the libraries print cannot corrupt it. On an error the reply is
``{"error": ..., "error_type": ...}`` and the exit code is 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Build, prepare, warm up and time one architecture as the request says."""
    from flexibert import ArchSpec
    from protran._protocol import time_repeats
    from protran._runtimes import get_runtime

    spec = ArchSpec.from_model_dict(request["model_dict"], space=False)
    runtime = get_runtime(request["runtime"], **request.get("runtime_options", {}))
    session = runtime.prepare(
        spec, request["batch_size"], request["seq_len"], request["num_threads"], request["workdir"],
        model_seed=request.get("seed", 0), vocab_size=request.get("vocab_size"),
    )
    for _ in range(request["warmup"]):
        session.run()
    timing = time_repeats(
        session.run,
        min_repeats=request["min_repeats"],
        max_repeats=request["max_repeats"],
        target_rel_ci=request["target_rel_ci"],
        time_cap_s=request["time_cap_s"],
        min_window_s=request["min_window_s"],
        confidence=request["confidence"],
    )
    return {
        "status": "ok" if timing.converged else "unstable",
        "batch_latencies_s": list(timing.batch_latencies_s),
        "window_start_s": timing.window_start_s,
        "window_end_s": timing.window_end_s,
        "time_capped": timing.time_capped,
        "confidence": request["confidence"],
        "versions": {name: str(version) for name, version in runtime.versions().items()},
    }


def main() -> int:
    reply_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    code = 0
    try:
        reply = measure(json.loads(sys.stdin.read()))
    except BaseException as error:  # report every failure to the parent, which classifies it
        traceback.print_exc()
        reply = {"error": f"{type(error).__name__}: {error}", "error_type": type(error).__name__}
        code = 1
    reply_stream.write(json.dumps(reply) + "\n")
    reply_stream.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
