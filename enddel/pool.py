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

A worker is *retired* after ``ENDDEL_WORKER_MAX_RENDERS`` renders, when its V8
heap passes ``ENDDEL_WORKER_MAX_HEAP_MB``, after a render that ran out of heap,
and after a bundle reload. Its successor is started first, and the slot hands
over between jobs once the successor is ready, so a slot never stands empty.
Until then the old worker keeps taking jobs, except after running out of heap
or a reload (a job keyed by the new version must not render the old bundle).
Replacements load one at a time, so loading V8 leaves a core for rendering.
Each result names the bundle version that rendered it, and the page is stored
under that version's key.

Workers load a private copy of the bundle (a *snapshot*), never the deployed
file itself: a worker restarted after a crash must run the bundle that the
page cache keys were computed for, not whatever the deploy has written since.
:meth:`RenderPool.reload` takes a new snapshot, loads it in a candidate worker,
renders the check URLs, and only then switches the pool to it.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import xxhash

from enddel import metrics
from enddel.config import Config
from enddel.logs import pool_log, render_log
from workers.protocol import Frame, FrameReader, Kind, ProtocolError, encode_frame
from workers.runtime import read_baseline

__all__ = [
    "BundleLoadFailed",
    "BundleRejected",
    "BundleSnapshot",
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
MIB = 1024 * 1024

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


class BundleRejected(Exception):
    """A reloaded bundle failed to load or to render a check URL; the old one serves."""


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
    """The result of ``renderPage`` for one URL, checked and normalised."""

    status: int
    headers: tuple[tuple[str, str], ...]
    html: bytes
    head: str
    cache: bool
    ttl: float | None
    seconds: float
    #: Version of the bundle that rendered the page: the cache key to store it
    #: under, which may be newer than the version the request was keyed with.
    bundle_version: str = ""


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    workers: int
    ready_workers: int
    #: Workers waiting for a job; warm-up renders only when one is.
    idle_workers: int
    queued_jobs: int
    restarts: int
    #: Workers replaced between jobs: render or heap limit, or a reload.
    retirements: int
    renders: int
    bundle_version: str


@dataclass(frozen=True, slots=True)
class BundleSnapshot:
    """A private copy of the bundle (and prelude) that workers load."""

    path: Path
    prelude: Path | None
    #: Digest of the baseline, prelude and bundle: part of every cache key.
    version: str


def bundle_version(bundle: bytes, prelude: bytes | None) -> str:
    """Digest of everything a render runs: a new bundle never serves old pages."""
    digest = xxhash.xxh3_64()
    digest.update(read_baseline().encode())
    digest.update(bundle)
    if prelude is not None:
        digest.update(prelude)
    return digest.hexdigest()


def take_snapshot(config: Config, folder: Path) -> BundleSnapshot:
    """Copy the configured bundle and prelude into ``folder``; raise OSError."""
    bundle = config.bundle.read_bytes()
    prelude = None
    if config.bundle_prelude is not None:
        prelude = config.bundle_prelude.read_bytes()
    version = bundle_version(bundle, prelude)
    target = folder / version
    target.mkdir(exist_ok=True)
    (target / "bundle.js").write_bytes(bundle)
    prelude_path = None
    if prelude is not None:
        prelude_path = target / "prelude.js"
        prelude_path.write_bytes(prelude)
    return BundleSnapshot(target / "bundle.js", prelude_path, version)


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
        self._retirements = 0
        self._renders = 0
        self._snapshots: Path | None = None
        self._bundle: BundleSnapshot | None = None
        #: Bumped by each accepted reload; a worker of an older generation retires.
        self._generation = 0
        #: Held while a worker loads V8 and the bundle outside the first start,
        #: so replacements load one at a time and leave a core for rendering.
        self._starting = trio.Lock()
        self._reload_lock = trio.Lock()
        #: Ready workers waiting to take over a slot, by slot.
        self._successors: dict[int, _Worker] = {}
        #: Slots whose successor is loading.
        self._preparing: set[int] = set()
        #: The nursery that supervises the slots; None when the pool is not running.
        self._nursery: trio.Nursery | None = None
        #: Cancel scopes of supervisors waiting for a job, woken to retire.
        self._idle_scopes: set[trio.CancelScope] = set()

    # -- the server's side ---------------------------------------------------

    async def render(self, url: str, deadline: float) -> RenderResult:
        """Render ``url`` on the next free worker, by ``deadline`` (trio time).

        Raises a RenderError subclass when there is no result. If the caller is
        cancelled, the job still runs to completion and its result is dropped.
        """
        if self._state is not PoolState.RUNNING:
            raise PoolClosed(f"render pool is {self._state.value}")
        job = _Job(next(self._job_ids), url, deadline)
        queued_at = trio.current_time()
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            metrics.count_render_outcome("overloaded")
            raise PoolOverloaded(
                f"render queue is full ({self._config.render_queue} jobs); "
                "raise ENDDEL_RENDER_QUEUE or ENDDEL_RENDER_WORKERS"
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise PoolClosed("render pool is closed") from None

        await job.done.wait()
        metrics.record_render(queued_at, job.result, job.error)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def statistics(self) -> PoolStatistics:
        states = self._worker_states
        return PoolStatistics(
            workers=len(states),
            ready_workers=sum(
                s in (WorkerState.IDLE, WorkerState.BUSY) for s in states
            ),
            idle_workers=sum(s is WorkerState.IDLE for s in states),
            queued_jobs=self._send.statistics().current_buffer_used,
            restarts=self._restarts,
            retirements=self._retirements,
            renders=self._renders,
            bundle_version=self.bundle_version,
        )

    @property
    def bundle_version(self) -> str:
        """Version of the bundle that new renders run; empty before start."""
        return "" if self._bundle is None else self._bundle.version

    @property
    def state(self) -> PoolState:
        return self._state

    # -- supervision ---------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, report started once all are ready, supervise them."""
        if self._state is not PoolState.UNOPENED:
            raise RuntimeError(f"render pool is {self._state.value}, not unopened")
        with tempfile.TemporaryDirectory(prefix="enddel-bundles-") as folder:
            self._snapshots = Path(folder)
            try:
                self._bundle = take_snapshot(self._config, self._snapshots)
            except OSError as error:
                raise BundleLoadFailed(f"cannot read the bundle: {error}") from None
            try:
                await self._run_workers(task_status)
            finally:
                self._state = PoolState.CLOSED
                self._fail_queued_jobs()

    async def reload(self, check_urls: Sequence[str]) -> str:
        """Switch the pool to the bundle now on disk; return its version.

        The new bundle is loaded in a candidate worker that renders each of
        ``check_urls``; a load failure, a render error or a 5xx status raises
        BundleRejected and the old bundle keeps serving. Once the candidate
        passes, a successor running the new bundle is started for every slot
        while the old workers keep serving; then the pool switches, and each
        slot hands over to its successor between jobs. Returns the current
        version unchanged when the bundle on disk is the one already serving.
        If cancelled, the successors started so far are stopped.
        """
        if self._state is not PoolState.RUNNING or self._snapshots is None:
            raise PoolClosed(f"render pool is {self._state.value}")
        async with self._reload_lock:
            try:
                snapshot = take_snapshot(self._config, self._snapshots)
            except OSError as error:
                raise BundleRejected(f"cannot read the bundle: {error}") from None
            if self._bundle is not None and snapshot.version == self._bundle.version:
                return snapshot.version

            successors = await self._start_successors(snapshot, check_urls)
            self._bundle = snapshot
            self._generation += 1
            for successor in successors:
                self._install_successor(successor)
            pool_log.info(
                "render pool switching to bundle version %s", snapshot.version
            )
            return snapshot.version

    async def _start_successors(
        self, snapshot: BundleSnapshot, check_urls: Sequence[str]
    ) -> list[_Worker]:
        """Check the new bundle, then start one worker of it per slot, one at a time.

        The candidate that passed the check renders for slot 0, so a reload
        loads V8 once per slot, not once more.
        """
        generation = self._generation + 1
        successors = [await self._check_candidate(snapshot, check_urls)]
        try:
            for slot in range(1, self._config.render_workers):
                async with self._starting:
                    worker = _Worker(
                        slot, self._command(snapshot), generation, snapshot.version
                    )
                    successors.append(worker)
                    await worker.start()
        except (BundleLoadFailed, _WorkerDied) as error:
            await _stop_all(successors)
            raise BundleRejected(f"the bundle failed to load: {error}") from None
        except BaseException:
            await _stop_all(successors)
            raise
        return successors

    async def _check_candidate(
        self, snapshot: BundleSnapshot, check_urls: Sequence[str]
    ) -> _Worker:
        """Load ``snapshot`` and render ``check_urls``; return the loaded worker."""
        command = self._command(snapshot)
        candidate = _Worker(0, command, self._generation + 1, snapshot.version)
        try:
            async with self._starting:
                await candidate.start()
            for job_id, url in enumerate(check_urls, start=1):
                deadline = trio.current_time() + self._config.render_timeout
                result, error = await self._check_render(
                    candidate, job_id, url, deadline
                )
                if error is not None:
                    raise BundleRejected(f"check render of {url} failed: {error}")
                if result is not None and result.status >= 500:
                    raise BundleRejected(
                        f"check render of {url} returned status {result.status}"
                    )
        except (BundleLoadFailed, _WorkerDied) as error:
            await _stop_all([candidate])
            raise BundleRejected(f"the bundle failed to load: {error}") from None
        except BaseException:
            await _stop_all([candidate])
            raise
        return candidate

    async def _check_render(
        self, candidate: _Worker, job_id: int, url: str, deadline: float
    ) -> tuple[RenderResult | None, RenderError | None]:
        job = _Job(job_id, url, deadline)
        with trio.move_on_at(deadline + KILL_GRACE):
            remaining = deadline - trio.current_time()
            frame = await candidate.request(job_id, {"url": url, "timeout": remaining})
            return _outcome(job, frame, candidate.version)
        return None, RenderTimeout(f"check render of {url} passed its deadline")

    def _wake_idle(self) -> None:
        for scope in self._idle_scopes:
            scope.cancel()

    async def _run_workers(self, task_status: Any) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
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
        finally:
            self._nursery = None
            successors = list(self._successors.values())
            self._successors.clear()
            await _stop_all(successors)

    def _fail_queued_jobs(self) -> None:
        self._send.close()
        while True:
            try:
                job = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            job.finish(None, PoolClosed("render pool stopped"))

    # -- one slot ------------------------------------------------------------

    async def _supervise(self, slot: int, *, task_status: Any) -> None:
        """Keep one worker slot filled: spawn, serve jobs, hand over, restart."""
        worker = self._new_worker(slot)
        try:
            await worker.start()
        except _WorkerDied as death:
            await _stop_all([worker])
            raise BundleLoadFailed(str(death)) from None
        except BaseException:
            await _stop_all([worker])
            raise
        task_status.started()

        backoff = RESTART_BACKOFF_MIN
        try:
            while True:
                self._worker_states[slot] = WorkerState.IDLE
                ready_at = trio.current_time()
                reason = await self._serve(worker)
                if reason is None:
                    return
                if isinstance(reason, _Retire):
                    worker = self._hand_over(worker, reason)
                    continue

                self._worker_states[slot] = WorkerState.RESTARTING
                with trio.CancelScope(shield=True):
                    exit_code = await worker.stop()
                if trio.current_time() - ready_at > HEALTHY_AFTER:
                    backoff = RESTART_BACKOFF_MIN
                self._restarts += 1
                metrics.count_worker_restart("exited")
                pool_log.warning(
                    "render worker %d (pid %s) exited with %s: %s; "
                    "restarting in %.1f s",
                    slot, worker.pid, exit_code, reason, backoff,
                )  # fmt: skip
                worker, backoff = await self._restart(slot, backoff)
        finally:
            self._worker_states[slot] = WorkerState.STOPPED
            await _stop_all([worker])

    def _hand_over(self, worker: _Worker, reason: _Retire) -> _Worker:
        """Put the slot's ready successor in place; stop ``worker`` meanwhile."""
        successor = self._successors.pop(worker.slot)
        self._retirements += 1
        metrics.count_worker_restart("retired")
        pool_log.info(
            "retiring render worker %d (pid %s): %s; pid %s takes over",
            worker.slot, worker.pid, reason, successor.pid,
        )  # fmt: skip
        self._stop_soon(worker)
        return successor

    async def _restart(self, slot: int, backoff: float) -> tuple[_Worker, float]:
        """Start a worker in place of a dead one; return it and the next backoff."""
        while True:
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
            successor = self._successors.pop(slot, None)
            if successor is not None and successor.generation == self._generation:
                return successor, backoff
            if successor is not None:
                self._stop_soon(successor)
            worker = self._new_worker(slot)
            try:
                async with self._starting:
                    await worker.start()
                return worker, backoff
            except (BundleLoadFailed, _WorkerDied) as error:
                await _stop_all([worker])
                pool_log.warning(
                    "render worker %d failed to start: %s; retrying in %.1f s",
                    slot, error, backoff,
                )  # fmt: skip
            except BaseException:
                await _stop_all([worker])
                raise

    def _new_worker(self, slot: int) -> _Worker:
        return _Worker(slot, self._command(), self._generation, self.bundle_version)

    # -- successors ----------------------------------------------------------

    def _prepare_successor_soon(self, slot: int) -> None:
        """Start loading a successor for ``slot`` unless one is loading or ready."""
        successor = self._successors.get(slot)
        if successor is not None and successor.generation == self._generation:
            return
        if slot in self._preparing or self._nursery is None:
            return
        self._preparing.add(slot)
        self._nursery.start_soon(self._prepare_successor, slot)

    async def _prepare_successor(self, slot: int) -> None:
        """Load a successor, retrying with backoff, and install it for ``slot``."""
        backoff = RESTART_BACKOFF_MIN
        try:
            while True:
                worker = self._new_worker(slot)
                try:
                    # One worker loads at a time: loading V8 takes a core.
                    async with self._starting:
                        await worker.start()
                    break
                except (BundleLoadFailed, _WorkerDied) as error:
                    await _stop_all([worker])
                    pool_log.warning(
                        "successor for render worker %d failed to start: %s; "
                        "retrying in %.1f s",
                        slot, error, backoff,
                    )  # fmt: skip
                except BaseException:
                    await _stop_all([worker])
                    raise
                await trio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
        finally:
            self._preparing.discard(slot)
        self._install_successor(worker)

    def _install_successor(self, worker: _Worker) -> None:
        """Make ``worker`` the next one for its slot, unless a newer one is there."""
        current = self._successors.get(worker.slot)
        if worker.generation != self._generation or (
            current is not None and current.generation == self._generation
        ):
            # Loaded for a bundle that a reload has since replaced.
            self._stop_soon(worker)
            return
        if current is not None:
            self._stop_soon(current)
        self._successors[worker.slot] = worker
        self._wake_idle()

    def _stop_soon(self, worker: _Worker) -> None:
        if self._nursery is None:
            # The pool is stopping; run's cleanup stops what is left.
            return
        self._nursery.start_soon(_stop_all, [worker])

    def _retire_reason(self, worker: _Worker) -> _Retire | None:
        limits = self._config
        if worker.generation != self._generation:
            return _RetireNow("the bundle was reloaded")
        if worker.out_of_memory:
            return _RetireNow("a render ran out of V8 heap")
        if limits.worker_max_renders and worker.renders >= limits.worker_max_renders:
            return _Retire(
                f"it reached {worker.renders} renders "
                f"(ENDDEL_WORKER_MAX_RENDERS={limits.worker_max_renders})"
            )
        max_heap = limits.worker_max_heap_bytes
        if max_heap and worker.heap_bytes >= max_heap:
            return _Retire(f"its V8 heap reached {worker.heap_bytes // MIB} MB")
        return None

    async def _next_job(self, worker: _Worker) -> _Job | _Retire | None:
        """Wait for a job, or for the successor to be ready; None when the queue closed.

        A worker due for retirement keeps taking jobs while its successor
        loads, so the slot never stands empty. Only a worker of the old bundle
        or one that ran out of heap stops taking jobs at once: a job keyed by
        the new version must not be rendered by the old bundle, and V8 after
        an out-of-memory stop is not trusted to render again.
        """
        while True:
            reason = self._retire_reason(worker)
            if reason is not None:
                successor = self._successors.get(worker.slot)
                if successor is not None and successor.generation == self._generation:
                    return reason
                self._prepare_successor_soon(worker.slot)
            with trio.CancelScope() as scope:
                self._idle_scopes.add(scope)
                try:
                    if isinstance(reason, _RetireNow):
                        await trio.sleep_forever()
                    return await self._receive.receive()
                except trio.EndOfChannel:
                    return None
                finally:
                    self._idle_scopes.discard(scope)

    async def _serve(self, worker: _Worker) -> str | _Retire | None:
        """Feed jobs to one ready worker until it must be replaced; return why.

        Returns None when the queue closed, which means the pool is stopping.
        """
        while True:
            job = await self._next_job(worker)
            if not isinstance(job, _Job):
                return job
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
                    job.finish(
                        None, PoolClosed("render pool stopped during the render")
                    )

    async def _run_job(self, worker: _Worker, job: _Job) -> None:
        remaining = job.deadline - trio.current_time()
        if remaining <= 0:
            job.finish(
                None, RenderTimeout(f"render of {job.url} timed out in the queue")
            )
            return
        job.attempts += 1
        with trio.move_on_at(job.deadline + KILL_GRACE):
            frame = await worker.request(
                job.job_id, {"url": job.url, "timeout": remaining}
            )
            self._renders += 1
            worker.count_render(frame.meta)
            metrics.record_worker_heap(worker.slot, worker.heap_bytes)
            _log_console(job.url, job.job_id, frame.meta.get("console"))
            job.finish(*_outcome(job, frame, worker.version))
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
                "render worker %d died rendering %s (job %d); "
                "retrying on another worker",
                worker.slot, job.url, job.job_id,
            )  # fmt: skip
            try:
                self._send.send_nowait(job)
                return True
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass
        job.finish(None, RenderFailed("WorkerDied", f"render worker died: {reason}"))
        return False

    def _command(self, snapshot: BundleSnapshot | None = None) -> list[str]:
        config = self._config
        snapshot = self._bundle if snapshot is None else snapshot
        assert snapshot is not None, "run() takes the snapshot before any worker starts"
        command = [
            sys.executable, "-m", "workers",
            "--bundle", str(snapshot.path), "--bundle-name", str(config.bundle),
            "--heap-bytes", str(config.v8_heap_bytes),
        ]  # fmt: skip
        command += [
            "--origin",
            config.public_origin,
            "--api-upstream",
            config.api_upstream,
        ]
        for host in sorted(config.fetch_allowed_hosts):
            command += ["--fetch-allow", host]
        if snapshot.prelude is not None and config.bundle_prelude is not None:
            command += ["--prelude", str(snapshot.prelude)]
            command += ["--prelude-name", str(config.bundle_prelude)]
        return command


class _Retire(str):
    """Why a worker is replaced by a ready successor, without backoff."""


class _RetireNow(_Retire):
    """A reason to retire that also stops the worker from taking more jobs."""


async def _stop_all(workers: Sequence[_Worker]) -> None:
    """Stop workers, even while the caller is being cancelled."""
    with trio.CancelScope(shield=True):
        for worker in workers:
            await worker.stop()


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
    """Return the one exception inside nested groups, or None if there are several."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        if len(leaf.exceptions) != 1:
            return None
        leaf = leaf.exceptions[0]
    return leaf


def _outcome(
    job: _Job, frame: Frame, version: str
) -> tuple[RenderResult | None, RenderError | None]:
    """Turn a RESULT frame into a result or an error, logging render errors."""
    meta = frame.meta
    error = meta.get("error")
    if error is None:
        try:
            return _result(meta, frame.body, version), None
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


def _result(meta: dict[str, Any], html: bytes, version: str) -> RenderResult:
    """Check the fields of a renderPage object result; raise on invalid ones."""
    status = meta.get("status", 200)
    if (
        not isinstance(status, int)
        or isinstance(status, bool)
        or not 200 <= status <= 599
    ):
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
        bundle_version=version,
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
        if (
            not name
            or any(c in name for c in ":\r\n\0 ")
            or any(c in value for c in "\r\n\0")
        ):
            raise ValueError(f"renderPage header {name!r} has an invalid name or value")
        checked.append((name, value))
    return tuple(checked)


class _Worker:
    """One render worker process and the pipe pair it is driven through."""

    def __init__(
        self, slot: int, command: list[str], generation: int, version: str
    ) -> None:
        self.slot = slot
        self.generation = generation
        #: The bundle version this worker loaded, named in its results.
        self.version = version
        self.renders = 0
        self.heap_bytes = 0
        self.out_of_memory = False
        self._command = command
        self._process: trio.Process | None = None
        self._reader = FrameReader()
        self._frames: list[Frame] = []

    def count_render(self, meta: dict[str, Any]) -> None:
        """Record one finished render and the heap size the worker reported."""
        self.renders += 1
        heap = meta.get("heap")
        if isinstance(heap, int):
            self.heap_bytes = heap
        error = meta.get("error")
        if isinstance(error, dict) and error.get("name") == "OutOfMemory":
            self.out_of_memory = True

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
            raise BundleLoadFailed(
                f"render worker did not load within {LOAD_TIMEOUT} s"
            )
        _log_console("(load)", 0, frame.meta.get("console"))
        if frame.kind is Kind.LOAD_FAILED:
            raise BundleLoadFailed(str(frame.meta.get("error", "unknown error")))
        if frame.kind is not Kind.READY:
            raise BundleLoadFailed(f"render worker sent {frame.kind.name} before READY")
        pool_log.info("render worker %d started (pid %s)", self.slot, self.pid)

    async def request(self, job_id: int, meta: dict[str, Any]) -> Frame:
        """Send one RENDER frame and wait for its RESULT."""
        assert self._process is not None
        assert self._process.stdin is not None
        try:
            await self._process.stdin.send_all(encode_frame(Kind.RENDER, job_id, meta))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _WorkerDied("its stdin closed") from None
        frame = await self._next_frame()
        if frame.kind is not Kind.RESULT or frame.job_id != job_id:
            raise _WorkerDied(f"it sent {frame.kind.name} for job {frame.job_id}")
        return frame

    async def _next_frame(self) -> Frame:
        assert self._process is not None
        assert self._process.stdout is not None
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
        pool_log.warning(
            "render worker %d (pid %s) did not stop; killing", self.slot, self.pid
        )
        process.kill()
        return await process.wait()
