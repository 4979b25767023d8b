"""A fleet of boards on Ray: profile many boards at once into one run store.

Boards are cluster resources. A board joins a Ray cluster as a node that advertises a custom resource
named after it (``ray start --address HEAD:6379 --resources '{"board:rpi4": 1}'``); the amount is 1,
so Ray runs one task at a time there. The driver (``protran profile --executor ray --device rpi4
--device jetson``) runs one active-learning loop per device, the same :class:`~protran.Profiler` as a
local run, in a thread of its own. Only the measurement moves: the loop's measure function submits a
Ray task that needs ``board:<device>`` and waits for its result. On the board the task runs the real
protocol (:func:`~protran.measure_architecture`: a fresh worker process per architecture) with the
board's own meter, opened there: ``--meter`` when it names one, else the board's
``PROTRAN_BOARD_METER`` environment variable (set where the board ran ``ray start``, e.g.
``remote:pi.local:9555`` for a Jetson whose supply an INA219 on a Pi measures, with the meter server's
token in ``PROTRAN_BOARD_METER_TOKEN``), else whatever
``detect_meter("auto")`` finds on the board. The result returns to the driver, which commits it to
the one run store before the loop goes on.

One writer: every run (one per device) is created or resumed, leased and written by the driver
process alone (each loop through its own connection to the store; SQLite in WAL mode serialises the
commits), so the leases of ``protran._store`` hold as they do for a local run: a second driver cannot
resume a run this one writes, and a killed driver leaves leases that ``--resume`` finds stale.

Faults. A task lost to the board (its Ray worker died, the node left the cluster, or the task ran far
past the protocol's own timeout) is submitted again on the same board, up to ``max_retries`` times;
then the architecture is stored ``failed`` with the reasons, and the loop goes on. Before each
submission the driver waits up to ``board_wait_s`` for the board to be in the cluster; a board that
stays away ends its loop (``board_lost``: the run is left interrupted, for ``--resume``) while the
other boards go on. An error the measurement itself raised on the board (not a lost board) is stored
``failed`` at once, without retrying. A killed driver loses nothing committed: ``--resume`` resumes
each device's unfinished run, and the architecture that was in flight, never committed, is measured
again (Ray ends the tasks of a driver that died, and the board resource keeps a late one from
overlapping the next).

Status. While it runs, the driver publishes each loop's state (what is being measured and since when,
progress, ETA, the last error) in a named actor, ``protran-fleet-status`` in the Ray namespace
``protran``, which ``protran fleet status`` reads; the actor ends with the driver.

Simulated boards, for tests and benchmarks only: ``PROTRAN_FLEET_FAKE_BOARD=module:callable`` in the
driver's environment makes every task call ``callable(spec, board=DEVICE, **settings)`` on the board
instead of the protocol (the module must import there); :func:`simulated_board` is one such callable.

Trainings as Ray tasks: ``protran proxy --executor ray`` trains each architecture's MLM proxy as a task
with ``--num-cpus``/``--num-gpus`` (:func:`proxies_on_ray`), the same numbers as the local run.

Transfer between the loops: other boards' rows become each loop's transfer prior as they arrive
(:class:`LivePrior`). Before each fit, a loop reads the other devices' runs of this fleet from the
store; a board joins the prior once it has ``PRIOR_MIN_ROWS`` (8) usable rows, and the prior (the
``TransferPrior`` of ``protran._profile.fit_prior``, with the files of ``--prior`` if any) is refit
when a board joined or the other boards' rows grew by ``PRIOR_REFIT_ROWS`` (8) since the last fit.
From then on the loop's surrogates are ``PriorResidual`` models and it stops by ``prior_converged``,
as a local run with ``--prior`` does; its seeds stay as given (the other boards start together, so
there is no prior yet when the seeds are chosen). Such a fit costs the driver about a second
(bootstrapped ridge and trees, cross-validated) where the prior-free one costs a tenth of that: on real
boards, whose measurements take tens of seconds, that is noise, but with very short measurements the
fits, which share the driver's one Python process, eat the boards' parallelism (the benchmark);
``--fleet-prior off`` (``fleet_prior=False``) leaves each loop to its own rows.

The children of a GPTran expansion (``gptran run --executor ray``) and the trials of a round of the
fine-tuning autotune (``flexibert.tune_finetuning`` with ``executor``) run as Ray tasks too, through
``flexibert.ray_executor``. Not done yet: ``--cpus`` (pinning) on boards.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flexibert import ArchSpec, EdgetranError, count_parameters, model_hash
from flexibert.lazy import optional_dependency
from protran._profile import ProfileConfig, Profiler, fit_prior, load_prior, prior_rows
from protran._protocol import MeasurementResult
from protran._store import Measurement, RunStore, RunStoreError
from protran._transfer import PRIOR_MIN_ROWS
from protran.vocabulary import USABLE_STATUSES

STATUS_ACTOR = "protran-fleet-status"
NAMESPACE = "protran"
BOARD_PREFIX = "board:"
FAKE_BOARD_VARIABLE = "PROTRAN_FLEET_FAKE_BOARD"
BOARD_METER_VARIABLE = "PROTRAN_BOARD_METER"
BOARD_METER_TOKEN_VARIABLE = "PROTRAN_BOARD_METER_TOKEN"
SIMULATED_SECONDS_VARIABLE = "PROTRAN_FLEET_SIM_SECONDS"
DEFAULT_MAX_RETRIES = 3
DEFAULT_BOARD_WAIT_S = 60.0
# A task that runs this long past the protocol's own timeout is taken as lost with its board.
_TASK_GRACE_S = 120.0
# A loop's prior is refit once the other boards' usable rows grew by this many since its last fit.
PRIOR_REFIT_ROWS = 8
_POLL_S = 0.5


class FleetError(EdgetranError, RuntimeError):
    """The cluster or a board cannot be used as asked (no cluster, a board not in it, a second driver)."""


class BoardLostError(FleetError):
    """A board left the cluster and did not come back within ``board_wait_s``."""


class _Stopped(KeyboardInterrupt):
    """The driver is stopping (Ctrl-C): raised in each loop's thread to end its run as interrupted."""


def board_resource(device: str) -> str:
    """The custom resource a board advertises: ``board:<device>``."""
    return f"{BOARD_PREFIX}{device}"


def import_ray():
    """The ``ray`` module, or MissingDependencyError naming ``pip install 'edgetran[ray]'``."""
    with optional_dependency("running on a Ray cluster (--executor ray)"):
        import ray
    return ray


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- on the board -------------------------------------------------------------------------------------

_BOARD_METERS: dict[str, Any] = {}


def _board_meter_name(requested: str) -> str:
    if requested != "auto":
        return requested
    return os.environ.get(BOARD_METER_VARIABLE) or "auto"


def _board_meter(requested: str) -> Any:
    """The board's meter, opened once per Ray worker process (a worker runs many tasks)."""
    name = _board_meter_name(requested)
    if name not in _BOARD_METERS:
        from protran.meters import detect_meter

        token = os.environ.get(BOARD_METER_TOKEN_VARIABLE)
        options = {"token": token} if token and name.startswith("remote:") else {}
        _BOARD_METERS[name] = detect_meter(name, **options)
    return _BOARD_METERS[name]


def _load_callable(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"{FAKE_BOARD_VARIABLE}={path!r}: expected module:callable")
    return getattr(importlib.import_module(module), name)


def probe_board(meter: str, fake: str | None) -> dict[str, Any]:
    """Runs on a board: its host name, process and meter (the meter is opened here, so a missing one
    fails before any run is created)."""
    meter_name = None if fake else getattr(_board_meter(meter), "name", None)
    return {"host": socket.gethostname(), "pid": os.getpid(), "meter": meter_name}


def measure_on_board(device: str, spec: ArchSpec, settings: dict[str, Any], meter: str,
                     fake: str | None) -> MeasurementResult:
    """Runs on a board: measure ``spec`` with the protocol and the board's meter (or the fake)."""
    if fake:
        return _load_callable(fake)(spec, board=device, **settings)
    from protran._protocol import measure_architecture

    return measure_architecture(spec, meter=_board_meter(meter), **settings)


def simulated_board(spec: ArchSpec, *, board: str, **settings: Any) -> MeasurementResult:
    """A simulated board, for tests and benchmarks only: sleeps ``PROTRAN_FLEET_SIM_SECONDS`` (default
    0.05) as the measurement, and returns a latency that grows with the parameter count (a board whose
    name ends in ``b`` is twice as slow), like a CPU's."""
    time.sleep(float(os.environ.get(SIMULATED_SECONDS_VARIABLE, "0.05")))
    scale = 2.0 if board.endswith("b") else 1.0
    latency_s = scale * (1e-9 * count_parameters(spec) + 1e-4)
    return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(),
                             runtime=settings["runtime"], batch_size=settings["batch_size"],
                             seq_len=settings["seq_len"], num_threads=settings["num_threads"], status="ok",
                             latency_s=latency_s, latency_ci_rel=0.01, repeats=10, started_at=_now(),
                             finished_at=_now(), conditions={"simulated": True})


# -- the status actor -----------------------------------------------------------------------------------


class FleetStatus:
    """The driver's state, kept in a named Ray actor for ``protran fleet status`` (one per driver)."""

    def __init__(self, driver: dict[str, Any]) -> None:
        self.state: dict[str, Any] = {"driver": driver, "devices": {}}

    def update(self, device: str, fields: dict[str, Any]) -> None:
        self.state["devices"].setdefault(device, {}).update(fields)

    def snapshot(self) -> dict[str, Any]:
        return self.state


def boards(ray: Any) -> list[dict[str, Any]]:
    """Every node that advertises a ``board:*`` resource, alive or not (sorted by board name)."""
    found = []
    for node in ray.nodes():
        resources = node.get("Resources") or {}
        for name in resources:
            if name.startswith(BOARD_PREFIX):
                found.append({"board": name[len(BOARD_PREFIX):], "alive": bool(node.get("Alive")),
                              "address": node.get("NodeManagerAddress"), "host": node.get("NodeManagerHostname"),
                              "node_id": node.get("NodeID")})
    return sorted(found, key=lambda row: (row["board"], not row["alive"]))


def read_status(ray: Any) -> dict[str, Any] | None:
    """The running driver's published state, or None where no profile is running on the cluster."""
    try:
        actor = ray.get_actor(STATUS_ACTOR, namespace=NAMESPACE)
        return ray.get(actor.snapshot.remote(), timeout=10)
    except (ValueError, ray.exceptions.RayError):
        return None


# -- the driver ---------------------------------------------------------------------------------------


@dataclass
class DeviceOutcome:
    """What one device's loop did: its run and counts (from the store), and why it stopped."""

    device: str
    run: int
    measured: int = 0
    failed: int = 0
    unstable: int = 0
    stop_reason: str | None = None
    error: str | None = None
    # the other boards in this loop's transfer prior at its last fit, and their rows then
    prior_boards: int = 0
    prior_rows: int = 0

    def to_json(self, store: str) -> dict[str, Any]:
        """The shape ``protran profile --executor ray --json`` prints per device."""
        return {"measured": self.measured, "failed": self.failed, "unstable": self.unstable, "run": self.run,
                "store": store}


@dataclass
class FleetSummary:
    store: str
    devices: dict[str, DeviceOutcome] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"devices": {name: outcome.to_json(self.store) for name, outcome in self.devices.items()}}


class _NamedMeter:
    """Stands in for the board's meter on the driver: its name goes into the run; it measures nothing."""

    def __init__(self, name: str | None) -> None:
        self.name = name


class _Fleet:
    """The driver's shared state: Ray, the remote functions, the stop flag and the status actor."""

    def __init__(self, ray: Any, *, max_retries: int, board_wait_s: float, fake: str | None) -> None:
        self.ray = ray
        self.max_retries = max_retries
        self.board_wait_s = board_wait_s
        self.fake = fake
        self.stop = threading.Event()
        self.status: Any = None
        self.note: Callable[[str], None] = lambda line: None
        self._measure = ray.remote(num_cpus=0, max_retries=0)(measure_on_board)
        self._probe = ray.remote(num_cpus=0, max_retries=0)(probe_board)

    def publish(self, device: str, **fields: Any) -> None:
        if self.status is not None:
            try:
                self.status.update.remote(device, fields)
            except Exception as problem:  # the status view is best effort; measuring goes on without it
                self.status = None
                self.note(f"the fleet status view stopped: {type(problem).__name__}: {_first_line(str(problem))}")

    def board_present(self, device: str) -> bool:
        return self.ray.cluster_resources().get(board_resource(device), 0) > 0

    def wait_for_board(self, device: str) -> None:
        """Return once the board is in the cluster; BoardLostError after ``board_wait_s`` without it."""
        deadline = time.monotonic() + self.board_wait_s
        announced = False
        while not self.board_present(device):
            if not announced:
                self.publish(device, state="waiting for the board")
                announced = True
            if time.monotonic() >= deadline:
                raise BoardLostError(f"board {device!r} left the cluster and did not come back within "
                                     f"{self.board_wait_s:g} s")
            if self.stop.wait(_POLL_S):
                raise _Stopped
        if announced:
            self.publish(device, state="measuring")

    def submit_probe(self, device: str, meter: str) -> Any:
        return self._probe.options(resources={board_resource(device): 1}).remote(meter, self.fake)

    def submit_measure(self, device: str, spec: ArchSpec, settings: dict[str, Any], meter: str) -> Any:
        return self._measure.options(resources={board_resource(device): 1}).remote(
            device, spec, settings, meter, self.fake)

    def wait(self, device: str, ref: Any, limit_s: float) -> Any:
        """``ray.get(ref)``, polling: Ctrl-C (the stop flag) cancels the task; a board that is gone for
        ``board_wait_s``, or a task past ``limit_s``, counts as lost (``_Lost``)."""
        ray = self.ray
        started = time.monotonic()
        absent_since: float | None = None
        while True:
            ready, _ = ray.wait([ref], timeout=_POLL_S)
            if ready:
                return ray.get(ref)
            if self.stop.is_set():
                ray.cancel(ref, force=True)
                raise _Stopped
            now = time.monotonic()
            if self.board_present(device):
                absent_since = None
            else:
                absent_since = absent_since or now
                if now - absent_since >= self.board_wait_s:
                    ray.cancel(ref, force=True)
                    raise _Lost(f"board {device!r} left the cluster during the measurement")
            if now - started > limit_s:
                ray.cancel(ref, force=True)
                raise _Lost(f"no result from board {device!r} after {limit_s:g} s")


class _Lost(Exception):
    """A task lost with its board (worker or node died, or no answer): retried on the same board."""


class BoardMeasure:
    """The measure function of one device's loop: a Ray task on that board, retried when lost."""

    def __init__(self, fleet: _Fleet, device: str, meter: str) -> None:
        self.fleet, self.device, self.meter = fleet, device, meter

    def __call__(self, spec: ArchSpec, **settings: Any) -> MeasurementResult:
        fleet, device = self.fleet, self.device
        settings.pop("meter", None)  # the board opens its own
        limit_s = float(settings.get("timeout_s", 600.0)) + _TASK_GRACE_S
        reasons: list[str] = []
        arch_hash = model_hash(spec)
        for attempt in range(1, fleet.max_retries + 2):
            if fleet.stop.is_set():
                raise _Stopped
            fleet.wait_for_board(device)
            fleet.publish(device, measuring=arch_hash, measuring_since=time.time(), attempt=attempt)
            ref = fleet.submit_measure(device, spec, dict(settings), self.meter)
            try:
                result = fleet.wait(device, ref, limit_s)
            except _Lost as lost:
                reasons.append(str(lost))
            except fleet.ray.exceptions.RayTaskError as raised:  # the measurement itself raised: no retry
                cause = getattr(raised, "cause", None) or raised
                reason = f"the measurement raised on board {device!r}: {type(cause).__name__}: {cause}"
                fleet.publish(device, measuring=None, last_error=reason)
                return _failed(spec, settings, reason, device, attempt)
            except fleet.ray.exceptions.RayError as lost:  # worker crashed, node died, object lost
                reasons.append(f"{type(lost).__name__}: {_first_line(str(lost))}")
            else:
                fleet.publish(device, measuring=None)
                return _with_board(result, device, attempt)
            fleet.publish(device, measuring=None, last_error=f"attempt {attempt}: {reasons[-1]}")
        reason = (f"lost on board {device!r} {len(reasons)} times (retried {fleet.max_retries}); last: "
                  f"{reasons[-1]}")
        return _failed(spec, settings, reason, device, len(reasons))


def _first_line(text: str) -> str:
    return " ".join(text.strip().splitlines()[:1])[:300]


def _with_board(result: MeasurementResult, device: str, attempt: int) -> MeasurementResult:
    import dataclasses

    conditions = {**(result.conditions or {}), "fleet": {"board": device, "attempt": attempt}}
    return dataclasses.replace(result, conditions=conditions)


def _failed(spec: ArchSpec, settings: dict[str, Any], reason: str, device: str, attempts: int) -> MeasurementResult:
    return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(),
                             runtime=settings["runtime"], batch_size=settings["batch_size"],
                             seq_len=settings["seq_len"], num_threads=settings["num_threads"], status="failed",
                             error=reason, started_at=_now(), finished_at=_now(),
                             conditions={"fleet": {"board": device, "attempt": attempts}})


def _connect(ray: Any, address: str | None) -> None:
    try:
        ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING",
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as problem:
        where = address or "auto (RAY_ADDRESS or a cluster started on this machine)"
        raise FleetError(f"cannot connect to the Ray cluster at {where}: {_first_line(str(problem))}; start one "
                         "with `ray start --head` and give its address with --ray-address") from None


def _status_actor(ray: Any, driver: dict[str, Any]) -> Any:
    """This driver's status actor; None (with the reason published nowhere) where another holds the name."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    actor_class = ray.remote(num_cpus=0, max_restarts=0)(FleetStatus)
    deadline = time.monotonic() + 15.0
    while True:
        try:
            return actor_class.options(name=STATUS_ACTOR, namespace=NAMESPACE, scheduling_strategy=here).remote(driver)
        except ValueError:  # the name is taken: a live driver, or one just killed that Ray is still ending
            if time.monotonic() >= deadline:
                return None
            time.sleep(1.0)


def run_fleet(configs: Sequence[ProfileConfig], store_path: str | Path, out_dir: str | Path, *,
              address: str | None = None, resume: bool = False, take_over: bool = False,
              max_retries: int = DEFAULT_MAX_RETRIES, board_wait_s: float = DEFAULT_BOARD_WAIT_S,
              progress: Callable[[str, dict[str, Any]], None] | None = None,
              warn: Callable[[str], None] | None = None, fleet_prior: bool = True) -> FleetSummary:
    """Profile every device of ``configs`` (one per board) on the Ray cluster at ``address`` into the
    run store at ``store_path``: one run per device, all written by this process.

    ``fleet_prior``: other boards' rows become each loop's transfer prior as they arrive
    (:class:`LivePrior`); off, each loop fits on its own rows (and the ``--prior`` files) only.

    ``progress(device, event)`` gets each loop's profiler events. Ctrl-C stops every loop (their runs
    left interrupted, for ``resume``) and re-raises KeyboardInterrupt.
    """
    if not configs:
        raise ValueError("give at least one device")
    names = [c.device for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"a device is given twice: {', '.join(names)}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be at least 0, got {max_retries}")
    if not board_wait_s > 0 or not math.isfinite(board_wait_s):
        raise ValueError(f"board_wait_s must be a positive finite number, got {board_wait_s}")
    note = warn or (lambda line: None)
    report = progress or (lambda device, event: None)
    ray = import_ray()
    # --prior (the same files for every device): read, and refused, before the cluster is touched
    initial = load_prior(configs[0])
    files = list(prior_rows(configs[0]).values()) if configs[0].prior_paths else []
    started = time.monotonic()
    _connect(ray, address)
    try:
        fleet = _Fleet(ray, max_retries=max_retries, board_wait_s=board_wait_s,
                       fake=os.environ.get(FAKE_BOARD_VARIABLE) or None)
        fleet.note = note
        # the status actor first: it starts (a worker process of its own) while the boards are probed
        fleet.status = _status_actor(ray, {"pid": os.getpid(), "host": socket.gethostname(), "store": str(store_path),
                                           "started": time.time()})
        if fleet.status is None:
            note(f"another driver publishes the fleet status ({STATUS_ACTOR}); `protran fleet status` shows that one")
        meters = _probe_boards(fleet, configs)
        loops = _open_loops(fleet, configs, store_path, out_dir, meters, resume=resume, take_over=take_over,
                            report=report, files=files, initial=initial, fleet_prior=fleet_prior)
        outcomes = _run_loops(fleet, loops)
        summary = FleetSummary(str(store_path), elapsed_s=time.monotonic() - started)
        with RunStore(store_path) as store:
            for loop in loops:
                summary.devices[loop.device] = _counted(store, outcomes[loop.device])
        return summary
    finally:
        ray.shutdown()


def _probe_boards(fleet: _Fleet, configs: Sequence[ProfileConfig]) -> dict[str, str | None]:
    """Every board is in the cluster and answers; its meter's name (opened on the board)."""
    ray = fleet.ray
    missing = [c.device for c in configs if not fleet.board_present(c.device)]
    if missing:
        present = sorted({row["board"] for row in boards(ray) if row["alive"]})
        raise FleetError(f"no board {', '.join(repr(name) for name in missing)} in the cluster (boards there: "
                         f"{', '.join(present) or 'none'}); on the board run: ray start --address HEAD:6379 "
                         f"--resources '{{\"{board_resource(missing[0])}\": 1}}'")
    refs = {c.device: fleet.submit_probe(c.device, c.meter) for c in configs}
    meters: dict[str, str | None] = {}
    for device, ref in refs.items():
        try:
            meters[device] = ray.get(ref, timeout=max(fleet.board_wait_s, 30.0))["meter"]
        except ray.exceptions.GetTimeoutError:
            raise FleetError(f"board {device!r} did not answer within {max(fleet.board_wait_s, 30.0):g} s") from None
        except ray.exceptions.RayTaskError as raised:
            cause = getattr(raised, "cause", None) or raised
            raise FleetError(f"board {device!r}: {_first_line(str(cause))}") from None
    return meters


class LivePrior:
    """One loop's transfer prior: the other boards' rows measured so far (their runs ``others`` in the
    fleet's store), with ``files`` (the row groups of ``--prior``, one per board) if any.

    A board joins once it has ``min_rows`` usable rows; :meth:`current` refits the prior when a board
    joined or the joined boards' rows grew by ``refit_rows`` since the last fit, and otherwise returns
    the prior fitted before. Without another board's rows the prior is the files' (``initial``: the
    ``(prior, boards)`` of ``load_prior``), or none."""

    def __init__(self, config: ProfileConfig, others: Sequence[int], files: Sequence[Sequence[Any]] = (),
                 initial: tuple[Any, int] = (None, 0), *, min_rows: int = PRIOR_MIN_ROWS,
                 refit_rows: int = PRIOR_REFIT_ROWS) -> None:
        if min_rows < 2 or refit_rows < 1:
            raise ValueError(f"min_rows must be at least 2 and refit_rows at least 1, got {min_rows}, {refit_rows}")
        self.config, self.others, self.files = config, list(others), [list(rows) for rows in files]
        self.min_rows, self.refit_rows = min_rows, refit_rows
        self.prior, self.devices = initial
        self.boards = 0  # other boards of this fleet in the prior
        self.rows = 0  # their usable rows at the last fit
        self.fits = 0

    def current(self, store: RunStore) -> tuple[Any, int]:
        """``(TransferPrior or None, devices in it)``, refit from ``store`` where due."""
        groups: list[list[Measurement]] = []
        for run in self.others:
            rows = store.measurements(run_id=run, status=USABLE_STATUSES)
            if len(rows) >= self.min_rows:
                groups.append(rows)
        total = sum(len(rows) for rows in groups)
        if groups and (len(groups) != self.boards or total - self.rows >= self.refit_rows):
            self.prior, self.devices = fit_prior(self.config, [*self.files, *groups])
            self.boards, self.rows = len(groups), total
            self.fits += 1
        return self.prior, self.devices


class _FleetProfiler(Profiler):
    """A fleet loop's profiler: before each fit its transfer prior is brought up to date (``live``)."""

    live: LivePrior | None = None
    on_prior: Callable[[LivePrior], None] | None = None

    def _fit(self, rows: list[Measurement]) -> dict[str, Any]:
        if self.live is not None:
            fits = self.live.fits
            self._prior, self._prior_devices = self.live.current(self.store)
            if self.live.fits != fits and self.on_prior is not None:
                self.on_prior(self.live)
        return super()._fit(rows)


@dataclass
class _Loop:
    """One device's loop; ``profiler`` and ``store`` are None for a device whose run finished before
    (``resume``): there is nothing left to measure."""

    device: str
    profiler: _FleetProfiler | None
    store: RunStore | None
    max_samples: int
    run_id: int


def _open_loops(fleet: _Fleet, configs: Sequence[ProfileConfig], store_path: str | Path, out_dir: str | Path,
                meters: dict[str, str | None], *, resume: bool, take_over: bool,
                report: Callable[[str, dict[str, Any]], None], files: list[list[Any]],
                initial: tuple[Any, int], fleet_prior: bool = True) -> list[_Loop]:
    """One profiler per device, each with its own connection to the store; its run created or resumed
    (and leased) here, before any measurement, so a run another driver holds fails at once."""
    loops: list[_Loop] = []
    try:
        for config in configs:
            if resume and (finished := _finished_run(store_path, config)) is not None:
                loops.append(_Loop(config.device, None, None, config.max_samples, finished))
                fleet.publish(config.device, run=finished, state="finished before", max_samples=config.max_samples,
                              measuring=None)
                continue
            store = RunStore(store_path)
            try:
                profiler = _FleetProfiler(config, store, out_dir, resume=resume, take_over=take_over,
                                          meter=_NamedMeter(meters[config.device]),
                                          measure_fn=BoardMeasure(fleet, config.device, config.meter),
                                          progress=_Publisher(fleet, config.device, config.max_samples, report),
                                          prior=initial)
            except BaseException:
                store.close()
                raise
            loops.append(_Loop(config.device, profiler, store, config.max_samples, profiler.run_id))
            fleet.publish(config.device, run=profiler.run_id, state="queued", max_samples=config.max_samples,
                          done=0, measuring=None, last_error=None)
    except BaseException:
        for loop in loops:  # runs opened before the failure are left free to resume
            if loop.store is not None:
                with suppress(RunStoreError):
                    loop.store.release_lease(loop.run_id, "interrupted")
                loop.store.close()
        raise
    for loop in loops:  # each loop's prior: the other devices' runs of this fleet (finished ones too)
        if loop.profiler is not None and fleet_prior:
            config = loop.profiler.config
            loop.profiler.live = LivePrior(config, [other.run_id for other in loops if other is not loop], files,
                                           initial)
            loop.profiler.on_prior = _prior_publisher(fleet, loop.device)
    return loops


def _prior_publisher(fleet: _Fleet, device: str) -> Callable[[LivePrior], None]:
    def publish(live: LivePrior) -> None:
        fleet.publish(device, prior_boards=live.boards, prior_rows=live.rows)

    return publish


def _finished_run(store_path: str | Path, c: ProfileConfig) -> int | None:
    """With ``resume``: the newest finished run of these settings where no unfinished one is left, so
    that resuming a fleet whose board finished before the driver died does not profile it again."""
    if not Path(store_path).exists():
        return None
    with RunStore(store_path) as store:
        if store.find_resumable_run(c.device, c.runtime, c.batch_size, c.seq_len, c.num_threads,
                                    config=c.run_settings()) is not None:
            return None
        settings = json.loads(json.dumps(c.run_settings()))
        for run in reversed(store.runs()):
            if (run.device, run.runtime, run.batch_size, run.seq_len, run.num_threads, run.status) == (
                    c.device, c.runtime, c.batch_size, c.seq_len, c.num_threads, "finished") \
                    and run.config == settings:
                return run.id
    return None


class _Publisher:
    """A loop's profiler events: to the caller's progress and, summarised, to the status actor."""

    def __init__(self, fleet: _Fleet, device: str, max_samples: int,
                 report: Callable[[str, dict[str, Any]], None]) -> None:
        self.fleet, self.device, self.max_samples, self.report = fleet, device, max_samples, report
        self._session_start = time.monotonic()
        self._done_before = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "started":
            self._done_before = event["n_attempts"]
            self.fleet.publish(self.device, state="measuring", done=event["n_attempts"])
        elif kind == "measured":
            done = event["n_attempts"]
            here = done - self._done_before
            eta = ((time.monotonic() - self._session_start) / here * max(self.max_samples - done, 0)
                   if here > 0 else None)
            result = event["result"]
            fields: dict[str, Any] = {"done": done, "ok": event["n_ok"], "eta_s": eta}
            if result.status not in USABLE_STATUSES:
                fields["last_error"] = f"{result.arch_hash[:8]} {result.status}: {_first_line(result.error or '')}"
            self.fleet.publish(self.device, **fields)
        self.report(self.device, event)


def _run_loops(fleet: _Fleet, loops: list[_Loop]) -> dict[str, DeviceOutcome]:
    outcomes = {loop.device: DeviceOutcome(loop.device, loop.run_id) for loop in loops}

    def run(loop: _Loop) -> None:
        outcome = outcomes[loop.device]
        if loop.profiler is None or loop.store is None:
            outcome.stop_reason = "finished_before"
            return
        try:
            summary = loop.profiler.run()
            outcome.stop_reason = summary.stop_reason
            fleet.publish(loop.device, state=f"finished ({summary.stop_reason})", measuring=None, eta_s=0)
        except _Stopped:
            outcome.stop_reason = "interrupted"
            fleet.publish(loop.device, state="interrupted", measuring=None)
        except BoardLostError as lost:
            outcome.stop_reason, outcome.error = "board_lost", str(lost)
            fleet.publish(loop.device, state="board lost", measuring=None, last_error=str(lost))
        except Exception as problem:  # this board's loop ends; the others go on
            outcome.stop_reason, outcome.error = "error", f"{type(problem).__name__}: {problem}"
            fleet.publish(loop.device, state="error", measuring=None, last_error=outcome.error)
        finally:
            if loop.profiler.live is not None:
                outcome.prior_boards, outcome.prior_rows = loop.profiler.live.boards, loop.profiler.live.rows
            loop.store.close()

    threads = [threading.Thread(target=run, args=(loop,), name=f"protran-fleet-{loop.device}", daemon=True)
               for loop in loops]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(_POLL_S)
    except KeyboardInterrupt:
        fleet.stop.set()
        for thread in threads:
            thread.join(30.0)
        raise
    return outcomes


def _counted(store: RunStore, outcome: DeviceOutcome) -> DeviceOutcome:
    """The run's counts as the store holds them (current rows), as a local profile's summary counts."""
    attempts = store.measurements(run_id=outcome.run, status=None)
    outcome.measured = sum(row.status == "ok" for row in attempts)
    outcome.failed = sum(row.status in ("failed", "timeout", "oom") for row in attempts)
    outcome.unstable = sum(row.status == "unstable" for row in attempts)
    return outcome


def fleet_status(address: str | None) -> dict[str, Any]:
    """The boards of the cluster at ``address`` and, where a driver runs, what each loop is doing."""
    ray = import_ray()
    _connect(ray, address)
    try:
        return {"boards": boards(ray), "profile": read_status(ray)}
    finally:
        ray.shutdown()


# -- trainings as Ray tasks -------------------------------------------------------------------------------

_PROXY_CORPORA: dict[Any, Any] = {}


def proxy_on_worker(spec: ArchSpec, config: Any, corpus_dir: str | None, threads: int) -> Any:
    """Runs on a Ray worker: the MLM proxy of one architecture, as ``protran proxy`` computes it locally
    (the same seed, batches, masks and thread count give the same loss). The corpus is loaded once per
    worker process."""
    import torch

    from protran._proxy import load_proxy_corpus, mlm_proxy

    torch.set_num_threads(threads)
    key = (corpus_dir, config.seq_len)
    if key not in _PROXY_CORPORA:
        _PROXY_CORPORA[key] = load_proxy_corpus(config, corpus_dir)
    return mlm_proxy(spec, _PROXY_CORPORA[key], config)


def proxies_on_ray(specs: Sequence[ArchSpec], config: Any, *, corpus_dir: str | None = None, threads: int = 1,
                   address: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                   progress: Callable[[int, ArchSpec, Any], None] | None = None) -> list[Any]:
    """The MLM proxy of every architecture (``protran._proxy.mlm_proxy``), one Ray task each with
    ``num_cpus`` and ``num_gpus``; results in the order of ``specs``. ``progress(index, spec, result)``
    is called as each one arrives (in any order), so the caller can commit it at once. ``corpus_dir``
    must exist on every worker (default: the corpus shipped with edgetran, found by each install)."""
    ray = import_ray()
    _connect(ray, address)
    try:
        task = ray.remote(max_retries=DEFAULT_MAX_RETRIES)(proxy_on_worker).options(num_cpus=num_cpus,
                                                                                   num_gpus=num_gpus)
        pending = {task.remote(spec, config, corpus_dir, threads): index for index, spec in enumerate(specs)}
        results: list[Any] = [None] * len(specs)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            try:
                results[index] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as raised:
                cause = getattr(raised, "cause", None) or raised
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise FleetError(f"the proxy of {model_hash(specs[index])[:8]} failed on its worker: "
                                 f"{type(cause).__name__}: {_first_line(str(cause))}") from None
            if progress is not None:
                progress(index, specs[index], results[index])
        return results
    finally:
        ray.shutdown()
