"""A client that starts one HTTP request to VIP:port every `interval`, in parallel.

Run inside the lab's client namespace. Prints one JSON line per attempt to stdout:
{"t": start (wall clock, s), "ok": bool, "server": name or null, "ms": duration}, and
"error" on a failed one (where and how it failed).
Attempts are started on a fixed schedule (they do not wait for each other), so an outage is
measured with `interval` resolution even while connections hang. Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def attempt(host: str, port: int, timeout: float) -> tuple[bool, str | None, str | None]:
    """(ok, the answering server's name, why it failed: "connect: ConnectionRefusedError",
    "read: timeout", "status: HTTP/1.0 503 ...")."""
    stage = "connect"
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        stage = "read"
        w.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        # Up to EOF (the backend closes): headers and body may arrive in separate segments.
        data = await asyncio.wait_for(r.read(), timeout)
        w.close()
        text = data.decode(errors="replace")
        status = text.split("\r\n", 1)[0]
        if not text.startswith("HTTP/1.") or " 200 " not in status:
            return False, None, f"status: {status[:60]!r}"
        return True, text.split("\r\n\r\n", 1)[-1].strip() or None, None
    except TimeoutError:
        return False, None, f"{stage}: timeout"
    except OSError as e:
        return False, None, f"{stage}: {type(e).__name__}"


async def run(host: str, port: int, interval: float, duration: float, timeout: float,
              max_attempts: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    out = sys.stdout

    async def one(t_wall: float) -> None:
        t0 = loop.time()
        ok, server, error = await attempt(host, port, timeout)
        row = {"t": t_wall, "ok": ok, "server": server, "ms": round((loop.time() - t0) * 1000, 2)}
        if error:
            row["error"] = error
        out.write(json.dumps(row) + "\n")
        out.flush()

    n = 0
    while loop.time() - start < duration and n < max_attempts:
        tasks.append(asyncio.ensure_future(one(time.time())))
        n += 1
        await asyncio.sleep(max(0.0, start + n * interval - loop.time()))
    await asyncio.gather(*tasks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--max-attempts", type=int, default=100_000)
    a = p.parse_args()
    if a.duration > 3600 or a.interval < 0.001:
        p.error("duration must be <= 3600 s and interval >= 1 ms")
    asyncio.run(run(a.host, a.port, a.interval, a.duration, a.timeout, a.max_attempts))


if __name__ == "__main__":
    main()
