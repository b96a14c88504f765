"""Where batch units run: a pool of local worker processes, or tasks on a Ray cluster.

Both take :class:`batch.piece.PieceTask` and give back :class:`batch.piece.PieceResult` through the
same small interface (``submit``, ``wait``, ``result``, ``progress``, ``close``), so the job logic
(:mod:`batch.job`) does not know which one it drives.

* :class:`LocalPool`: ``jobs`` worker processes (Python's ``ProcessPoolExecutor``), each running one
  segment pipeline at a time on its share of the cores. Workers die with the batch process
  (SIGKILL included), and their pipelines with them: nothing keeps writing after the job is gone.
* :class:`RayCluster`: each unit is a Ray task asking for the CPUs (and the GPU, for ``provider:
  cuda``) one pipeline uses; Ray places it on a node with room and runs it again elsewhere when
  the node is lost (``max_retries``). Ray is imported only here, only when ``--cluster`` is given.
"""
from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures

from batch.piece import PieceResult, PieceTask, run_piece
from stream.errors import InputError

TASK_RETRIES = 3
"""Times Ray runs a unit again after its worker or node died (not after an error in the unit)."""

_progress_queue = None


def _start_worker(progress_queue) -> None:
    from stream.stage_process import die_with_parent

    global _progress_queue
    _progress_queue = progress_queue
    die_with_parent("batch-worker")


def _report_frames(key: str, frames: int) -> None:
    try:
        _progress_queue.put_nowait((key, frames))
    except (queue_module.Full, AttributeError, ValueError, OSError):
        pass


def _run_in_pool(task: PieceTask) -> PieceResult:
    return run_piece(task, _report_frames)


class LocalPool:
    """``jobs`` worker processes on this machine (see the module's docstring)."""

    def __init__(self, jobs: int):
        context = multiprocessing.get_context("spawn")
        self.jobs = jobs
        self._queue = context.Queue()
        self._pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                         initargs=(self._queue,))

    def cores_per_unit(self) -> int:
        return max(1, len(os.sched_getaffinity(0)) // self.jobs)

    def submit(self, task: PieceTask) -> Future:
        return self._pool.submit(_run_in_pool, task)

    def wait(self, handles: list, timeout_s: float) -> list:
        done, _ = wait_futures(handles, timeout=timeout_s, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Future) -> PieceResult:
        return handle.result()

    def progress(self) -> list[tuple[str, int]]:
        updates = []
        while True:
            try:
                updates.append(self._queue.get_nowait())
            except (queue_module.Empty, OSError, ValueError):
                return updates

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down; ``cancel``: at once, killing the workers (and with them the pipelines
        they run), so no piece starts or goes on after the job stopped (Ctrl-C): the executor
        would otherwise wait for the pieces running and start the ones already handed to it."""
        if cancel:
            for worker in list(self._pool._processes.values()):  # no public way before Python 3.14
                worker.kill()
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._queue.cancel_join_thread()
        self._queue.close()


def cluster_address(option: str | None) -> str | None:
    """The Ray cluster to use: ``--cluster`` (an address or 'auto'), else ``RAY_ADDRESS``; None: run here."""
    return option or os.environ.get("RAY_ADDRESS") or None


class RayCluster:
    """Units as Ray tasks on an existing cluster (see the module's docstring). Raises InputError
    when Ray is not installed or the cluster cannot be reached."""

    def __init__(self, address: str, cores_per_unit: int, gpus_per_unit: float):
        """``cores_per_unit``: CPUs each task asks for (lowered to the largest node's count)."""
        try:
            import ray
        except ImportError:
            raise InputError("--cluster needs Ray: pip install \".[cluster]\"") from None
        self.ray = ray
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        largest = max((node["Resources"].get("CPU", 1) for node in ray.nodes() if node["Alive"]), default=1)
        self._cores = max(1, min(cores_per_unit, int(largest)))
        cores_per_unit = self._cores
        self._remote = ray.remote(num_cpus=cores_per_unit, num_gpus=gpus_per_unit,
                                  max_retries=TASK_RETRIES, retry_exceptions=False)(run_piece)

    def cores_per_unit(self) -> int:
        return self._cores

    def submit(self, task: PieceTask):
        return self._remote.remote(task)

    def wait(self, handles: list, timeout_s: float) -> list:
        if not handles:
            return []
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout_s)
        if done:  # everything else finished by now too
            more, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
            done = more or done
        return done

    def result(self, handle) -> PieceResult:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:  # the unit's own error, raised on its node
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def progress(self) -> list[tuple[str, int]]:
        return []

    def close(self, cancel: bool = False) -> None:
        self.ray.shutdown()
