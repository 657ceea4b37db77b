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


def admin_token(secret: str) -> str:
    """Hex HMAC-SHA256 of a fixed label, keyed with the cluster secret."""
    return hmac.new(secret.encode("utf-8"), _TOKEN_LABEL, hashlib.sha256).hexdigest()


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
