"""Real servers on 127.0.0.1 for the health check tests, each stopped in its fixture's teardown.

Asyncio servers (MLLP, SIP, silent ones) live on one background loop thread shared by the
session; the probes under test run in their own asyncio.run(), as they would in the
runner's thread. Ports are ephemeral (bound to port 0).
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

HOST = "127.0.0.1"
# The timeout of a probe whose timeout is not under test: far beyond what a loaded CI machine
# needs, and free, since the probe returns as soon as the target answers.
PATIENT_MS = 10_000

T = TypeVar("T")


# ------------------------------------------------------------------ timeouts on cue


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock can be moved forward: timers that come due fire at once."""

    def __init__(self) -> None:
        super().__init__()
        self.ahead = 0.0

    def time(self) -> float:
        return super().time() + self.ahead


def probe_until_stuck(probe: Callable[[Any, str], Awaitable[T]], spec: Any, stuck: Callable[[], Any],
                      host: str = HOST) -> T:
    """Run probe(spec, host) against a target that never answers; expire its timeout on cue.

    A timeout error names the step the probe hung in. With a short real timeout, a stall of
    a loaded machine lets it expire a step early ("connecting" instead of "waiting for the
    ACK"); a long one makes every such test wait it out. So spec.timeout_ms should be long
    (PATIENT_MS), and as soon as stuck() shows the probe waits at the step under test (say,
    the server holds the whole request), the loop clock moves on by spec.timeout_ms and the
    timeout expires at once. A probe that ends before stuck() holds returns its outcome as it
    is, for the test's asserts to show; the long timeout is the deadline.
    """

    async def main() -> T:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ClockLoop)
        task = asyncio.ensure_future(probe(spec, host))
        while True:  # the probe runs first, so its timeout is set before the clock moves
            done, _ = await asyncio.wait({task}, timeout=0.005)
            if done:
                return task.result()
            if stuck():
                break
        loop.ahead += spec.timeout_ms / 1000
        return await task

    with asyncio.Runner(loop_factory=ClockLoop) as runner:
        return runner.run(main())


# ------------------------------------------------------------------ background loop


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="session")
def servers_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@dataclass
class StreamServer:
    """An asyncio TCP server on the background loop; `seen` collects what clients sent."""

    lt: LoopThread
    server: asyncio.Server | None = None
    seen: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


@pytest.fixture
def stream_server(servers_loop: LoopThread) -> Iterator[Callable[..., StreamServer]]:
    """Factory: stream_server(handler) where handler(reader, writer, srv) serves one client."""
    made: list[StreamServer] = []

    def make(handler: Callable[..., Any]) -> StreamServer:
        srv = StreamServer(servers_loop)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            srv.writers.append(writer)
            try:
                await handler(reader, writer, srv)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass

        async def start() -> asyncio.Server:
            return await asyncio.start_server(on_client, HOST, 0)

        srv.server = servers_loop.run(start())
        made.append(srv)
        return srv

    yield make
    for srv in made:
        servers_loop.run(srv._close())


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        srv: StreamServer) -> None:
    """Read whatever comes and never say a word: the hanging server for timeout cases."""
    while data := await reader.read(4096):
        srv.seen.append(data)


@pytest.fixture
def silent_tcp(stream_server: Callable[..., StreamServer]) -> StreamServer:
    return stream_server(_never_answer)


# ------------------------------------------------------------------ plain sockets


@pytest.fixture
def listening_port() -> Iterator[int]:
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: bound once to learn a free number, then released."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def unanswered_syn_port() -> Iterator[int]:
    """A listener whose accept queue is full, so a new SYN is dropped and connect() hangs.

    Linux drops SYNs to a listener whose accept queue is full (tcp_abort_on_overflow=0,
    the default) and retries only after a 1 s RTO. That is the only deterministic
    "connect hangs" on loopback; the fixture proves the condition holds before handing out
    the port, instead of trusting the backlog arithmetic.
    """
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex((HOST, port))
            fillers.append(c)
            _, writable, _ = select.select([], [c], [], 0.2)
            if not writable:
                break  # this SYN went unanswered: the queue is full
        else:
            pytest.fail("could not fill the accept queue of a loopback listener")
        yield port
    finally:
        for c in fillers:
            c.close()
        srv.close()


# ------------------------------------------------------------------ HTTP(S)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hang = threading.Event()  # replaced per server
    hanging = threading.Event()  # replaced per server; set once a /hang request arrived

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/hang":
            self.hanging.set()
            self.hang.wait(60)  # released at teardown; the bound only stops a leak
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"from ", b"chunks"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        code, body = (503, b"down for maintenance") if self.path == "/fail" else (200, b"backend n1 ok")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Host", self.headers.get("Host", ""))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class HttpServer:
    port: int
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread
    hang: threading.Event
    hanging: threading.Event


def _serve_http(ctx: ssl.SSLContext | None) -> HttpServer:
    hang, hanging = threading.Event(), threading.Event()
    handler = type("Handler", (_Handler,), {"hang": hang, "hanging": hanging})
    srv = http.server.ThreadingHTTPServer((HOST, 0), handler)
    srv.daemon_threads = True
    if ctx is not None:
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    return HttpServer(srv.server_address[1], srv, t, hang, hanging)


def _stop_http(s: HttpServer) -> None:
    s.hang.set()
    s.server.shutdown()
    s.server.server_close()
    s.thread.join(5)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    s = _serve_http(None)
    yield s
    _stop_http(s)


@dataclass
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 and backend.test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hacluster test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backend.test")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("backend.test"), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(d / "ca.pem", d / "server.pem", d / "server.key")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return pki


@pytest.fixture
def https_server(pki: Pki) -> Iterator[HttpServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_file, pki.key_file)
    s = _serve_http(ctx)
    yield s
    _stop_http(s)


# ------------------------------------------------------------------ MLLP


def mllp_ack(message: bytes, code: str, text: str = "") -> bytes:
    """An ACK to `message` (unframed), echoing its control id, in MLLP framing."""
    fields = message.split(b"\r")[0].decode().split("|")
    control_id = fields[9]
    msh = "|".join(["MSH", "^~\\&", fields[4], fields[5], fields[2], fields[3],
                    time.strftime("%Y%m%d%H%M%S"), "", "ACK^N02^ACK", "ACK" + control_id[:10], "P", "2.5"])
    msa = f"MSA|{code}|{control_id}" + (f"|{text}" if text else "")
    return b"\x0b" + f"{msh}\r{msa}\r".encode() + b"\x1c\x0d"


@pytest.fixture
def mllp_server(stream_server: Callable[..., StreamServer]) -> Callable[[str], StreamServer]:
    """Factory: mllp_server("AA") answers every framed message with that MSA-1 code."""

    def make(code: str, text: str = "") -> StreamServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        srv: StreamServer) -> None:
            while True:
                frame = await reader.readuntil(b"\x1c\x0d")
                message = frame[frame.index(b"\x0b") + 1:-2]
                srv.seen.append(message)
                writer.write(mllp_ack(message, code, text))
                await writer.drain()

        return stream_server(serve)

    return make


# ------------------------------------------------------------------ DICOM


@pytest.fixture
def dicom_scp() -> Iterator[tuple[int, str]]:
    """A pynetdicom Verification SCP that only accepts the called AE title ECHO-SCP."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="ECHO-SCP")
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    server = ae.start_server((HOST, 0), block=False)
    try:
        yield server.server_address[1], "ECHO-SCP"
    finally:
        server.shutdown()
        ae.shutdown()


# ------------------------------------------------------------------ SIP


def sip_answer(request: bytes, code: int, reason: str, to_tag: str = "srv1") -> bytes:
    """A SIP response echoing the request's Via, From, To (+tag), Call-ID and CSeq."""
    head = request.split(b"\r\n\r\n")[0].decode().split("\r\n")
    copied = [h for h in head[1:] if h.split(":")[0].lower() in ("via", "from", "call-id", "cseq")]
    to = next(h for h in head[1:] if h.lower().startswith("to:"))
    lines = [f"SIP/2.0 {code} {reason}", *copied, f"{to};tag={to_tag}",
             "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class SipUdp(asyncio.DatagramProtocol):
    def __init__(self, code: int | None, reason: str) -> None:
        self.code, self.reason = code, reason
        self.seen: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen.append(data)
        if self.code is not None and self.transport is not None:
            # A stray answer for another call first: the probe must ignore it.
            stray = data.replace(b"Call-ID: ", b"Call-ID: other-")
            self.transport.sendto(sip_answer(stray, 486, "Busy Here"), addr)
            self.transport.sendto(sip_answer(data, 100, "Trying"), addr)
            self.transport.sendto(sip_answer(data, self.code, self.reason), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]


@pytest.fixture
def sip_udp(servers_loop: LoopThread) -> Iterator[Callable[..., SipUdp]]:
    """Factory: sip_udp(200, "OK"), or sip_udp(None) for a socket that never replies."""
    made: list[SipUdp] = []

    def make(code: int | None, reason: str = "") -> SipUdp:
        async def start() -> SipUdp:
            _, proto = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: SipUdp(code, reason), local_addr=(HOST, 0))
            return proto

        proto = servers_loop.run(start())
        made.append(proto)
        return proto

    yield make
    for proto in made:
        if proto.transport is not None:
            servers_loop.loop.call_soon_threadsafe(proto.transport.close)


@pytest.fixture
def sip_tcp(stream_server: Callable[..., StreamServer]) -> Callable[..., StreamServer]:
    """Factory: sip_tcp(200, "OK") answers each OPTIONS on the same connection."""

    def make(code: int, reason: str) -> StreamServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        srv: StreamServer) -> None:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                srv.seen.append(request)
                writer.write(sip_answer(request, 100, "Trying") + sip_answer(request, code, reason))
                await writer.drain()

        return stream_server(serve)

    return make
