"""Long-lived TCP flows for tests/lab/test_snat_sync.py, run inside network namespaces.

    python _snat_flows.py server NAME PORT
        an echo server: says NAME on connect, then echoes every line back.
    python _snat_flows.py client HOST PORT N INTERVAL_S
        opens N flows to HOST:PORT, one after the other (each reads the server's name),
        prints {"ready": [name, ...]}, then sends a line on every flow each INTERVAL_S and
        times the echoes. Commands on stdin, one JSON line answered on stdout each:
          mark    forget the gaps and echo counts so far: the failover starts now
          report  per flow: backend, error, echoes and longest gap between echoes since
                  the mark, age of the last echo
          stop    exit
    python _snat_flows.py probe HOST PORT N
        N short connections one after the other: prints the JSON list of the servers that
        answered and echoed (or the error's name).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass


async def serve(name: str, port: int) -> None:
    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(f"{name}\n".encode())
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(one, "0.0.0.0", port, reuse_address=True, backlog=256)
    async with server:
        await server.serve_forever()


@dataclass
class Flow:
    backend: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    error: str | None = None
    echoes: int = 0  # since the mark
    max_gap: float = 0.0  # the longest time between two echoes since the mark (s)
    last: float = 0.0  # monotonic time of the last echo

    def state(self, now: float) -> dict:
        return {"backend": self.backend, "error": self.error, "echoes": self.echoes,
                "max_gap_s": round(self.max_gap, 3), "last_echo_age_s": round(now - self.last, 3)}


async def _read_echoes(flow: Flow) -> None:
    try:
        while True:
            line = await flow.reader.readline()
            if not line:
                flow.error = "closed by peer"
                return
            now = time.monotonic()
            flow.max_gap = max(flow.max_gap, now - flow.last)
            flow.last, flow.echoes = now, flow.echoes + 1
    except OSError as e:
        flow.error = f"{type(e).__name__}: {e}"


async def client(host: str, port: int, n: int, interval: float) -> None:
    flows = []
    for _ in range(n):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        name = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        flows.append(Flow(name, reader, writer, last=time.monotonic()))
    tasks = [asyncio.create_task(_read_echoes(f)) for f in flows]
    print(json.dumps({"ready": [f.backend for f in flows]}), flush=True)

    async def send() -> None:
        seq = 0
        while True:
            seq += 1
            for f in flows:
                if f.error is None:
                    try:
                        f.writer.write(f"{seq}\n".encode())
                    except OSError as e:
                        f.error = f"{type(e).__name__}: {e}"
            await asyncio.sleep(interval)

    sender = asyncio.create_task(send())
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while command := (await stdin.readline()).decode().strip():
        now = time.monotonic()
        if command == "mark":
            for f in flows:
                f.echoes, f.max_gap = 0, 0.0
            print(json.dumps({"marked": True}), flush=True)
        elif command == "report":
            print(json.dumps({"flows": [f.state(now) for f in flows]}), flush=True)
        elif command == "stop":
            break
    sender.cancel()
    for t in tasks:
        t.cancel()


async def probe(host: str, port: int, n: int) -> None:
    out = []
    for _ in range(n):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            name = (await asyncio.wait_for(reader.readline(), 2)).decode().strip()
            writer.write(b"ping\n")
            echo = await asyncio.wait_for(reader.readline(), 2)
            out.append(name if echo == b"ping\n" else f"{name}: no echo")
            writer.close()
        except (TimeoutError, OSError) as e:
            out.append(type(e).__name__)
    print(json.dumps(out))


def main() -> None:
    if sys.argv[1] == "server":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1] == "probe":
        asyncio.run(probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))


if __name__ == "__main__":
    main()
