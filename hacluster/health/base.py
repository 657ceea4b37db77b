"""What every probe shares: the Outcome it returns, its time bound, and error wording.

A probe is `async def probe(spec, host) -> Outcome`. It never raises for a failing target:
refusals, timeouts and bad answers become an Outcome with a short, stable error text. The
text must not carry per-attempt data (latencies, random ids), because the runner treats a
changed error as news worth gossiping.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    latency_ms: float | None  # time until the target answered; None when it never did
    error: str  # "" when ok
    output: str = ""  # exec: captured stdout+stderr, truncated


class Attempt:
    """One probe run: its start time and the step it is in, so a timeout can say where."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.step = "connecting"

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def ok(self, output: str = "") -> Outcome:
        return Outcome(True, self.elapsed_ms(), "", output)

    def answered_bad(self, error: str, output: str = "") -> Outcome:
        """The target answered, but not as a healthy one does: the latency still counts."""
        return Outcome(False, self.elapsed_ms(), error, output)

    @staticmethod
    def failed(error: str, output: str = "") -> Outcome:
        return Outcome(False, None, error, output)


async def bounded(timeout_ms: int, run: Callable[[Attempt], Awaitable[Outcome]]) -> Outcome:
    """Run one attempt within timeout_ms; turn a timeout or an OS error into an Outcome.

    The runner adds its own wait_for as a backstop, but the probe keeps the timeout itself so
    that it can say which step hung ("timed out after 500 ms waiting for the ACK").
    """
    attempt = Attempt()
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            return await run(attempt)
    except TimeoutError:
        return Attempt.failed(f"timed out after {timeout_ms} ms {attempt.step}")
    except (OSError, EOFError) as e:
        return Attempt.failed(describe_error(e))
    except (ValueError, UnicodeError) as e:  # e.g. a name the IDNA codec refuses
        return Attempt.failed(describe_error(e))


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EPIPE: "connection closed by peer",
    errno.EADDRNOTAVAIL: "address not available",
}


def describe_error(e: BaseException) -> str:
    """A short human text for an exception met while probing."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {e.verify_message or e.reason}"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or e}"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host: {e.strerror or e}"
    if isinstance(e, asyncio.IncompleteReadError | EOFError):
        return "connection closed before a complete answer"
    if isinstance(e, OSError):
        if e.errno is None and str(e).startswith("Multiple exceptions"):
            # asyncio tried every address of a name; if all failed alike, say that once.
            codes = {int(c) for c in re.findall(r"\[Errno (\d+)\]", str(e))}
            if len(codes) == 1 and (code := codes.pop()) in _ERRNO_TEXT:
                return _ERRNO_TEXT[code]
            return "cannot connect to any address of the host"
        if e.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[e.errno]
        return (e.strerror or str(e) or type(e).__name__).lower()
    return f"{type(e).__name__}: {e}"


def hostport(host: str, port: int) -> str:
    """host:port, with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def close_writer(writer: asyncio.StreamWriter | None) -> None:
    """Start closing a stream; not awaited, so a slow goodbye never counts against a check."""
    if writer is not None:
        try:
            writer.close()
        except (OSError, RuntimeError):
            pass


async def in_daemon_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking call in a thread of its own and await its result.

    Not the loop's executor: a pool has a fixed number of workers, so targets that hang
    would queue every other blocking probe (and the loop's getaddrinfo) behind them. The
    thread is a daemon, so a call still stuck at exit does not hold the agent up; callers
    must bound the call itself (library timeouts), since cancelling the await cannot.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: object) -> None:
        if not done.done():
            if ok:
                done.set_result(value)  # type: ignore[arg-type]
            else:
                done.set_exception(value)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result: tuple[bool, object] = (True, fn(*args))
        except Exception as e:
            result = (False, e)
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:
            pass  # the loop closed while we ran: nobody is waiting any more

    threading.Thread(target=work, name="hacluster-probe", daemon=True).start()
    return await done
