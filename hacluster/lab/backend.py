"""The lab's tiny backend: answers every GET with its server's name, and HL7 v2 over MLLP.

GET /slow/N streams its name and then one line per second for N seconds (at most 600):
a long download, to show that draining lets established flows finish (and that they
survive a failover). GET /slow/N?ms=M writes a line every M ms instead (10-10000), so a
client can see a stall of a few hundred milliseconds in the stream.

With --udp-port, it also answers every UDP datagram on that port with its name (the
lab's UDP service).

With --mllp-port (2575 unless 0), it is an HL7 v2 receiver over MLLP (the `hl7` package's
asyncio server): every message is answered with an ACK, code AA, whose MSH-3 (sending
application) is the server's name. Before it ACKs a message it prints the message's control
id (MSH-10) on stdout as `hl7-received ID`, flushed: the lab sends stdout to the server's
backend.log, which outlives a power-off, so a message received twice (by one backend or by
two) is visible afterwards (hacluster.lab.flows reads these lines: RECEIVED_PREFIX).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import hl7
from hl7.mllp import start_hl7_server

MLLP_PORT = 2575  # the lab's HL7 service (the IANA port of HL7 over MLLP)
RECEIVED_PREFIX = "hl7-received "  # one stdout line per received message: prefix + MSH-10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--host", default="0.0.0.0",
                   help="address to listen on (the lab gives the server's own address, so that "
                        "a userspace proxy can listen on the VIP's port next to it)")
    p.add_argument("--udp-port", type=int, default=0, help="also answer UDP datagrams here")
    p.add_argument("--mllp-port", type=int, default=MLLP_PORT,
                   help="HL7 v2 over MLLP on this port (default %(default)s; 0 = off)")
    args = p.parse_args()
    body = (args.name + "\n").encode()
    if args.udp_port:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((args.host, args.udp_port))
        threading.Thread(target=_udp_echo_name, args=(udp, body), daemon=True).start()
    if args.mllp_port:
        # bound here, before serving HTTP: a lab that sees the backend answer HTTP can rely
        # on MLLP being up too
        ready = threading.Event()
        threading.Thread(target=_serve_mllp, args=(args.host, args.mllp_port, args.name, ready),
                         daemon=True).start()
        if not ready.wait(10):
            sys.exit(f"backend {args.name}: MLLP listener on {args.host}:{args.mllp_port} did not start")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            url = urlsplit(self.path)
            if url.path.startswith("/slow/") and url.path[6:].isdigit():
                ms = parse_qs(url.query).get("ms", ["1000"])[0]
                every = min(10_000, max(10, int(ms))) / 1000 if ms.isdigit() else 1.0
                self._slow(min(600, int(url.path[6:])), every)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _slow(self, seconds: int, every: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            # on a fixed schedule (a slow write does not stretch the download)
            start = time.monotonic()
            lines = round(seconds / every)
            for i in range(lines):
                time.sleep(max(0.0, start + (i + 1) * every - time.monotonic()))
                self.wfile.write(f"{i + 1}\n".encode())
                self.wfile.flush()
            self.wfile.write(b"done\n")

        def log_message(self, *a: object) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


def _udp_echo_name(sock: socket.socket, body: bytes) -> None:
    while True:
        _, peer = sock.recvfrom(2048)
        try:
            sock.sendto(body, peer)
        except OSError:
            pass


def _serve_mllp(host: str, port: int, name: str, ready: threading.Event) -> None:
    """The MLLP receiver's own event loop (its thread, beside the HTTP server's)."""

    async def connection(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while True:
                message = await reader.readmessage()
                control_id = str(message.segment("MSH")(10))
                # recorded before the ACK leaves: an ACKed message is always on file
                sys.stdout.write(f"{RECEIVED_PREFIX}{control_id}\n")
                sys.stdout.flush()
                writer.writemessage(message.create_ack("AA", application=name))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the sender went away (or its connection broke): nothing to answer
        except Exception as e:  # noqa: BLE001 - a malformed message ends its connection only
            sys.stderr.write(f"mllp: {type(e).__name__}: {e}\n")
        finally:
            writer.close()

    async def serve() -> None:
        server = await start_hl7_server(connection, host, port, reuse_address=True, backlog=256)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
