"""A fake oracle process for tests/boshcode/test_external.py (run with ``sys.executable``).

    python oracle_script.py MODE [ARG] [--log PATH]

MODE: ``normal``; ``crash N`` (answers N requests, then dies with code 3 and a traceback on
stderr); ``die`` (exits with code 2 before its header); ``silent`` (never prints a header);
``hang`` (never answers); ``stubborn`` (ignores SIGTERM and stdin); ``garbage`` (answers a line that
is not JSON); ``list`` (answers a JSON list); ``header JSON`` (prints JSON as its header, then
answers normally); ``missing`` (answers without latency_s); ``text`` (accuracy "high"); ``flaky K``
(every K-th answer is an error); ``errors`` (every answer is an error); ``nulls`` (energy null on
odd-numbered requests); ``chatty`` (prints a log line on stdout after its first answer).
``--log PATH`` appends every line received on stdin to PATH. Imports nothing but the standard library,
so it starts fast.
"""

from __future__ import annotations

import json
import signal
import sys
import time

DEVICES = ["fast", "slow"]
SPEED = {"fast": 1.0, "slow": 4.0}
BOUNDS = {"accuracy": [0.6, 0.9], "latency_s": [0.001, 2.0], "energy_j": [0.001, 50.0], "peak_power_w": [1.0, 20.0]}
HEADER = {"devices": DEVICES, "bounds": BOUNDS}


def answer(model_dict: dict, device: str) -> dict[str, float]:
    """The normal answer: costs grow with the model's size, accuracy saturates with it."""
    size = sum(h * len(f) for h, f in zip(model_dict["h"], model_dict["f"])) / 1000
    latency = SPEED[device] * size / 100
    power = 10.0 / SPEED[device] + size / 10
    return {"accuracy": 0.6 + 0.3 * size / (size + 5), "latency_s": latency, "energy_j": latency * power,
            "peak_power_w": power}


def _reply(mode: str, arg: str | None, count: int, request: dict) -> str:
    """The line answering the ``count``-th request (1-based)."""
    if mode == "garbage":
        return "this is not json"
    if mode == "list":
        return "[0.8, 0.1]"
    if mode == "errors" or (mode == "flaky" and count % int(arg) == 0):
        return json.dumps({"error": f"out of memory on request {count}"})
    values = answer(request["model_dict"], request["device"])
    if mode == "missing":
        del values["latency_s"]
    elif mode == "text":
        values["accuracy"] = "high"
    elif mode == "nulls" and count % 2 == 1:
        values["energy_j"] = None
    return json.dumps(values)


def main(argv: list[str]) -> int:
    log = None
    if "--log" in argv:
        at = argv.index("--log")
        log, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    mode, arg = argv[0], (argv[1] if len(argv) > 1 else None)
    if mode == "die":
        print("oracle_script: cannot load the data set", file=sys.stderr)
        return 2
    if mode == "silent":
        time.sleep(600)
        return 0
    if mode == "stubborn":  # before the header: the searcher may close it as soon as it has read it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(arg if mode == "header" else json.dumps(HEADER), flush=True)
    if mode == "stubborn":
        time.sleep(600)
    for count, line in enumerate(sys.stdin, start=1):
        if log is not None:
            with open(log, "a") as file:
                file.write(line)
        if mode == "hang":
            time.sleep(600)
        if mode == "crash" and count > int(arg):
            print("Traceback (most recent call last):\n  File \"train.py\", line 1\nMemoryError: CUDA out of memory",
                  file=sys.stderr, flush=True)
            return 3
        print(_reply(mode, arg, count, json.loads(line)), flush=True)
        if mode == "chatty":
            print("epoch 1: loss 0.3", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
