"""TCP connect check: healthy when the three-way handshake completes.

It proves a process listens on the port, not that it serves; use a protocol check where one
exists. The connection is closed at once, so the service sees an empty session.
"""

from __future__ import annotations

import asyncio

from hacluster.health.base import Attempt, Outcome, bounded, close_writer, hostport
from hacluster.health.spec import TcpCheck


def target(spec: TcpCheck, host: str) -> str:
    return hostport(host, spec.port)


async def probe(spec: TcpCheck, host: str) -> Outcome:
    async def run(at: Attempt) -> Outcome:
        _, writer = await asyncio.open_connection(host, spec.port)
        out = at.ok()
        close_writer(writer)
        return out

    return await bounded(spec.timeout_ms, run)
