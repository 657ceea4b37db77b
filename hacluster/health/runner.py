"""Run health checks on their intervals and keep one CheckReport per check.

All checks share one asyncio loop in one daemon thread; each check is its own task, so a
target that hangs costs that check its timeout and nothing else. Blocking probes (DICOM)
run in daemon threads of their own that stop() does not wait for: their libraries are given
the check timeout too, so the threads end soon after on their own.

Hysteresis: a check starts UNKNOWN, becomes PASSING after `rise` successes in a row and
FAILING after `fall` failures in a row; anything shorter leaves the state as it was, so
one lost packet does not move traffic. Latency, error and output always show the last
attempt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from hacluster.health import module_for
from hacluster.health.base import Outcome
from hacluster.health.spec import AnyCheck, CheckSpec
from hacluster.model import CheckReport, CheckState

log = logging.getLogger(__name__)

FIRST_RUN_JITTER_MAX_S = 1.0  # spread the first attempts; later ones keep that phase
# The probe enforces its own timeout and says where it hung; this backstop only catches a
# probe that fails to, so it is longer (and leaves room for a one-time library import).
BACKSTOP_GRACE_S = 1.0
_FLUSH_ROUNDS = 5
_STOP_WAIT_S = 2.0  # exec probes reap their killed process on cancel: bounded, see exec_check

OnChange = Callable[[tuple[CheckReport, ...]], None]


@dataclass
class _Check:
    """Mutable per-check state; only touched with HealthRunner._lock held."""

    spec: AnyCheck
    host: str
    report: CheckReport
    successes: int = 0  # in a row
    failures: int = 0  # in a row


RUN_ONCE_SLACK_S = 5.0  # run_once() waits the check's timeout plus this, then gives up


class HealthRunner:
    """Runs the checks; reports() is the current view, on_change says when it moved.

    on_change(reports) runs on the runner's thread (or on the caller's, for run_once()
    before start()) after any check's state or error text changed; not for latency alone,
    and not for the initial all-UNKNOWN view, which reports() gives at once. It must not
    block: hand the tuple over and return.
    """

    def __init__(self, specs: Sequence[CheckSpec], default_host: str, on_change: OnChange | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate check names: {', '.join(dupes)}")
        self._on_change = on_change
        self._clock = clock
        self._wall = wall
        self._default_host = default_host
        self._lock = threading.Lock()
        self._checks: dict[str, _Check] = {s.name: self._new_check(s) for s in specs}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # only touched on the runner's loop
        self._reports = tuple(c.report for c in self._checks.values())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # ------------------------------------------------------------------ public

    def reports(self) -> tuple[CheckReport, ...]:
        """The latest report of every check, in spec order. Safe from any thread."""
        with self._lock:
            return self._reports

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("HealthRunner already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="hacluster-health",
                                        daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel every check and join the thread. Prompt: nothing waits for a hung target."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop already closed
        if thread is not None:
            thread.join(timeout)

    def update(self, specs: Sequence[CheckSpec], timeout: float = 5.0) -> None:
        """Run `specs` from now on (a config reload): removed checks stop, added ones start
        (UNKNOWN until rise/fall), changed ones start over; unchanged ones keep running
        with their state. Returns once the runner's loop made the switch."""
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate check names")
        loop = self._loop
        if loop is None or not loop.is_running():
            self._swap(specs)
            return
        done = concurrent.futures.Future[None]()

        def switch() -> None:
            try:
                for name in self._swap(specs):
                    self._tasks[name] = asyncio.create_task(self._every(self._checks[name]),
                                                            name=f"check {name}")
                done.set_result(None)
            except Exception as e:  # noqa: BLE001 - handed to the caller
                done.set_exception(e)
        loop.call_soon_threadsafe(switch)
        done.result(timeout)
        if self._on_change is not None:
            self._on_change(self.reports())

    def _swap(self, specs: Sequence[CheckSpec]) -> list[str]:
        """Replace the check set; cancel the tasks of removed and changed checks; return
        the names that need a task (added and changed)."""
        with self._lock:
            old = self._checks
            keep = {s.name: old[s.name] for s in specs if s.name in old and old[s.name].spec == s}
            self._checks = {s.name: keep.get(s.name) or self._new_check(s) for s in specs}
            self._reports = tuple(c.report for c in self._checks.values())
        for name in [n for n in self._tasks if n not in keep]:
            self._tasks.pop(name).cancel()
        return [s.name for s in specs if s.name not in keep]

    def _new_check(self, s: CheckSpec) -> _Check:
        host = s.host or self._default_host
        target = module_for(s.kind).target(s, host)
        return _Check(s, host, CheckReport(name=s.name, kind=s.kind, target=target,
                                           state=CheckState.UNKNOWN, latency_ms=None, error=""))

    def run_once(self, name: str) -> CheckReport:
        """Run one attempt of a check now and apply it, from any thread but the runner's."""
        if self._thread is threading.current_thread():
            raise RuntimeError("run_once() would deadlock on the runner thread; await attempt()")
        loop = self._loop
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.attempt(name), loop)
            # Bounded: stop() closes the loop without running this task to its end, and a
            # caller must not wait forever for a result that will never come.
            spec = self._checks[name].spec
            try:
                return future.result(spec.timeout_ms / 1000 + RUN_ONCE_SLACK_S)
            except concurrent.futures.CancelledError:
                raise RuntimeError(f"check {name}: cancelled (the runner is stopping)") from None
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise RuntimeError(f"check {name}: no result (the runner is stopping or "
                                   "overloaded)") from None
        return asyncio.run(self.attempt(name))

    async def attempt(self, name: str) -> CheckReport:
        """One attempt of a check in the caller's loop; the result goes through rise/fall."""
        check = self._checks[name]
        return self._record(check, await self._probe(check))

    # ------------------------------------------------------------------ internals

    def _main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        # For getaddrinfo of checks that name a host by DNS name.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="hacluster-dns")
        loop.set_default_executor(pool)
        self._loop = loop
        self._stop = asyncio.Event()
        try:
            loop.call_soon(ready.set)
            loop.run_until_complete(self._serve(self._stop))
        finally:
            ready.set()
            # Let the callbacks the cancelled checks left behind run (a killed command's
            # pipes and subprocess transport close in callbacks): a transport collected
            # after the loop closed cannot close any more.
            for _ in range(_FLUSH_ROUNDS):
                loop.run_until_complete(asyncio.sleep(0.01))
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Not the loop's shutdown_default_executor(): it joins the threads, and a
            # lookup may still be waiting out an unreachable DNS server.
            pool.shutdown(wait=False, cancel_futures=True)
            loop.close()

    async def _serve(self, stop: asyncio.Event) -> None:
        self._tasks = {c.spec.name: asyncio.create_task(self._every(c), name=f"check {c.spec.name}")
                       for c in self._checks.values()}
        try:
            await stop.wait()
        finally:
            # Every task of this loop, including run_once() attempts in flight: cancelled
            # and given a moment to clean up (an exec check kills and reaps its process),
            # rather than left for the garbage collector after the loop has closed.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=_STOP_WAIT_S)

    async def _every(self, check: _Check) -> None:
        interval = check.spec.interval_ms / 1000
        await asyncio.sleep(random.uniform(0, min(interval, FIRST_RUN_JITTER_MAX_S)))
        while True:
            due = self._clock() + interval
            self._record(check, await self._probe(check))
            await asyncio.sleep(max(0.0, due - self._clock()))

    async def _probe(self, check: _Check) -> Outcome:
        spec = check.spec
        try:
            return await asyncio.wait_for(module_for(spec.kind).probe(spec, check.host),
                                          spec.timeout_ms / 1000 + BACKSTOP_GRACE_S)
        except TimeoutError:
            return Outcome(False, None, f"timed out after {spec.timeout_ms} ms")
        except Exception as e:  # a probe bug must not end the check's task
            log.exception("check %s: probe raised", spec.name)
            return Outcome(False, None, f"probe error: {type(e).__name__}: {e}")

    def _record(self, check: _Check, outcome: Outcome) -> CheckReport:
        """Apply one outcome under rise/fall; tell on_change if state or error changed."""
        spec = check.spec
        with self._lock:
            old = check.report
            if outcome.ok:
                check.successes, check.failures = check.successes + 1, 0
                reached = check.successes >= spec.rise
                state = CheckState.PASSING if reached else old.state
            else:
                check.failures, check.successes = check.failures + 1, 0
                reached = check.failures >= spec.fall
                state = CheckState.FAILING if reached else old.state
            changed_at = self._wall() if state != old.state else old.changed_at
            check.report = replace(old, state=state, latency_ms=outcome.latency_ms,
                                   error=outcome.error, output=outcome.output, changed_at=changed_at)
            self._reports = after = tuple(c.report for c in self._checks.values())
            news = (state, outcome.error) != (old.state, old.error)
        if state != old.state:
            log.info("check %s: %s -> %s%s", spec.name, old.state, state,
                     f" ({outcome.error})" if outcome.error else "")
        if news and self._on_change is not None:
            try:
                self._on_change(after)
            except Exception:
                log.exception("health on_change callback failed")
        return check.report
