"""The `hacluster` command: a thin gRPC client of the agents, plus the namespace lab."""

import os

# gRPC's C core logs a failed TLS handshake (and more) straight to stderr, above the CLI's
# own one-line error. It reads these variables when it starts: set them here, before any
# module of this package imports grpc, unless the operator set them (GRPC_VERBOSITY=DEBUG
# GRPC_TRACE=... still debug a connection). GRPC_QUIETED: the ones set here.
GRPC_QUIETED = tuple(k for k in ("GRPC_VERBOSITY", "GRPC_TRACE") if k not in os.environ)
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
os.environ.setdefault("GRPC_TRACE", "")
