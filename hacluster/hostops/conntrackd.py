"""conntrackd, run by the agent: the config it generates, the child it supervises, and the
commit that the VIP claim waits for (hostops/connsync.py says why and when).

The config (render_conf) is FTFW (reliable: lost messages are resent), TCP only (the sync's
own UDP must not be synced), with no address filter: a balanced flow's reply comes from a
backend, which is often a member, so an `Address Ignore` of member addresses would hide
exactly the entries that matter. Two members talk UDP unicast; more use multicast (FTFW's
UDP channel has a single peer). The numbers and the reasons are in docs/snat.md.

The child runs in the foreground (`conntrackd -C CONF`), dies with the agent
(PR_SET_PDEATHSIG through setpriv, tied to the watcher thread that waits for it), and is restarted with
backoff when it exits (0.5 s doubling to 30 s, reset after a minute of running). Each exit is
an ERROR in the log and an event, and status() says "down" with conntrackd's last words.

conntrackd 1.4.7 quirks this module works around: a leftover lock file from a killed
instance stops the next one from starting (removed, after ending any instance still running
with our config); a flush (-f) right after a commit is refused ("commit still in progress"),
so the flush is retried a few times and then left (the external cache then keeps entries the
flows no longer need; harmless, they are replaced by the next sync).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hacluster.hostops.connsync import NOT_DONE, Commit
from hacluster.model import SyncSettings, SyncState, SyncStatus

log = logging.getLogger(__name__)

BINARY = "conntrackd"
READY_TIMEOUT_S = 5.0  # how long a started conntrackd has to open its control socket
STEP_TIMEOUT_S = 5.0  # each background step (-f, -R, -B, -t, -n)
BACKOFF_S = (0.5, 30.0)  # restart delay: first, at most (doubling)
STABLE_S = 60.0  # running this long resets the backoff
FLUSH_TRIES = 3

_UNICAST = """\
\tUDP {{
\t\tIPv4_address {address}
\t\tIPv4_Destination_Address {peer}
\t\tPort {port}
\t\tInterface {interface}
\t\tChecksum on
\t}}"""
_MULTICAST = """\
\tMulticast {{
\t\tIPv4_address {group}
\t\tGroup {port}
\t\tIPv4_interface {address}
\t\tInterface {interface}
\t\tChecksum on
\t}}"""
_CONF = """\
# Written by hacluster-agent at every start; edits are lost (docs/snat.md, "conntrackd").
Sync {{
\tMode FTFW {{
\t}}
{channel}
}}
General {{
\tHashSize 8192
\tHashLimit 131072
\tSyslog off
\tLogFile {dir}/conntrackd.log
\tLockFile {dir}/conntrackd.lock
\tUNIX {{
\t\tPath {dir}/conntrackd.ctl
\t}}
\tNetlinkBufferSize 2097152
\tNetlinkBufferSizeMaxGrowth 8388608
\tFilter From Userspace {{
\t\tProtocol Accept {{
\t\t\tTCP
\t\t}}
\t}}
}}
"""


def transport_of(settings: SyncSettings) -> str:
    """unicast (one FTFW pair per peer: what `auto` means) or multicast."""
    return "multicast" if settings.transport == "multicast" else "unicast"


def pair_port(base: int, me: str, peer: str, everyone: tuple[str, ...]) -> int:
    """The UDP port of the FTFW pair (me, peer): the same on both ends (conntrackd binds and
    sends to one Port), different for each pair on one server. Pairs are numbered over the
    members' addresses in a fixed order, so every member computes the same numbers."""
    order = sorted(set(everyone) | {me, peer}, key=_address_key)
    i, j = sorted((order.index(me), order.index(peer)))
    return base + j * (j - 1) // 2 + i


def _address_key(address: str) -> tuple[int, int | str]:
    try:
        return (0, int(ipaddress.ip_address(address)))
    except ValueError:
        return (1, address)


def pair_settings(settings: SyncSettings) -> list[SyncSettings]:
    """One unicast SyncSettings per peer ("unicast to each")."""
    everyone = (settings.address, *settings.peers)
    return [dataclasses.replace(settings, peers=(peer,), transport="unicast",
                                port=pair_port(settings.port, settings.address, peer, everyone))
            for peer in settings.peers]


def render_conf(settings: SyncSettings, workdir: Path) -> str:
    """conntrackd.conf for this member. Raises ValueError for what conntrackd cannot do."""
    if not settings.peers:
        raise ValueError("connection sync needs at least one other member")
    kind = transport_of(settings)
    if kind == "unicast":
        if len(settings.peers) != 1:
            raise ValueError(f"one conntrackd syncs with one peer over unicast (FTFW over UDP has "
                             f"one destination), got {len(settings.peers)}: use one per peer "
                             f"(ConntrackdPairs)")
        channel = _UNICAST.format(address=settings.address, peer=settings.peers[0],
                                  port=settings.port, interface=settings.interface)
    else:
        channel = _MULTICAST.format(group=settings.multicast_group, port=settings.port,
                                    address=settings.address, interface=settings.interface)
    return _CONF.format(channel=channel, dir=workdir)


# SIGTERM to conntrackd when the thread that started it ends (PR_SET_PDEATHSIG, kept across
# exec). Set by util-linux's setpriv rather than a preexec_fn: a preexec_fn makes Python fork()
# instead of vfork(), and gRPC's fork handlers then abort the child now and then ("epoll_wait
# error: Bad file descriptor", status -6, seen in the lab).
_DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


_STAMP = re.compile(r"^\[[^]]*\] \(pid=\d+\) ")


def _tail(path: Path, lines: int = 2) -> str:
    """conntrackd's last words, without its timestamp and pid ("[ERROR] can't open ...")."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(_STAMP.sub("", line.strip()) for line in text[-lines:])


class Conntrackd:
    """One supervised conntrackd for this agent (the ConnSync the daemon uses when sync is on)."""

    def __init__(self, settings: SyncSettings, workdir: Path, *, binary: str = BINARY,
                 on_error: Callable[[str], None] | None = None,
                 backoff: tuple[float, float] = BACKOFF_S, ready_timeout: float = READY_TIMEOUT_S):
        """on_error: called with one line for people on each failure (the daemon adds it to
        the event timeline). workdir holds the config, log, lock and control socket."""
        self.settings = settings
        self.dir = Path(workdir)
        self.conf = self.dir / "conntrackd.conf"
        self._binary = binary
        self._on_error = on_error or (lambda _line: None)
        self._backoff = backoff
        self._ready_timeout = ready_timeout
        self._lock = threading.Lock()
        self._state = SyncState.DOWN
        self._detail = "starting"
        self._restarts = 0
        self._commit_ms: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._steps: queue.Queue[tuple[str, ...] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ reading

    def status(self) -> SyncStatus:
        with self._lock:
            return SyncStatus(self._state, self._detail, self._restarts, self._commit_ms)

    def _set(self, state: SyncState, detail: str) -> None:
        with self._lock:
            self._state, self._detail = state, detail

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.conf.write_text(render_conf(self.settings, self.dir))
        for target, name in ((self._watch, "conntrackd-watch"), (self._work, "conntrackd-steps")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 3.0) -> None:
        self._stopping.set()
        self._steps.put(None)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        for t in self._threads:
            t.join(timeout)
        self._set(SyncState.DOWN, "stopped")

    def _watch(self) -> None:
        delay = self._backoff[0]
        while not self._stopping.is_set():
            self._end_leftover()
            started = time.monotonic()
            out = self.dir / "conntrackd.out"
            try:
                with out.open("wb") as sink:
                    self._proc = subprocess.Popen(
                        [*_DIE_WITH_PARENT, self._binary, "-C", str(self.conf)], stdin=subprocess.DEVNULL,
                        stdout=sink, stderr=subprocess.STDOUT)
            except OSError as e:
                self._failed(f"cannot start {self._binary}: {e}", delay)
            else:
                self._await_ready(self._proc)
                rc = self._proc.wait()
                if self._stopping.is_set():
                    break
                if time.monotonic() - started > STABLE_S:
                    delay = self._backoff[0]
                why = _tail(out) or _tail(self.dir / "conntrackd.log") or "no output"
                self._failed(f"conntrackd exited with status {rc}: {why}", delay)
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self._backoff[1])
            with self._lock:
                self._restarts += 1

    def _failed(self, why: str, delay: float) -> None:
        line = (f"connection sync: down ({why}); restarting in {delay:g} s. Until it runs, "
                f"established flows through the VIPs break when they move")
        log.error("%s", line)
        self._set(SyncState.DOWN, why)
        self._on_error(line)

    def _await_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self._ready_timeout
        ctl = self.dir / "conntrackd.ctl"
        while time.monotonic() < deadline and proc.poll() is None and not self._stopping.is_set():
            if ctl.exists() and _answers(ctl):
                kind = transport_of(self.settings)
                peers = ", ".join(self.settings.peers) if kind == "unicast" \
                    else f"group {self.settings.multicast_group}"
                self._set(SyncState.OK, f"FTFW over {kind} on {self.settings.interface} ({peers}), "
                                        f"port {self.settings.port}")
                log.info("connection sync: conntrackd runs (%s)", self.status().detail)
                return
            time.sleep(0.05)
        if proc.poll() is None and not self._stopping.is_set():
            self._set(SyncState.DOWN, f"conntrackd runs but its control socket {ctl} did not "
                                      f"answer within {self._ready_timeout:g} s")

    def _end_leftover(self) -> None:
        """A conntrackd still running with our config (the agent was SIGKILLed before its
        child got the signal, or a restart raced it) is ended; its lock and socket removed."""
        mine = str(self.conf)
        for pid in _pids_running(self._binary, mine):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                continue
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            log.warning("connection sync: ended a leftover conntrackd (pid %d) using %s", pid, mine)
        for name in ("conntrackd.lock", "conntrackd.ctl"):
            (self.dir / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ the claim's steps

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self._binary, "-C", str(self.conf), *args], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def begin_commit(self) -> Commit:
        if self.status().state is not SyncState.OK:
            return NOT_DONE
        try:
            proc = subprocess.Popen([self._binary, "-C", str(self.conf), "-c"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as e:
            self._commit_failed(f"cannot run {self._binary} -c: {e}")
            return NOT_DONE
        return _Commit(self, proc, time.monotonic())

    def _committed(self, ms: float) -> None:
        with self._lock:
            self._commit_ms = ms

    def _commit_failed(self, why: str) -> None:
        line = f"connection sync: {why}"
        log.error("%s", line)
        self._on_error(line)

    def claimed(self) -> None:
        # flush both caches, resync the internal one from the kernel, send it to the others
        for step in (("-f",), ("-R",), ("-B",)):
            self._steps.put(step)

    def released(self) -> None:
        # shorten the kernel's timers of the flows we no longer carry; ask the holder for its state
        for step in (("-t",), ("-n",)):
            self._steps.put(step)

    def _work(self) -> None:
        while True:
            step = self._steps.get()
            if step is None or self._stopping.is_set():
                return
            if self.status().state is not SyncState.OK:
                continue
            for attempt in range(FLUSH_TRIES if step == ("-f",) else 1):
                try:
                    proc = self._run(*step, timeout=STEP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.warning("connection sync: conntrackd %s did not answer in %g s", " ".join(step),
                                STEP_TIMEOUT_S)
                    break
                text = (proc.stdout + proc.stderr).strip()
                if proc.returncode == 0 and "in progress" not in text:
                    break
                if attempt + 1 < FLUSH_TRIES and step == ("-f",):
                    self._stopping.wait(0.2)
                    continue
                log.warning("connection sync: conntrackd %s: %s", " ".join(step), text or proc.returncode)


class _Commit:
    """One `conntrackd -c` under way."""

    def __init__(self, owner: Conntrackd, proc: subprocess.Popen[str], started: float):
        self._owner, self._proc, self._started = owner, proc, started
        self._result: bool | None = None

    def done(self) -> bool:
        return self._result is not None or self._proc.poll() is not None

    def wait(self) -> bool:
        if self._result is None:
            self._result = self._finish()
        return self._result

    def _finish(self) -> bool:
        owner, proc, timeout = self._owner, self._proc, self._owner.settings.commit_timeout
        try:
            out, _ = proc.communicate(timeout=max(0.0, self._started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()  # the client only: conntrackd itself finishes the commit
            proc.communicate()
            owner._commit_failed(
                f"the commit of the synced flows did not finish within {timeout * 1000:.0f} ms: "
                f"claiming without waiting for it (conntrackd finishes it in the background; "
                f"flows whose entries come late may be reset)")
            return False
        ms = (time.monotonic() - self._started) * 1000
        owner._committed(ms)
        if proc.returncode != 0:
            owner._commit_failed(f"commit failed (status {proc.returncode}): {out.strip()}")
            return False
        log.info("connection sync: synced flows committed to the kernel in %.1f ms", ms)
        return True


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _pids_running(binary: str, conf: str) -> list[int]:
    """Daemons whose command line is `<...>/conntrackd -C <conf>` (ours; not a client call)."""
    name = os.path.basename(binary)
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        # [conntrackd, -C, conf] (or [interpreter, script, -C, conf]); a client call adds a flag
        if args[-2:] == ["-C", conf] and any(os.path.basename(a) == name for a in args[:-2]):
            out.append(int(entry.name))
    return out


class ConntrackdPairs:
    """The ConnSync of a member with peers over unicast: one supervised conntrackd per peer,
    each an FTFW pair on its own port (pair_port), with its own config, caches and socket.

    Why not one conntrackd on a multicast group: conntrackd tracks a single message sequence
    per channel, not one per sender. On a group where more than one member sends (every
    member's kernel has flows of its own to sync, and FTFW's acknowledgements), a receiver
    takes interleaved messages for losses and drops some as old: in the lab, 2-12 of 20
    established flows were missing from the standbys' caches at a power-off (docs/snat.md).
    A pair has one sender at each end, the setup FTFW was built for.
    """

    def __init__(self, settings: SyncSettings, workdir: Path, **kw: object):
        self.settings = settings
        self.dir = Path(workdir)
        self._kw = kw
        self._started = False
        self.members = [self._pair(one) for one in pair_settings(settings)]

    def _pair(self, one: SyncSettings) -> Conntrackd:
        return Conntrackd(one, self.dir / f"peer-{one.peers[0]}", **self._kw)  # type: ignore[arg-type]

    def set_peers(self, peers: tuple[str, ...]) -> None:
        """The voters changed (issue 16): start a pair for each new peer, stop the pairs of
        those gone, and restart a pair whose port moved (pair_port numbers the addresses in
        order: an address that sorts before others shifts their ports). Pairs that did not
        change keep running and keep their caches."""
        self.settings = dataclasses.replace(self.settings, peers=tuple(peers))
        wanted = {one.peers[0]: one for one in pair_settings(self.settings)}
        keep, stop = [], []
        for m in self.members:
            same = wanted.get(m.settings.peers[0]) == m.settings
            (keep if same else stop).append(m)
        for m in stop:
            m.stop()
        kept = {m.settings.peers[0] for m in keep}
        new = [self._pair(one) for peer, one in wanted.items() if peer not in kept]
        if self._started:
            for m in new:
                m.start()
        self.members = keep + new
        log.info("connection sync: pairs with %s", ", ".join(sorted(wanted)) or "no one")

    def status(self) -> SyncStatus:
        each = [m.status() for m in self.members]
        down = [f"{m.settings.peers[0]}: {st.detail}" for m, st in zip(self.members, each, strict=True)
                if st.state is not SyncState.OK]
        ms = [st.last_commit_ms for st in each if st.last_commit_ms is not None]
        restarts = sum(st.restarts for st in each)
        commit_ms = max(ms) if ms else None
        if down:
            return SyncStatus(SyncState.DOWN, "; ".join(down), restarts, commit_ms)
        pairs = ", ".join(f"{m.settings.peers[0]}:{m.settings.port}" for m in self.members)
        return SyncStatus(SyncState.OK, f"FTFW over unicast on {self.settings.interface} to each peer "
                                        f"({pairs})", restarts, commit_ms)

    def begin_commit(self) -> Commit:
        return _AllCommits([m.begin_commit() for m in self.members])

    def claimed(self) -> None:
        for m in self.members:
            m.claimed()

    def released(self) -> None:
        for m in self.members:
            m.released()

    def start(self) -> None:
        self._started = True
        for m in self.members:
            m.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._started = False
        for m in self.members:
            m.stop(timeout)


class _AllCommits:
    """Every pair's external cache into the kernel, under way at once; one deadline each
    (counted from their common beginning), so the claim waits at most the commit timeout."""

    def __init__(self, commits: list[Commit]):
        self._commits = commits

    def done(self) -> bool:
        return all(c.done() for c in self._commits)

    def wait(self) -> bool:
        return all([c.wait() for c in self._commits])  # a list: wait for every one


def make_sync(settings: SyncSettings, workdir: Path, **kw: object) -> Conntrackd | ConntrackdPairs:
    """The ConnSync for these settings: one conntrackd per peer, or one on a multicast group."""
    if transport_of(settings) == "multicast":
        log.warning("connection sync over multicast: conntrackd tracks one message sequence for "
                    "the whole group, so with more than one sender some updates are dropped and "
                    "flows may break at a failover (docs/snat.md); transport: unicast (the "
                    "default) runs one FTFW pair per peer")
        return Conntrackd(settings, workdir, **kw)  # type: ignore[arg-type]
    return ConntrackdPairs(settings, workdir, **kw)
