"""Exec check: run a command (argv, no shell); healthy when it exits with expect_exit.

The command runs in its own session (process group), so a timeout kills the whole group,
including whatever a wrapper script forked: a hung check must not leave processes behind,
one per interval, until the host runs out of them. Called `exec_check` because `exec` is a
builtin. The command gets HACLUSTER_CHECK_NAME and HACLUSTER_CHECK_HOST in its
environment, so one script can serve several checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal

from hacluster.health.base import Attempt, Outcome
from hacluster.health.spec import ExecCheck

OUTPUT_LIMIT = 1024  # characters of combined stdout+stderr kept (the first ones)
_READ_LIMIT = 64 * 1024  # bytes read before the rest is discarded unread
_EXIT_GRACE_S = 0.1  # after exit, how long a pipe held open by a grandchild may delay us


def target(spec: ExecCheck, host: str) -> str:
    return shlex.join(spec.command)


async def _collect(stream: asyncio.StreamReader, chunks: list[bytes]) -> None:
    """Read to EOF, keeping the first _READ_LIMIT bytes, so a chatty child never blocks."""
    kept = 0
    while chunk := await stream.read(4096):
        if kept < _READ_LIMIT:
            chunks.append(chunk[: _READ_LIMIT - kept])
            kept += len(chunks[-1])


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", "replace")[:OUTPUT_LIMIT].rstrip()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # pgid == pid: start_new_session


def _exit_error(code: int, expected: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}"
    return f"exit status {code}, expected {expected}"


async def probe(spec: ExecCheck, host: str) -> Outcome:
    at = Attempt()
    at.step = "starting the command"
    env = dict(os.environ, HACLUSTER_CHECK_NAME=spec.name, HACLUSTER_CHECK_HOST=host)
    chunks: list[bytes] = []
    proc: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(spec.timeout_ms / 1000):
            proc = await asyncio.create_subprocess_exec(
                *spec.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=env)
            at.step = "waiting for the command"
            assert proc.stdout is not None
            reader = asyncio.create_task(_collect(proc.stdout, chunks))
            code = await proc.wait()
        # A background grandchild may hold the pipe open: take what is there and go.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), _EXIT_GRACE_S)
    except TimeoutError:
        return Attempt.failed(f"timed out after {spec.timeout_ms} ms", _text(chunks))
    except FileNotFoundError:
        return Attempt.failed(f"command not found: {spec.command[0]}")
    except PermissionError:
        return Attempt.failed(f"permission denied: {spec.command[0]}")
    except OSError as e:
        return Attempt.failed(f"cannot run {spec.command[0]}: {(e.strerror or str(e)).lower()}")
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 1.0)  # reap; SIGKILL cannot be ignored
        if reader is not None and not reader.done():
            reader.cancel()
    output = _text(chunks)
    if code != spec.expect_exit:
        return at.answered_bad(_exit_error(code, spec.expect_exit), output)
    return at.ok(output)
