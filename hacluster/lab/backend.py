"""The lab's tiny HTTP backend: answers every GET with its server's name.

GET /slow/N streams its name and then one line per second for N seconds (at most 600):
a long download, to show that draining lets established flows finish.

With --udp-port, it also answers every UDP datagram on that port with its name (the
lab's UDP service).
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--host", default="0.0.0.0",
                   help="address to listen on (the lab gives the server's own address, so that "
                        "a userspace proxy can listen on the VIP's port next to it)")
    p.add_argument("--udp-port", type=int, default=0, help="also answer UDP datagrams here")
    args = p.parse_args()
    body = (args.name + "\n").encode()
    if args.udp_port:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((args.host, args.udp_port))
        threading.Thread(target=_udp_echo_name, args=(udp, body), daemon=True).start()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.startswith("/slow/") and self.path[6:].isdigit():
                self._slow(min(600, int(self.path[6:])))
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _slow(self, seconds: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            for i in range(seconds):
                time.sleep(1)
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


if __name__ == "__main__":
    main()
