"""The servers bench/dataplane.py measures against: nginx backends in the lab's server
namespaces and HAProxy in the VIP holder's namespace (the peer the kernel data plane is
compared with). Each is started, checked and stopped by the benchmark; nothing here measures.
"""

from __future__ import annotations

import subprocess

from _labkit import BenchError

from hacluster.lab.lab import HTTP_PORT, Lab, LabNode
from hacluster.lab.netns import ip

HAPROXY_PORT = 8080
SOURCE_HOST = 200  # HAProxy's outgoing address: NET.200 (the lab uses .2, .11-.19, .100)


class Nginx:
    """One nginx (one worker) in a server's namespace, on the server's address, port 80."""

    def __init__(self, lab: Lab, node: LabNode):
        self.lab = lab
        self.node = node
        self.dir = lab.dir / node.name / "nginx"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        d = self.dir
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.lab.dir / self.node.name / "nginx.conf"
        conf.write_text(f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {{
        listen {self.node.ip}:{HTTP_PORT} backlog=4096;
        default_type text/plain;
        location / {{ return 200 "{self.node.name}\\n"; }}
    }}
}}
""")
        with open(d / "stdout.log", "ab") as f:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.node.netns, "nginx", "-p", str(d), "-e",
                 str(d / "error.log"), "-c", str(conf), "-g", "daemon off;"],
                stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True)

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            text = (self.dir / "error.log").read_text(errors="replace").strip() if \
                (self.dir / "error.log").exists() else ""
            out = (self.dir / "stdout.log").read_text(errors="replace").strip()
            raise BenchError(f"nginx on {self.node.name} exited with {self.proc.returncode}: "
                             f"{(out + chr(10) + text).strip()[-600:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM: the master stops and reaps its worker (a SIGKILLed master would leave
        # the worker orphaned, and a zombie where nothing reaps orphans)
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


class Haproxy:
    """HAProxy in the VIP holder's namespace, balancing over the three nginx.

    Its connections to nginx leave from an address of their own (SOURCE_HOST, a /32 added
    to the holder's eth0), not from the holder's address: the VIP's SNATed flows leave from
    the latter, and in close mode a port that one of them used lingers in TIME_WAIT on the
    nginx side for 60 s. HAProxy's kernel does not know those (they are not its sockets),
    so a connect() from the same address that picks such a port gets its SYN answered by
    the old connection's ACK, a reset, and a SYN retransmitted 1 s later: HAProxy measured
    after a VIP run would pay for the VIP's leftovers (and the reverse).
    """

    def __init__(self, lab: Lab, holder: LabNode):
        self.lab = lab
        self.holder = holder
        self.dir = lab.dir / "haproxy"
        self.source = f"{lab.net}.{SOURCE_HOST}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        ip("addr", "add", f"{self.source}/32", "dev", "eth0", ns=self.holder.netns)
        servers = "\n".join(f"    server {n.name} {n.ip}:{HTTP_PORT}" for n in self.lab.nodes)
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(f"""global
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend web
    bind {self.holder.ip}:{HAPROXY_PORT}
    default_backend nginx
backend nginx
    balance roundrobin
    source {self.source}
{servers}
""")
        with open(self.dir / "haproxy.log", "ab") as f:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.holder.netns, "haproxy", "-db", "-f", str(cfg)],
                stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True)

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log_text = (self.dir / "haproxy.log").read_text(errors="replace").strip()
            raise BenchError(f"haproxy exited with {self.proc.returncode}: {log_text[-600:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        ip("addr", "del", f"{self.source}/32", "dev", "eth0", ns=self.holder.netns,
           check=False)
