"""The children of one grow-and-prune expansion as Ray tasks (``gptran run --executor ray``).

:func:`ray_executor` returns a :data:`~gptran.ChildExecutor` that trains each child of an expansion as a
Ray task reserving ``num_cpus`` and ``num_gpus``, all at once, and returns their results in order. A
child depends only on its arguments (:func:`~gptran.train_child`: the parent's weights, the seeds, the
mutation) and the task trains it with ``threads`` torch threads, as the local run does with
``--threads``, so the same seed gives the same losses and weights as the local executor. The trainer
(with its corpus) is put into Ray's object store once per executor, not once per child.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flexibert import EdgetranError
from flexibert.lazy import optional_dependency


class RayExecutorError(EdgetranError, RuntimeError):
    """The cluster cannot be reached, or a child's training failed on its worker."""


def _on_worker(threads: int, fn: Callable[..., Any], trainer: Any, arguments: tuple[Any, ...]) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(trainer, *arguments)


def _first_line(text: str) -> str:
    return " ".join(text.strip().splitlines()[:1])[:300]


class RayExecutor:
    """``executor(fn, argument_tuples)``: ``[fn(*args) for args in argument_tuples]`` as Ray tasks, in
    order. The first argument of every tuple (the trainer) is shipped once. :meth:`close` disconnects."""

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
        self._shipped: tuple[Any, Any] | None = None  # (trainer, its object reference)

    def _trainer_ref(self, trainer: Any) -> Any:
        if self._shipped is None or self._shipped[0] is not trainer:
            self._shipped = (trainer, self.ray.put(trainer))
        return self._shipped[1]

    def __call__(self, fn: Callable[..., Any], argument_tuples: list[tuple[Any, ...]]) -> list[Any]:
        ray = self.ray
        refs = [self._task.remote(self.threads, fn, self._trainer_ref(arguments[0]), arguments[1:])
                for arguments in argument_tuples]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as raised:
            for ref in refs:
                ray.cancel(ref, force=True)
            cause = getattr(raised, "cause", None) or raised
            raise RayExecutorError(f"a child's training failed on its Ray worker: {type(cause).__name__}: "
                                   f"{_first_line(str(cause))}") from None

    def close(self) -> None:
        self.ray.shutdown()


def ray_executor(address: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 threads: int = 1) -> RayExecutor:
    """A child executor on the Ray cluster at ``address`` (see the module docstring); ``close()`` it
    when the search is done."""
    return RayExecutor(address, num_cpus=num_cpus, num_gpus=num_gpus, threads=threads)
