"""Trainings as Ray tasks: an executor that runs independent calls on a Ray cluster, all at once.

:func:`ray_executor` returns ``executor(fn, argument_tuples)``, which computes ``[fn(*args) for args in
argument_tuples]`` as one Ray task per call, each reserving ``num_cpus`` and ``num_gpus`` and running
with ``threads`` torch threads, and returns the results in order. The first argument of the tuples
(the heavy shared part: a trainer with its corpus, a task's data) is put into Ray's object store once
while it stays the same object, not once per call. Users: the children of one GPTran expansion
(``gptran run --executor ray``: :func:`gptran.train_child`) and the trials of one round of the
fine-tuning autotune (:func:`tune_finetuning` with ``executor``). A call that depends on its arguments
only gives the same numbers as it does locally with the same thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flexibert._errors import EdgetranError
from flexibert.lazy import optional_dependency


class RayExecutorError(EdgetranError, RuntimeError):
    """The cluster cannot be reached, or a task failed on its worker."""


def _on_worker(threads: int, fn: Callable[..., Any], shared: Any, arguments: tuple[Any, ...]) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(shared, *arguments)


def _first_line(text: str) -> str:
    return " ".join(text.strip().splitlines()[:1])[:300]


class RayExecutor:
    """``executor(fn, argument_tuples)``: ``[fn(*args) for args in argument_tuples]`` as Ray tasks, in
    order. The first argument of the tuples is shipped once. :meth:`close` disconnects."""

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 threads: int = 1, max_retries: int = 3) -> None:
        with optional_dependency("running on a Ray cluster (--executor ray)"):
            import ray
        self.ray = ray
        self.threads, self.num_cpus, self.num_gpus, self.max_retries = threads, num_cpus, num_gpus, max_retries
        try:
            ray.init(address=address or "auto", log_to_driver=False, logging_level="WARNING", configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as problem:
            where = address or "auto (RAY_ADDRESS or a cluster started on this machine)"
            raise RayExecutorError(f"cannot connect to the Ray cluster at {where}: {_first_line(str(problem))}; start "
                                   "one with `ray start --head` and give its address with --ray-address") from None
        self._task = ray.remote(max_retries=max_retries)(_on_worker).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._shipped: tuple[Any, Any] | None = None  # (the shared first argument, its object reference)

    def _shared_ref(self, shared: Any) -> Any:
        if self._shipped is None or self._shipped[0] is not shared:
            self._shipped = (shared, self.ray.put(shared))
        return self._shipped[1]

    def __call__(self, fn: Callable[..., Any], argument_tuples: list[tuple[Any, ...]]) -> list[Any]:
        ray = self.ray
        refs = [self._task.remote(self.threads, fn, self._shared_ref(arguments[0]), arguments[1:])
                for arguments in argument_tuples]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as raised:
            for ref in refs:
                ray.cancel(ref, force=True)
            cause = getattr(raised, "cause", None) or raised
            raise RayExecutorError(f"{getattr(fn, '__name__', 'a task')} failed on its Ray worker: "
                                   f"{type(cause).__name__}: {_first_line(str(cause))}") from None

    def close(self) -> None:
        self.ray.shutdown()


def ray_executor(address: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 threads: int = 1) -> RayExecutor:
    """An executor on the Ray cluster at ``address`` (see the module docstring); ``close()`` it when
    done."""
    return RayExecutor(address, num_cpus=num_cpus, num_gpus=num_gpus, threads=threads)
