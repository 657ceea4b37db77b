"""Where every gRPC channel and server option of the agent is made (DESIGN.md §5).

One place, so that switching gossip and admin to mTLS (the security issue) changes this
module and not every caller. Reconnect backoff is short on purpose: gRPC's default grows to
two minutes, and a peer that comes back after a reboot must be probed again within a
probe period, not minutes later.
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 1 << 20

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),  # gossip has its own retry logic (the next probe)
    # An http_proxy set for package downloads must not capture calls between agents.
    ("grpc.enable_http_proxy", 0),
]

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # grpc sets SO_REUSEPORT by default: a second agent on the same port would then bind
    # "successfully" and steal half the calls. We want the bind to fail instead.
    ("grpc.so_reuseport", 0),
]


def peer_channel(target: str) -> grpc.Channel:
    """A channel to another agent (gossip). Plaintext + token until mTLS lands."""
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def admin_channel(target: str) -> grpc.Channel:
    """A channel from a tool (CLI, lab, benchmarks) to an agent's admin API."""
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
