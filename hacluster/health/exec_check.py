"""Exec check: run a command (argv, no shell); healthy when it exits with expect_exit.

The command runs in its own session (process group), so a timeout kills the whole group,
including whatever a wrapper script forked: a hung check must not leave processes behind,
one per interval, until the host runs out of them. Called `exec_check` because `exec` is a
builtin. The command gets HACLUSTER_CHECK_NAME and HACLUSTER_CHECK_HOST in its
environment, so one script can serve several checks.

A check script is not the agent and gets none of its powers. It starts through util-linux
`setpriv`, which clears the inheritable and ambient capabilities (the agent's
CAP_NET_ADMIN and CAP_NET_RAW are ambient, so that `nft` inherits them: a script would
too, and could run `nft` or move addresses), drops the bounding set where the agent may
(as root: a root check gets no capability either), and sets no_new_privs (no setuid
binary gives them back). With `user` (or the config's checks_user) it runs as that user
and its groups, so it cannot read what the agent's user can: the cluster secret, the node
key, the data dir; switching needs CAP_SETUID and CAP_SETGID (docs/health.md). Its
environment is an allow-list (PATH, LANG, LANGUAGE, LC_*, TZ, HOME, its own `env`), never
the agent's. Not a preexec_fn: the agent runs gRPC threads, and a preexec_fn makes Python
fork() in a way gRPC's fork handlers abort; subprocess's user= alone would keep the
ambient capabilities (a switch between two non-root users keeps them). setpriv does all
of it in the child, after the exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shlex
import shutil
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


_KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "TZ")  # and LC_*; with no user, also HOME
# PATH of a check whose env and the agent's environment have none (config validate looks there too)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 6, 7, 8
# setpriv's exit codes when it cannot exec the command (util-linux EX_EXEC_*)
_EXEC_NOT_FOUND, _EXEC_FAILED = 127, 126


def _effective_caps() -> int:
    """This process's effective capability set, as a bit mask (0 when unreadable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def environment(spec: ExecCheck, host: str, account: pwd.struct_passwd | None) -> dict[str, str]:
    """The check's whole environment: the allow-list, its own `env`, its name and host."""
    env = {k: v for k, v in os.environ.items()
           if k in _KEPT_ENV or k.startswith("LC_") or (k == "HOME" and account is None)}
    env.setdefault("PATH", DEFAULT_PATH)
    if account is not None:
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    env.update(spec.env)
    env.update(HACLUSTER_CHECK_NAME=spec.name, HACLUSTER_CHECK_HOST=host)
    return env


def launch(spec: ExecCheck) -> tuple[list[str], pwd.struct_passwd | None] | str:
    """The argv that runs the command without the agent's privileges, and the account it
    runs as (None: the agent's); or why it cannot run."""
    setpriv = shutil.which("setpriv", path=DEFAULT_PATH)
    if setpriv is None:
        return ("setpriv (util-linux) is not installed; exec checks run only through it, "
                "without the agent's capabilities")
    caps = _effective_caps()
    argv = [setpriv, "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all"]
    if caps >> CAP_SETPCAP & 1:
        argv.append("--bounding-set=-all")
    account = None
    if spec.user is not None:
        try:
            account = (pwd.getpwuid(int(spec.user)) if spec.user.isdigit()
                       else pwd.getpwnam(spec.user))
        except (KeyError, OverflowError):
            return f"no such user: {spec.user}"
        if not (caps >> CAP_SETUID & 1 and caps >> CAP_SETGID & 1):
            return (f"cannot run as {spec.user}: the agent lacks CAP_SETUID and CAP_SETGID "
                    "(docs/health.md, exec checks)")
        argv += [f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]
    return [*argv, "--", *spec.command], account


def _setpriv_error(code: int, output: str, command: str) -> str | None:
    """The error when setpriv itself could not exec the command, else None."""
    if code not in (_EXEC_NOT_FOUND, _EXEC_FAILED) or not output.startswith("setpriv: "):
        return None
    if code == _EXEC_NOT_FOUND:
        return f"command not found: {command}"
    if "Permission denied" in output:
        return f"permission denied: {command}"
    return f"cannot run {command}: {output.removeprefix('setpriv: ')}"


async def probe(spec: ExecCheck, host: str) -> Outcome:
    at = Attempt()
    at.step = "starting the command"
    how = launch(spec)
    if isinstance(how, str):
        return Attempt.failed(how)
    argv, account = how
    env = environment(spec, host, account)
    chunks: list[bytes] = []
    proc: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(spec.timeout_ms / 1000):
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
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
    refused = _setpriv_error(code, output, spec.command[0])
    if refused is not None:
        return Attempt.failed(refused)
    if code != spec.expect_exit:
        return at.answered_bad(_exit_error(code, spec.expect_exit), output)
    return at.ok(output)
