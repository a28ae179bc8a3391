"""A bounded job queue with one worker thread: what a single-GPU server needs, knowing nothing of what a job does.

Why this shape:
  * GPU work is serial, so one worker thread runs one job at a time; the event loop only queues and answers, and
    stays responsive (health checks answer while a job runs).
  * The queue is bounded: when `max_queued` jobs already wait, `submit` refuses at once (QueueFull) instead of
    piling up memory and latency.
  * A job whose client went away or timed out is cancelled right away: taken out of the queue if it waits (its slot
    is free at once), or told to stop (`job.should_stop()` turns true) if it runs, so it stops at its next step.
  * Every job gets exactly one outcome on its future; a cancelled job's late result is dropped.
  * `retry_after()` is measured: the mean duration of the jobs that really ran, times the work ahead.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


class QueueFull(Exception):
    """No room in the queue; retry later."""


class ShuttingDown(Exception):
    """The queue is stopping and takes no new work."""


@dataclass(eq=False)
class Job:
    """One unit of work: `payload` is whatever the run function needs; `future` gets its outcome."""

    id: str
    payload: Any
    future: asyncio.Future
    stop: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        return self.stop.is_set()


RunFn = Callable[[Job], Any]


class JobQueue:
    """Bounded FIFO + single worker thread. Call `start()` and `stop()` on the event loop that owns the futures.

    counts: accepted, rejected_full, completed, failed, skipped (cancelled before it ran) and one count per
    cancellation reason (e.g. timed_out, disconnected)."""

    def __init__(self, run: RunFn, *, max_queued: int, first_estimate_s: float = 10.0,
                 on_start: Callable[[], None] | None = None, name: str = "worker",
                 clock: Callable[[], float] = time.monotonic):
        if int(max_queued) < 1:
            raise ValueError(f"queue_size must be at least 1; got {max_queued}.")
        self.run, self.max_queued, self.name, self.on_start = run, int(max_queued), name, on_start
        self.clock = clock
        self.counts: collections.Counter = collections.Counter()
        self.busy: str | None = None  # id of the running job ("preload" while on_start runs)
        self._first_estimate_s = first_estimate_s
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._running_since = 0.0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------------------------------- life cycle
    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=self.name)

    async def stop(self) -> None:
        """Refuse new work, stop the running job at its next step, fail every waiting job with ShuttingDown."""
        self._stopping.set()
        if self._running is not None:
            self._running.stop.set()
        while self._waiting:
            job = self._waiting.popleft()
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the server is shutting down."))
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # ---------------------------------------------------------------------------------------------- queueing
    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        if self._stopping.is_set() or self._wakeup is None:
            raise ShuttingDown("the server is shutting down.")
        if len(self._waiting) >= self.max_queued:
            self.counts["rejected_full"] += 1
            raise QueueFull(f"the queue is full ({self.max_queued} requests waiting); retry later.")
        self._waiting.append(job)
        self.counts["accepted"] += 1
        self._wakeup.set()

    def cancel(self, job: Job, reason: str) -> None:
        """The job's client no longer wants it: drop it from the queue, or make the running job stop."""
        self.counts[reason] += 1
        job.stop.set()
        try:
            self._waiting.remove(job)
        except ValueError:
            pass  # running (it stops at its next step) or already finished
        else:
            self.counts["skipped"] += 1
        if not job.future.done():
            job.future.cancel()

    @property
    def measured(self) -> bool:
        """True once a job has run (mean_job_s is then measured, not the first estimate)."""
        return bool(self._durations)

    def mean_job_s(self) -> float:
        """Mean duration of the last jobs that ran (a first estimate until one has)."""
        return sum(self._durations) / len(self._durations) if self._durations else self._first_estimate_s

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: what is left of the running job plus the jobs ahead."""
        mean = self.mean_job_s()
        left = 0.0
        if self._running is not None:
            left = max(mean - (self.clock() - self._running_since), 0.0)
        return max(1, min(3600, math.ceil(left + mean * max(len(self._waiting), 1))))

    # ------------------------------------------------------------------------------------------------ worker
    async def _next(self) -> Job:
        assert self._wakeup is not None
        while not self._waiting:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._waiting.popleft()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        if self.on_start is not None:  # e.g. load the weights before the first request instead of inside it
            self.busy = "preload"
            try:
                await loop.run_in_executor(self._executor, self.on_start)
            except Exception:  # noqa: BLE001 - the first job reports the same problem to its client
                import logging

                logging.getLogger(__name__).exception("preloading failed")
            finally:
                self.busy = None
        while True:
            job = await self._next()
            self._running, self.busy, self._running_since = job, job.id, self.clock()
            try:
                result = await loop.run_in_executor(self._executor, self.run, job)
            except asyncio.CancelledError:
                job.stop.set()
                if not job.future.done():
                    job.future.set_exception(ShuttingDown("the server is shutting down."))
                raise
            except BaseException as err:  # noqa: BLE001 - every failure must reach exactly one client
                self.counts["failed"] += 1
                if not job.future.done():
                    job.future.set_exception(err)
            else:
                self.counts["completed"] += 1
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                if not job.stop.is_set():  # a stopped job's duration says nothing about the next one's
                    self._durations.append(self.clock() - self._running_since)
                self._running, self.busy = None, None


__all__ = ["Job", "JobQueue", "QueueFull", "ShuttingDown"]
