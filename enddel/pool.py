"""The render pool as the server sees it: spawn, hand out work, watch, restart, stop.

Each server process runs one pool of render workers (``python -m workers``),
each a separate process with its own V8 context. Requests put render jobs into
one bounded trio memory channel. One supervisor task per worker slot takes a
job only when its worker is idle, so a worker renders one job at a time, and
sets the job's result for the request that waits on it.

Outcomes of a job, as the waiting request sees them:

- a :class:`RenderResult` (the bundle returned, whatever the status);
- :class:`RenderFailed`: the bundle threw or returned something invalid;
- :class:`RenderTimeout`: the deadline passed, in the queue or in the worker
  (a worker that misses its deadline is killed and replaced);
- :class:`PoolOverloaded`: the queue was full; the caller answers 503;
- :class:`PoolClosed`: the pool is stopping or never started.

A worker that dies mid-render is restarted with backoff and its job is retried
once on another worker; a second death fails the job with RenderFailed.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from enddel.config import Config
from enddel.logs import pool_log, render_log
from workers.protocol import Frame, FrameReader, Kind, ProtocolError, encode_frame

__all__ = [
    "BundleLoadFailed",
    "PoolClosed",
    "PoolOverloaded",
    "PoolStatistics",
    "RenderError",
    "RenderFailed",
    "RenderPool",
    "RenderResult",
    "RenderTimeout",
]

#: How long a fresh worker may take to load V8 and the bundle. Loading a large
#: bundle on a busy machine takes seconds, not minutes.
LOAD_TIMEOUT = 60.0
#: Extra time a worker gets past a job's deadline to report its own timeout
#: before the pool kills it. Covers the worker's watchdog (1 s) and a slow pipe.
KILL_GRACE = 1.5
#: How long a stopping worker may take to close V8 and exit after its stdin
#: closes, before it is killed.
STOP_TIMEOUT = 5.0
#: Restart backoff: the first restart waits this long, each further failure
#: doubles it up to RESTART_BACKOFF_MAX. A worker that served for
#: HEALTHY_AFTER seconds resets it.
RESTART_BACKOFF_MIN = 0.1
RESTART_BACKOFF_MAX = 10.0
HEALTHY_AFTER = 30.0
_READ_BYTES = 1 << 16

_CONSOLE_LEVELS = {
    "debug": logging.DEBUG,
    "log": logging.INFO,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class RenderError(Exception):
    """Base of the ways a render job ends without a result."""


class RenderFailed(RenderError):
    """The bundle threw, or the worker died twice while rendering the job."""

    def __init__(self, name: str, message: str, stack: str = "") -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.stack = stack


class RenderTimeout(RenderError):
    """The job's deadline passed before it had a result."""


class PoolOverloaded(RenderError):
    """The render queue is full; the request should be retried later."""


class PoolClosed(RenderError):
    """The pool is not running: it is starting, stopping, or has stopped."""


class BundleLoadFailed(Exception):
    """The bundle did not load in a fresh worker; the server cannot start."""


class PoolState(enum.Enum):
    UNOPENED = "unopened"
    RUNNING = "running"
    CLOSED = "closed"


class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What ``renderPage`` returned for one URL, checked and normalised."""

    status: int
    headers: tuple[tuple[str, str], ...]
    html: bytes
    head: str
    cache: bool
    ttl: float | None
    seconds: float


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    workers: int
    ready_workers: int
    queued_jobs: int
    restarts: int
    renders: int


@dataclass(eq=False)
class _Job:
    job_id: int
    url: str
    deadline: float
    attempts: int = 0
    done: trio.Event = field(default_factory=trio.Event)
    result: RenderResult | None = None
    error: RenderError | None = None

    def finish(self, result: RenderResult | None, error: RenderError | None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


class _WorkerDied(Exception):
    """The worker's stdout closed: the process exited or was killed."""


class RenderPool:
    """A fixed number of render workers fed from one bounded queue.

    Call :meth:`run` in a nursery (``await nursery.start(pool.run)``); it returns
    from ``start`` once every worker has loaded the bundle, or raises
    BundleLoadFailed. Cancelling ``run`` stops every worker.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._state = PoolState.UNOPENED
        self._job_ids = itertools.count(1)
        self._send, self._receive = trio.open_memory_channel[_Job](config.render_queue)
        self._worker_states = [WorkerState.STARTING] * config.render_workers
        self._restarts = 0
        self._renders = 0

    # -- the server's side ---------------------------------------------------

    async def render(self, url: str, deadline: float) -> RenderResult:
        """Render ``url`` on the next free worker, by ``deadline`` (trio time).

        Raises a RenderError subclass when there is no result. If the caller is
        cancelled, the job still runs to completion and its result is dropped.
        """
        if self._state is not PoolState.RUNNING:
            raise PoolClosed(f"render pool is {self._state.value}")
        job = _Job(next(self._job_ids), url, deadline)
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            raise PoolOverloaded(
                f"render queue is full ({self._config.render_queue} jobs); "
                "raise ENDDEL_RENDER_QUEUE or ENDDEL_RENDER_WORKERS"
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise PoolClosed("render pool is closed") from None

        await job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def statistics(self) -> PoolStatistics:
        states = self._worker_states
        return PoolStatistics(
            workers=len(states),
            ready_workers=sum(s in (WorkerState.IDLE, WorkerState.BUSY) for s in states),
            queued_jobs=self._send.statistics().current_buffer_used,
            restarts=self._restarts,
            renders=self._renders,
        )

    @property
    def state(self) -> PoolState:
        return self._state

    # -- supervision ---------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, report started once all are ready, supervise them."""
        if self._state is not PoolState.UNOPENED:
            raise RuntimeError(f"render pool is {self._state.value}, not unopened")
        try:
            await self._run_workers(task_status)
        finally:
            self._state = PoolState.CLOSED
            self._fail_queued_jobs()

    async def _run_workers(self, task_status: Any) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for slot in range(self._config.render_workers):
                    await nursery.start(self._supervise, slot)
                self._state = PoolState.RUNNING
                pool_log.info(
                    "render pool ready: %d workers, bundle %s",
                    self._config.render_workers,
                    self._config.bundle,
                )
                task_status.started()
        except BaseExceptionGroup as group:
            # Report a failed start as the one BundleLoadFailed it is, not as
            # the nested groups that the nurseries wrapped it in.
            failure = _only_leaf(group)
            if isinstance(failure, BundleLoadFailed):
                raise failure from None
            raise

    def _fail_queued_jobs(self) -> None:
        self._send.close()
        while True:
            try:
                job = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            job.finish(None, PoolClosed("render pool stopped"))

    async def _supervise(self, slot: int, *, task_status: Any) -> None:
        """Keep one worker slot filled: spawn, serve jobs, restart on exit."""
        backoff = RESTART_BACKOFF_MIN
        started = False
        while True:
            worker = _Worker(slot, self._command())
            ready_at = trio.current_time()
            try:
                await worker.start()
                if not started:
                    started = True
                    task_status.started()
                self._worker_states[slot] = WorkerState.IDLE
                ready_at = trio.current_time()
                reason = await self._serve(worker)
                if reason is None:
                    return
            except BundleLoadFailed:
                if not started:
                    raise
                reason = "the bundle failed to load"
            except _WorkerDied as death:
                if not started:
                    raise BundleLoadFailed(str(death)) from None
                reason = str(death)
            finally:
                self._worker_states[slot] = WorkerState.RESTARTING
                with trio.CancelScope(shield=True):
                    exit_code = await worker.stop()

            if trio.current_time() - ready_at > HEALTHY_AFTER:
                backoff = RESTART_BACKOFF_MIN
            self._restarts += 1
            pool_log.warning(
                "render worker %d (pid %s) exited with %s: %s; restarting in %.1f s",
                slot, worker.pid, exit_code, reason, backoff,
            )  # fmt: skip
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)

    async def _serve(self, worker: _Worker) -> str | None:
        """Feed jobs to one ready worker until it must be replaced; return why.

        Returns None when the queue closed, which means the pool is stopping.
        """
        async for job in self._receive:
            self._worker_states[worker.slot] = WorkerState.BUSY
            requeued = False
            try:
                await self._run_job(worker, job)
            except _WorkerDied as death:
                requeued = self._retry_or_fail(job, worker, str(death))
                return str(death)
            except RenderTimeout as timeout:
                job.finish(None, timeout)
                return f"render of {job.url} passed its deadline; worker killed"
            finally:
                self._worker_states[worker.slot] = WorkerState.IDLE
                if not requeued:
                    # Unfinished here only when cancelled: the pool is stopping.
                    job.finish(None, PoolClosed("render pool stopped during the render"))
        return None

    async def _run_job(self, worker: _Worker, job: _Job) -> None:
        remaining = job.deadline - trio.current_time()
        if remaining <= 0:
            job.finish(None, RenderTimeout(f"render of {job.url} timed out in the queue"))
            return
        job.attempts += 1
        with trio.move_on_at(job.deadline + KILL_GRACE):
            frame = await worker.request(job.job_id, {"url": job.url, "timeout": remaining})
            self._renders += 1
            _log_console(job.url, job.job_id, frame.meta.get("console"))
            job.finish(*_outcome(job, frame))
            return
        raise RenderTimeout(f"render of {job.url} timed out after {remaining:.1f} s")

    def _retry_or_fail(self, job: _Job, worker: _Worker, reason: str) -> bool:
        """Queue the job again if it has not been retried yet; return whether it was."""
        if trio.current_time() >= job.deadline:
            # Past its deadline the worker's watchdog ended it: the job itself
            # wedged V8, and running it again would wedge another worker.
            job.finish(None, RenderTimeout(f"render of {job.url} wedged its worker"))
            return False
        if job.attempts < 2:
            pool_log.warning(
                "render worker %d died rendering %s (job %d); retrying on another worker",
                worker.slot, job.url, job.job_id,
            )  # fmt: skip
            try:
                self._send.send_nowait(job)
                return True
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass
        job.finish(None, RenderFailed("WorkerDied", f"render worker died: {reason}"))
        return False

    def _command(self) -> list[str]:
        config = self._config
        command = [
            sys.executable, "-m", "workers",
            "--bundle", str(config.bundle),
            "--heap-bytes", str(config.v8_heap_bytes),
        ]  # fmt: skip
        command += ["--origin", config.public_origin, "--api-upstream", config.api_upstream]
        for host in sorted(config.fetch_allowed_hosts):
            command += ["--fetch-allow", host]
        if config.bundle_prelude is not None:
            command += ["--prelude", str(config.bundle_prelude)]
        return command


def _log_console(url: str, job_id: int, lines: object) -> None:
    """Log the console lines a worker collected during a render or a load."""
    if not isinstance(lines, list):
        return
    for line in lines:
        if isinstance(line, list) and len(line) == 2:
            level = _CONSOLE_LEVELS.get(str(line[0]), logging.INFO)
            render_log.log(
                level, "console.%s url=%s render=%d: %s", line[0], url, job_id, line[1]
            )


def _only_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The single exception inside nested groups, or None if there are several."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        if len(leaf.exceptions) != 1:
            return None
        leaf = leaf.exceptions[0]
    return leaf


def _outcome(job: _Job, frame: Frame) -> tuple[RenderResult | None, RenderError | None]:
    """Turn a RESULT frame into a result or an error, logging render errors."""
    meta = frame.meta
    error = meta.get("error")
    if error is None:
        try:
            return _result(meta, frame.body), None
        except (TypeError, ValueError) as invalid:
            error = {"name": "TypeError", "message": str(invalid), "stack": ""}
    if not isinstance(error, dict):
        error = {"name": "Error", "message": repr(error), "stack": ""}

    message = str(error.get("message", ""))
    if error.get("missing"):
        message += (
            f" (the global {error['missing']!r} is not provided by the render runtime;"
            " define it in ENDDEL_BUNDLE_PRELUDE or guard its use)"
        )
    failure = RenderFailed(
        str(error.get("name", "Error")), message, str(error.get("stack", ""))
    )
    if failure.name == "TimeoutError":
        render_log.error("render timed out url=%s render=%d", job.url, job.job_id)
        return None, RenderTimeout(failure.message)
    render_log.error(
        "render failed url=%s render=%d: %s: %s\n%s",
        job.url, job.job_id, failure.name, failure.message, failure.stack,
    )  # fmt: skip
    return None, failure


def _result(meta: dict[str, Any], html: bytes) -> RenderResult:
    """Check the fields of a renderPage object result; raise on invalid ones."""
    status = meta.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ValueError(f"renderPage returned status {status!r}; expected 200 to 599")
    head = meta.get("head", "")
    if not isinstance(head, str):
        raise TypeError(f"renderPage returned head of type {type(head).__name__}")
    ttl = meta.get("ttl")
    if ttl is not None and (
        not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl < 0
    ):
        raise ValueError(f"renderPage returned ttl {ttl!r}; expected seconds >= 0")
    return RenderResult(
        status=status,
        headers=_headers(meta.get("headers")),
        html=html,
        head=head,
        cache=meta.get("cache", True) is not False,
        ttl=None if ttl is None else float(ttl),
        seconds=float(meta.get("seconds", 0.0)),
    )


def _headers(raw: object) -> tuple[tuple[str, str], ...]:
    """Accept headers as an object of name to value(s) or a list of pairs."""
    if raw is None:
        return ()
    pairs: Sequence[object]
    if isinstance(raw, dict):
        pairs = [
            (name, item)
            for name, value in raw.items()
            for item in (value if isinstance(value, list) else [value])
        ]
    elif isinstance(raw, list):
        pairs = raw
    else:
        raise TypeError("renderPage headers must be an object or a list of pairs")

    checked = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise TypeError(f"renderPage header {pair!r} is not a [name, value] pair")
        name, value = str(pair[0]), str(pair[1])
        if not name or any(c in name for c in ":\r\n\0 ") or any(c in value for c in "\r\n\0"):
            raise ValueError(f"renderPage header {name!r} has an invalid name or value")
        checked.append((name, value))
    return tuple(checked)


class _Worker:
    """One render worker process and the pipe pair it is driven through."""

    def __init__(self, slot: int, command: list[str]) -> None:
        self.slot = slot
        self._command = command
        self._process: trio.Process | None = None
        self._reader = FrameReader()
        self._frames: list[Frame] = []

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Spawn the process and wait for READY; raise BundleLoadFailed if it fails."""
        self._process = await trio.lowlevel.open_process(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        with trio.move_on_after(LOAD_TIMEOUT) as scope:
            frame = await self._next_frame()
        if scope.cancelled_caught:
            raise BundleLoadFailed(f"render worker did not load within {LOAD_TIMEOUT} s")
        _log_console("(load)", 0, frame.meta.get("console"))
        if frame.kind is Kind.LOAD_FAILED:
            raise BundleLoadFailed(str(frame.meta.get("error", "unknown error")))
        if frame.kind is not Kind.READY:
            raise BundleLoadFailed(f"render worker sent {frame.kind.name} before READY")
        pool_log.info("render worker %d started (pid %s)", self.slot, self.pid)

    async def request(self, job_id: int, meta: dict[str, Any]) -> Frame:
        """Send one RENDER frame and wait for its RESULT."""
        assert self._process is not None and self._process.stdin is not None
        try:
            await self._process.stdin.send_all(encode_frame(Kind.RENDER, job_id, meta))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _WorkerDied("its stdin closed") from None
        frame = await self._next_frame()
        if frame.kind is not Kind.RESULT or frame.job_id != job_id:
            raise _WorkerDied(f"it sent {frame.kind.name} for job {frame.job_id}")
        return frame

    async def _next_frame(self) -> Frame:
        assert self._process is not None and self._process.stdout is not None
        while not self._frames:
            data = await self._process.stdout.receive_some(_READ_BYTES)
            if not data:
                raise _WorkerDied("its output closed")
            try:
                self._frames.extend(self._reader.feed(data))
            except ProtocolError as error:
                raise _WorkerDied(f"it sent an invalid frame: {error}") from None
        return self._frames.pop(0)

    async def stop(self) -> int | None:
        """Close stdin so the worker closes V8 and exits; kill it if it does not."""
        process = self._process
        if process is None:
            return None
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(STOP_TIMEOUT):
            return await process.wait()
        pool_log.warning("render worker %d (pid %s) did not stop; killing", self.slot, self.pid)
        process.kill()
        return await process.wait()
