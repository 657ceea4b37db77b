"""Where every gRPC channel and server option of the agent is made (DESIGN.md §5).

Every channel and server is mutual TLS (hacluster/tls.py makes the credentials).

Reconnect backoff is short on purpose: gRPC's default grows to two minutes, and a peer that
comes back after a reboot must be probed again within a probe period, not minutes later.
But `grpc.min_reconnect_backoff_ms` is also gRPC's minimum *connect timeout*: at 100 ms a
CPU-starved peer cannot send its SETTINGS frame in time ("timed out before receiving
SETTINGS frame") and never gets reconnected. So the first retry comes after 100 ms, and
each attempt gets a full second to complete.

Keepalive (peer channels only): after a partition heals, the old TCP connection can stay
ESTABLISHED with a retransmission timeout of a minute, and every call on it times out while
the peer is perfectly reachable. An HTTP/2 ping KEEPALIVE_TIME_MS after the connection last
received anything, which must be answered in time, notices the dead connection and makes
gRPC open a new one. Every agent holds a channel to every member, and most sit idle between
their probes (at 25 servers a member is probed about every 12 s): a ping each second on
each was most of gossip's traffic, and what made it grow with N (bench/scale.py, issue 17:
2.9x from 5 to 25 servers, ~4.8 KB/s per agent of pings). Every 5 s a dead connection is
still found within ~6 s, and GrpcTransport replaces a channel whose calls keep failing
sooner than that. The server must accept those pings (SERVER_OPTIONS), or it answers GOAWAY
"too_many_pings". Note that what closes the connection is `grpc.http2.ping_timeout_ms`
(default one minute: the lab's symptom): gRPC core (checked with grpcio 1.85) does not arm
the keepalive_timeout watchdog, and a keepalive ping waits behind a BDP ping already in
flight, which only the ping timeout covers. (During a rolling upgrade, an agent older than
these SERVER_OPTIONS may GOAWAY a peer channel that stays idle for a few seconds; gRPC
then reconnects on the next call and backs its keepalive off, so that costs a log line.)
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 1 << 20

KEEPALIVE_TIME_MS = 5000
# what our server accepts: agents before issue 17 ping every second, and a ping more often
# than this would count as abuse (with max_ping_strikes 0 it never costs a GOAWAY anyway)
MIN_PING_INTERVAL_MS = 500
KEEPALIVE_TIMEOUT_MS = 500
PING_TIMEOUT_MS = 1000  # any unanswered ping closes the connection after this

# For every channel, admin or peer: each of these is client-side only, so a tool using
# them still works against an agent of any version.
_BASE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 1000),  # also the connect timeout: see above
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),  # gossip has its own retry logic (the next probe)
    # An http_proxy set for package downloads must not capture calls between agents.
    ("grpc.enable_http_proxy", 0),
    # Each channel its own connections: with gRPC's global subchannel pool, a channel made
    # to replace a failing one (GrpcTransport) can be handed the very same stuck connection.
    ("grpc.use_local_subchannel_pool", 1),
]

CHANNEL_OPTIONS = [
    *_BASE_CHANNEL_OPTIONS,
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # A second, not half of one: it also covers pings to a CPU-starved peer that is slow
    # but alive, whose connection should not be torn down for it.
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    # Gossip channels are idle between probes, and that is exactly when a dead connection
    # must be found: ping without calls, and without waiting for data to be sent.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

# Admin channels leave keepalive out: an agent older than these SERVER_OPTIONS would count
# one-second pings as abuse and GOAWAY the CLI. Admin calls are short and one-off anyway.
ADMIN_CHANNEL_OPTIONS = list(_BASE_CHANNEL_OPTIONS)

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # grpc sets SO_REUSEPORT by default: a second agent on the same port would then bind
    # "successfully" and steal half the calls. We want the bind to fail instead.
    ("grpc.so_reuseport", 0),
    # Accept the peers' keepalive pings (CHANNEL_OPTIONS): the interval must stay at or
    # below KEEPALIVE_TIME_MS (with room for timer jitter) and older agents' 1 s, pings must
    # be allowed while no call is open, and no ping ever counts as a strike, so the server
    # never answers GOAWAY "too_many_pings", which would cut the very connection keepalive
    # protects.
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
]


def peer_channel(target: str, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    """A channel to another agent (gossip), mutual TLS with this node's certificate. The
    target is the member's address, which its certificate must name (IP SAN)."""
    return grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


def admin_channel(target: str, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    """A channel from a tool (CLI, lab, benchmarks) to an agent's admin API, mutual TLS
    with the tool's admin or reader certificate."""
    return grpc.secure_channel(target, credentials, options=ADMIN_CHANNEL_OPTIONS)
