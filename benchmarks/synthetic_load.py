"""A fixed synthetic load on chosen CPUs, for measuring a board the way users do: while it is busy.

Each worker process is pinned to one CPU and multiplies two 256 x 256 float64 matrices in a loop (one
thread each: compute and a 1.5 MiB working set in the shared cache), so the profiled core competes for
cache, memory bandwidth and the host's turbo budget as it does beside a real workload. Every minute it
logs how many products each worker did, so a profile's README can say what the load was.

    python benchmarks/synthetic_load.py --cpus 0 [--seconds 3600] [--log load.log]

It runs until killed (SIGTERM or Ctrl-C) or until ``--seconds`` have passed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import time

# One thread per worker, set before numpy loads its BLAS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

SIZE = 256
REPORT_EVERY_S = 60.0


def _work(cpu: int, seconds: float | None, counter) -> None:
    import numpy as np

    os.sched_setaffinity(0, {cpu})
    rng = np.random.default_rng(cpu)
    a = rng.standard_normal((SIZE, SIZE))
    b, _ = np.linalg.qr(rng.standard_normal((SIZE, SIZE)))  # orthogonal: the values stay finite for hours
    end = time.monotonic() + seconds if seconds else float("inf")
    while time.monotonic() < end:
        a = a @ b
        with counter.get_lock():
            counter.value += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", required=True, help="comma-separated CPUs to load, one worker each, e.g. 0")
    parser.add_argument("--seconds", type=float, help="stop after this long (default: until killed)")
    parser.add_argument("--log", help="append a line per minute (products per second per worker) to this file")
    args = parser.parse_args(argv)
    cpus = [int(part) for part in args.cpus.split(",")]
    unknown = set(cpus) - os.sched_getaffinity(0)
    if unknown:
        parser.error(f"CPUs {sorted(unknown)} are not available to this process")
    counters = [mp.Value("q", 0) for _ in cpus]
    workers = [mp.Process(target=_work, args=(cpu, args.seconds, counter), daemon=True)
               for cpu, counter in zip(cpus, counters)]
    for worker in workers:
        worker.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last, reported = [0] * len(cpus), time.monotonic()
    try:
        while any(worker.is_alive() for worker in workers):
            time.sleep(1.0)
            if time.monotonic() - reported < REPORT_EVERY_S:
                continue
            now, elapsed = [counter.value for counter in counters], time.monotonic() - reported
            rates = ", ".join(f"cpu {cpu}: {(n - m) / elapsed:.1f}/s" for cpu, n, m in zip(cpus, now, last))
            last, reported = now, time.monotonic()
            line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {SIZE}x{SIZE} products {rates}"
            if args.log:
                with open(args.log, "a") as log:
                    print(line, file=log)
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            worker.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
