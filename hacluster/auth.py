"""The admin API's shared-secret token, used by both the agent and the CLI.

Kept apart from admin.py so that the CLI, a thin client, can compute it without importing
any server code. mTLS replaces this in a later issue; until then every admin call carries
TOKEN_METADATA_KEY = admin_token(cluster secret).
"""

from __future__ import annotations

import hashlib
import hmac

TOKEN_METADATA_KEY = "x-hacluster-token"  # gRPC metadata keys are lowercase

# A fixed, versioned label: the token proves knowledge of the secret without sending it, and
# a different label in a later protocol version yields an unrelated token.
_TOKEN_LABEL = b"hacluster-admin-v1"
# Gossip between agents gets its own token, so that a token handed to an admin tool never
# lets it speak gossip (and vice versa).
_GOSSIP_LABEL = b"hacluster-gossip-v1"


def admin_token(secret: str) -> str:
    """Hex HMAC-SHA256 of a fixed label, keyed with the cluster secret."""
    return hmac.new(secret.encode("utf-8"), _TOKEN_LABEL, hashlib.sha256).hexdigest()


def gossip_token(secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), _GOSSIP_LABEL, hashlib.sha256).hexdigest()


def metadata_refusal(metadata: object, expected: str, what: str) -> str | None:
    """None if the call's metadata carries the expected token, else why it is refused."""
    presented = None
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == TOKEN_METADATA_KEY and isinstance(value, str):
            presented = value
    if presented is None:
        return (f"missing {TOKEN_METADATA_KEY} metadata: {what} calls need a token "
                "derived from the cluster secret")
    if not token_matches(presented, expected):
        return (f"{TOKEN_METADATA_KEY} does not match this agent's cluster secret "
                "(wrong secret file, or a member of another cluster?)")
    return None


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
