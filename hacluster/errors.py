"""Domain refusals: why the cluster will not do what was asked, without any transport in it.

Code that decides (failover planning, admin actions, the HA loop) raises `Refused(kind,
message)`; only the edges translate: the admin gRPC service maps each kind to a status code
(hacluster/admin.py), the CLI maps status codes to exit codes. A domain module therefore
never imports grpc, and a new edge (a REST page, a local socket) reuses the same kinds.
"""

from __future__ import annotations

import enum


class Refusal(enum.StrEnum):
    INVALID = "invalid"  # the request itself is wrong (a weight of 5000, a bad target)
    NOT_FOUND = "not_found"  # it names a member, service or backend that does not exist
    PRECONDITION = "precondition"  # valid, but the cluster is not in a state to do it now
    ABORTED = "aborted"  # started, then given up (a race, a timeout): safe to retry
    INTERNAL = "internal"  # this agent failed at its part (see its log)


class Refused(Exception):
    """An action the cluster will not (or could not) take; the message is for the operator."""

    def __init__(self, message: str, kind: Refusal = Refusal.INVALID):
        super().__init__(message)
        self.kind = kind
