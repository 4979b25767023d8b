"""The command-line side of the fleet (``protran._fleet``): ``protran profile --executor ray`` and
``protran fleet status``. Kept apart from ``protran.cli`` so that the command stays one short branch
there; the arguments are declared here and added to its parsers."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flexibert import clitools

EXECUTORS = ("local", "ray")


class DeviceNames(argparse.Action):
    """``--device``: the last one given in ``device`` (as before), every one in order in ``devices``."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        setattr(namespace, self.dest, value)
        names = list(getattr(namespace, "devices", None) or [])
        namespace.devices = [*names, value]


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``protran profile`` that choose where measurements run."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local (default): measure this machine as --device; ray: measure every --device "
                             "(repeatable) on the Ray cluster's board of that name (resource board:NAME), all into "
                             "one run store (default OUT/fleet.sqlite); needs pip install 'edgetran[ray]'")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="with --executor ray: the cluster, e.g. HEAD:6379 (default: RAY_ADDRESS or the cluster "
                             "this machine belongs to)")
    parser.add_argument("--max-retries", type=clitools.non_negative_int, default=None, metavar="N",
                        help="with --executor ray: submit a measurement lost with its board (worker or node died) "
                             "again up to N times on the same board, then store it failed (default 3)")
    parser.add_argument("--fleet-prior", choices=("on", "off"), default=None,
                        help="with --executor ray: on (default): other boards' rows become each board's transfer "
                             "prior as they arrive (from 8 rows, refit every 8); off: each board's surrogates fit "
                             "its own rows only (cheaper fits where measurements are very short)")
    parser.add_argument("--board-wait-s", type=clitools.positive_float, default=None, metavar="S",
                        help="with --executor ray: wait this long for a board that left the cluster before "
                             "counting its measurement lost, or ending its loop (default 60)")


def check_executor(args: argparse.Namespace) -> None:
    """Options that only make sense with one executor fail in one line before anything runs."""
    devices = getattr(args, "devices", None) or [args.device]
    if args.executor == "local":
        if len(devices) > 1:
            raise clitools.CliError("--device is given once with --executor local (this machine); to profile "
                                    "several boards at once, use --executor ray")
        for flag, value in (("--ray-address", args.ray_address), ("--max-retries", args.max_retries),
                            ("--board-wait-s", args.board_wait_s), ("--fleet-prior", args.fleet_prior)):
            if value is not None:
                raise clitools.CliError(f"{flag} needs --executor ray")
        return
    if len(set(devices)) != len(devices):
        raise clitools.CliError(f"a device is given twice: {', '.join(devices)}")
    if args.cpus is not None:
        raise clitools.CliError("--cpus is not supported with --executor ray yet (it would be checked against "
                                "this machine's CPUs, not the board's)")


def _store_path(args: argparse.Namespace) -> Path:
    from protran._store import RunStore

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise clitools.CliError(f"--out {out}: exists and is not a folder; give a folder for the run store "
                                "and the surrogates")
    path = Path(args.store or out / "fleet.sqlite")
    if path.exists():
        RunStore(path, readonly=True).close()  # a damaged, foreign or newer store fails here, untouched
    return path


def profile_fleet(args: argparse.Namespace, config: Any) -> int:
    """``protran profile --executor ray``: ``config`` is the settings of every device but its name."""
    from protran._fleet import DEFAULT_BOARD_WAIT_S, DEFAULT_MAX_RETRIES, import_ray, run_fleet

    import_ray()  # a missing extra fails in one line before anything is created
    devices = list(getattr(args, "devices", None) or [args.device])
    configs = [dataclasses.replace(config, device=device) for device in devices]
    store_path = _store_path(args)
    total = sum(c.max_samples for c in configs)
    lock = threading.Lock()
    hint = f"every finished measurement is in {store_path}; run the same command with --resume to continue"
    with clitools.resumable(hint), clitools.Progress(total, "profiling", "arch") as bar:
        done: dict[str, int] = {}

        def progress(device: str, event: dict[str, Any]) -> None:
            with lock:
                if event["event"] == "started":
                    done[device] = event["n_attempts"]
                    bar.resume_from(sum(done.values()))
                elif event["event"] == "measured":
                    done[device] = event["n_attempts"]
                    result = event["result"]
                    latency = "n/a" if result.latency_s is None else f"{result.latency_s * 1e3:.2f} ms"
                    bar.step(f"{device}: {result.arch_hash[:8]} {result.status}, latency {latency}, "
                             f"{event['n_ok']} ok", done=sum(done.values()))

        def warn(line: str) -> None:
            with lock:
                bar.write(f"protran: {line}")

        # Ray prints the cluster's messages (a worker that died, say) on stdout: they go to stderr, so
        # that stdout holds only the result
        with contextlib.redirect_stdout(sys.stderr):
            summary = run_fleet(configs, store_path, args.out, address=args.ray_address, resume=args.resume,
                            take_over=args.take_over,
                                max_retries=DEFAULT_MAX_RETRIES if args.max_retries is None else args.max_retries,
                                board_wait_s=DEFAULT_BOARD_WAIT_S if args.board_wait_s is None else args.board_wait_s,
                                progress=progress, warn=warn, fleet_prior=args.fleet_prior != "off")
    for outcome in summary.devices.values():
        if outcome.error:
            print(f"protran: {outcome.device}: stopped ({outcome.stop_reason}): {clitools.one_line(outcome.error)}; "
                  "run the same command with --resume to continue", file=sys.stderr)
    if args.json:
        clitools.print_json(summary.to_json())
    else:
        for name, outcome in summary.devices.items():
            prior = (f"; prior: {outcome.prior_boards} other board(s), {outcome.prior_rows} rows"
                     if outcome.prior_boards else "")
            print(f"{name}: run {outcome.run}: {outcome.measured} measured, {outcome.failed} failed, "
                  f"{outcome.unstable} unstable; stopped: {outcome.stop_reason}{prior}")
        print(f"  store: {store_path} ({summary.elapsed_s:.1f} s)")
    return 0


# -- protran fleet status ---------------------------------------------------------------------------------


def add_fleet_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "fleet", _fleet_help, "a fleet of boards on a Ray cluster: see what it is doing",
        "protran fleet status --ray-address HEAD:6379",
    )
    commands = clitools.add_subcommands(p)
    status = clitools.add_command(
        commands, "status", _status,
        "the boards of the Ray cluster and what each is measuring: progress, queue, ETA, last error",
        "protran fleet status --ray-address HEAD:6379\nprotran fleet status --json",
    )
    status.add_argument("--ray-address", metavar="ADDR",
                        help="the cluster, e.g. HEAD:6379 (default: RAY_ADDRESS or the cluster this machine "
                             "belongs to)")


def _fleet_help(args: argparse.Namespace) -> int:  # argparse requires a subcommand; never reached
    raise clitools.CliError("give a fleet command: status")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _status(args: argparse.Namespace) -> int:
    from protran._fleet import fleet_status

    with contextlib.redirect_stdout(sys.stderr):
        status = fleet_status(args.ray_address)
    profile = status["profile"]
    devices = (profile or {}).get("devices", {})
    rows = []
    for board in status["boards"]:
        state = devices.get(board["board"], {})
        since = state.get("measuring_since")
        measuring = (f"{state['measuring'][:8]} for {_clock(time.time() - since)}"
                     if state.get("measuring") and since else "")
        done, total = state.get("done"), state.get("max_samples")
        row = {**board, "state": state.get("state", "idle"), "run": state.get("run"),
               "measuring": state.get("measuring"), "measuring_for_s": time.time() - since if since and
               state.get("measuring") else None, "done": done, "max_samples": total,
               "queued": max(total - done, 0) if done is not None and total is not None else None,
               "eta_s": state.get("eta_s"), "last_error": state.get("last_error"),
               "prior_boards": state.get("prior_boards", 0)}
        row["_shown"] = measuring
        rows.append(row)
    known = {board["board"] for board in status["boards"]}
    for name, state in devices.items():  # a device the driver has that no node advertises (any more)
        if name not in known:
            rows.append({"board": name, "alive": False, "address": None, "host": None, "node_id": None,
                         "state": state.get("state"), "run": state.get("run"), "measuring": state.get("measuring"),
                         "measuring_for_s": None, "done": state.get("done"), "max_samples": state.get("max_samples"),
                         "queued": None, "eta_s": state.get("eta_s"), "last_error": state.get("last_error"),
                         "prior_boards": state.get("prior_boards", 0), "_shown": ""})
    if args.json:
        clitools.print_json({"boards": [{k: v for k, v in row.items() if k != "_shown"} for row in rows],
                             "profile": None if profile is None else profile.get("driver")})
        return 0
    if not rows:
        print("no board in the cluster (a board joins with: ray start --address HEAD:6379 "
              "--resources '{\"board:NAME\": 1}')")
    else:
        table = [[row["board"], "yes" if row["alive"] else "no", row["host"] or "", row["state"] or "",
                  row["_shown"], "" if row["done"] is None else f"{row['done']}/{row['max_samples']}",
                  "" if row["queued"] is None else row["queued"], _clock(row["eta_s"]) if row["done"] is not None
                  else "", clitools.one_line(row["last_error"] or "")[:80]] for row in rows]
        clitools.print_table(table, ["board", "alive", "host", "state", "measuring", "progress", "queued", "ETA",
                                     "last error"])
    if profile is None:
        print("no profile is running on this cluster")
    else:
        driver = profile.get("driver", {})
        print(f"profile driven by pid {driver.get('pid')} on {driver.get('host')} into {driver.get('store')}")
    return 0


# -- protran proxy --executor ray ---------------------------------------------------------------------------


def add_training_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a training command that run its trainings as Ray tasks."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local (default): train here, one after another; ray: one Ray task per architecture on "
                             "the cluster (--ray-address), same numbers; needs pip install 'edgetran[ray]'")
    parser.add_argument("--ray-address", metavar="ADDR", help="with --executor ray: the cluster, e.g. HEAD:6379")
    parser.add_argument("--num-cpus", type=clitools.positive_float, default=None,
                        help="with --executor ray: CPUs each training task reserves (default: --threads)")
    parser.add_argument("--num-gpus", type=clitools.non_negative_float, default=0.0,
                        help="with --executor ray: GPUs each training task reserves (default 0)")


def proxy_fleet(args: argparse.Namespace, specs: list, config: Any) -> list:
    """``protran proxy --executor ray``: every architecture's proxy as a Ray task, each committed to the
    store as it arrives; the results, for the command to report."""
    from protran._fleet import import_ray, proxies_on_ray
    from protran._store import RunStore

    import_ray()
    kept = (f"every finished architecture's loss is in {args.store}; run the command again with the others "
            "to continue")
    with clitools.resumable(kept), clitools.Progress(len(specs), "proxy", "arch") as bar, \
            RunStore(args.store) as store:
        def keep(index: int, spec: Any, result: Any) -> None:
            store.add_accuracy([result.to_record(spec, config)])
            bar.step(f"{result.arch_hash[:8]}: validation MLM loss {result.eval_loss:.4f} ({result.elapsed_s:.0f} s)")

        with contextlib.redirect_stdout(sys.stderr):
            results = proxies_on_ray(specs, config, corpus_dir=args.corpus, threads=args.threads,
                                     address=args.ray_address,
                                     num_cpus=args.threads if args.num_cpus is None else args.num_cpus,
                                     num_gpus=args.num_gpus, progress=keep)
    return results
