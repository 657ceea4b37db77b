"""The agent's HTTP(S) listener for Prometheus scrapes and the read-only status page
(config metrics.listen): /metrics from a collector registry, `/` and `/status.json` from the
status page, and, with metrics.tls, only clients whose certificate tls.refusal_for lets read.

Only requests whose Host header names this listener are answered (421 otherwise): a web
page on another site can make an operator's browser fetch http://evil.example:9464/ after
pointing evil.example at this server (DNS rebinding), and read the answer as its own. Its
names: the bound address, this host's name, `localhost` on loopback or wildcard binds, any
IP address on a wildcard bind (an IP literal cannot be rebound), and metrics.allowed_hosts.

One thread per request (a hung scrape never holds up the agent, REQUEST_TIMEOUT_S gives an
idle client's thread back); nothing here touches the HA loop.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import selectors
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector

from hacluster.endpoints import parse_hostport

__all__ = ["HostCheck", "MetricsBindError", "MetricsServer", "Page", "serve_metrics"]

log = logging.getLogger("hacluster.metrics")

REQUEST_TIMEOUT_S = 10.0  # an idle or trickling HTTP client gives its thread back after this


class MetricsBindError(OSError):
    """The metrics listener could not listen on its address (the message names it)."""

    def __init__(self, address: str, reason: str):
        super().__init__(f"cannot serve metrics on {address}: {reason}")
        self.address = address


_BIND_HINTS = {errno.EADDRINUSE: " (another program, or another hacluster-agent, already listens "
                                 "there: change metrics.listen)",
               errno.EADDRNOTAVAIL: " (that address is not configured on this host)",
               errno.EACCES: " (ports below 1024 need privileges)"}


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """socketserver's server, with a loop that sleeps until a client connects or shutdown()
    wakes it: the base's serve_forever() wakes every poll_interval (0.5 s) only to look for
    a shutdown, an idle agent's one reason to run this thread (issue 17)."""

    daemon_threads = True  # a hung scrape never holds up the agent's exit

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._quit = False
        self._served = threading.Event()
        self._served.set()  # nothing to wait for until serve_forever() runs
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve_forever(self, poll_interval: float | None = None) -> None:
        self._served.clear()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self, selectors.EVENT_READ)
                sel.register(self._wake_r, selectors.EVENT_READ)
                while not self._quit:
                    for key, _ in sel.select():  # no timeout: shutdown() wakes it
                        if key.fileobj is self and not self._quit:
                            self._handle_request_noblock()
                    self.service_actions()
        except (OSError, ValueError):
            if not self._quit:  # else: stopped and closed before this thread began
                raise
        finally:
            self._served.set()

    def shutdown(self) -> None:
        """Stop serve_forever() and wait for it (at once: it is woken, not polled)."""
        self._quit = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # closed: serve_forever() is not running
        self._served.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind() would call socket.getfqdn(): a reverse DNS lookup that can
        # stall start-up for seconds on an isolated network. The name is only for CGI vars.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        getpeercert = getattr(self.connection, "getpeercert", None)  # an ssl.SSLSocket
        env["hacluster.peer_cert"] = getpeercert(binary_form=True) if getpeercert else None
        return env

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Scrapes every 15 s from every Prometheus would flood the agent's log."""


Page = Callable[[], tuple[str, bytes]]  # -> (content type, body), called at each request


def _reply(start_response: Callable[..., Any], status: str, ctype: str, body: bytes,
           extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra])
    return [body]


def _canonical(host: str) -> str:
    """A host name lower-cased without its trailing dot; an IP address in its usual form."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


def _host_of(header: str) -> str | None:
    """The host part of a Host header (`name`, `name:port`, `[v6]:port`), or None when it
    is malformed."""
    host, port = header, ""
    if header.startswith("["):
        host, sep, port = header[1:].partition("]")
        if not sep or (port and not port.startswith(":")):
            return None
        port = port[1:]
    elif ":" in header:
        host, _, port = header.partition(":")
    if not host or (port and not port.isdigit()) or not all(c.isalnum() or c in ".-_:" for c in host):
        return None
    return _canonical(host)


class HostCheck:
    """Which Host headers the listener answers (see the module docstring)."""

    def __init__(self, bound: Iterable[str], allowed: Iterable[str] = ()):
        """bound: the address the listener was given and the one it bound (they differ
        for a name such as `localhost`); allowed: metrics.allowed_hosts."""
        hosts = {_canonical(h) for h in bound if h}
        self.wildcard = bool(hosts & {"0.0.0.0", "::"}) or not hosts
        loopback = any(ipaddress.ip_address(h).is_loopback for h in hosts if _is_ip(h))
        names = (hosts - {"0.0.0.0", "::"}) | {_canonical(socket.gethostname())}
        names |= {_canonical(h) for h in allowed}
        if self.wildcard or loopback or "localhost" in hosts:
            names |= {"localhost", "127.0.0.1", "::1"}
        self.names = frozenset(names)

    def refusal(self, header: str | None) -> str | None:
        """None if a request with this Host header may be answered, else why not."""
        if header is None:
            return None  # HTTP/1.0 without Host: not a browser (every browser sends one)
        host = _host_of(header)
        if host is None:
            return f"malformed Host header {header!r}"
        if host in self.names or (self.wildcard and _is_ip(host)):
            return None
        return (f"Host {header!r} is not a name of this listener ({', '.join(sorted(self.names))}); "
                "if it is this server's, add it to metrics.allowed_hosts")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _routes(metrics: Callable[..., Any], pages: Mapping[str, Page],
            cluster: str | None = None, hosts: HostCheck | None = None) -> Callable[..., Any]:
    """cluster: with TLS, the cluster whose admin, reader or node certificates may read.
    hosts: the Host headers answered (None: any)."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        misdirected = hosts.refusal(environ.get("HTTP_HOST")) if hosts is not None else None
        if misdirected is not None:
            log.warning("metrics listener: %s from %s refused: %s", path,
                        environ.get("REMOTE_ADDR"), misdirected)
            return _reply(start_response, "421 Misdirected Request", "text/plain; charset=utf-8",
                          f"refused: {misdirected}\n".encode())
        if cluster is not None:
            refusal = _reader_refusal(environ.get("hacluster.peer_cert"), cluster)
            if refusal is not None:
                log.warning("metrics listener: %s from %s refused: %s", path,
                            environ.get("REMOTE_ADDR"), refusal)
                return _reply(start_response, "403 Forbidden", "text/plain; charset=utf-8",
                              f"refused: {refusal}\n".encode())
        if path in ("/metrics", "/metrics/"):
            return metrics(environ, start_response)
        if path in pages:
            try:
                ctype, body = pages[path]()
            except Exception as e:  # noqa: BLE001 - a broken page must not take /metrics down
                log.warning("metrics listener: %s failed: %s", path, e, exc_info=True)
                return _reply(start_response, "500 Internal Server Error", "text/plain; charset=utf-8",
                              f"{path} failed; see the agent's log\n".encode())
            # live state: a cached copy would show a leader that is gone
            return _reply(start_response, "200 OK", ctype, body,
                          [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
        status, body = (("200 OK", b"hacluster agent: metrics at /metrics\n") if path == "/"
                        else ("404 Not Found", b"not found: metrics are at /metrics\n"))
        return _reply(start_response, status, "text/plain; charset=utf-8", body)
    return app


def _tls_context(tls: Any) -> ssl.SSLContext:
    """Server side: our node certificate; clients must present one of the cluster CA."""
    import tempfile
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=tls.ca_pem.decode())
    # load_cert_chain wants files: a private temporary copy, removed at once
    with tempfile.TemporaryDirectory() as d:
        cert, key = f"{d}/cert.pem", f"{d}/key.pem"
        with open(cert, "wb") as f:
            f.write(tls.cert_pem)
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(tls.key_pem)
        ctx.load_cert_chain(cert, key)
    return ctx


def _reader_refusal(der: bytes | None, cluster: str) -> str | None:
    """None if the TLS peer certificate may read (tls.refusal_for with READ_ROLES)."""
    from hacluster import certs
    from hacluster.tls import READ_ROLES, refusal_for
    if not der:
        return "no client certificate"
    try:
        who = certs.identity_from_cert(der)
    except certs.CertError as e:
        return f"client certificate without a usable identity: {e}"
    return refusal_for(who, cluster, READ_ROLES, "read")


class MetricsServer:
    """The running listener: `port` (the real one when 0 was asked) and stop()."""

    def __init__(self, httpd: _Server, thread: threading.Thread, host: str):
        self._httpd = httpd
        self._thread = thread
        self.host = host

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self, timeout: float = 2.0) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)


def serve_metrics(bind: str, registry: Collector, pages: Mapping[str, Page] | None = None,
                  tls: Any = None, allowed_hosts: Iterable[str] = ()) -> MetricsServer:
    """Serve `registry` on http://bind/metrics from a daemon thread (one thread per request).
    bind: HOST:PORT or [V6]:PORT; port 0 picks a free one. pages: extra routes, path ->
    function returning (content type, body), served with Cache-Control: no-store (the
    status page: `/` and `/status.json`, statuspage.status_pages); a "/" there replaces the
    pointer to /metrics. Raises ValueError for a malformed address and MetricsBindError when
    it cannot be bound. tls: a tls.TlsMaterial: HTTPS with a client certificate of the
    cluster CA required, and read only by admin, reader or node certificates (403
    otherwise, logged). allowed_hosts: more names the Host header may carry (HostCheck;
    421 for any other, logged)."""
    host, port = parse_hostport(bind)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise MetricsBindError(bind, f"cannot resolve {host!r}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    server_class = type("_BoundServer", (_Server,), {"address_family": family})
    try:
        httpd = make_server(str(sockaddr[0]), port,
                            _routes(make_wsgi_app(registry), dict(pages or {}),
                                    tls.identity.cluster if tls is not None else None,
                                    HostCheck((host, str(sockaddr[0])), allowed_hosts)),
                            server_class, handler_class=_QuietHandler)
        if tls is not None:
            httpd.socket = _tls_context(tls).wrap_socket(httpd.socket, server_side=True,
                                                          do_handshake_on_connect=False)
    except OSError as e:
        raise MetricsBindError(bind, f"{e.strerror or e}{_BIND_HINTS.get(e.errno or 0, '')}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    # (with TLS, the handshake happens on the request's own thread, at its first read)
    thread.start()
    server = MetricsServer(httpd, thread, str(sockaddr[0]))
    log.info("metrics listening on http://%s/metrics", server.address)
    return server
