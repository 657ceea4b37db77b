"""A valid config for server n1 of a 3-server cluster, with any top-level key replaced."""

from __future__ import annotations

from hacluster.config import parse_config


def config(**over):
    doc = {
        "cluster": "ward", "node_id": "n1",
        "members": [{"id": f"n{i}", "address": f"10.0.0.1{i}", "raft_port": 7100,
                     "grpc_port": 7101} for i in (1, 2, 3)],
        "vips": [{"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}],
        "data_dir": "/nonexistent", "secret_file": "/nonexistent",
        "tls": {"ca_file": "/nonexistent/ca.crt", "cert_file": "/nonexistent/n1.crt",
                "key_file": "/nonexistent/n1.key"},
    }
    doc.update(over)
    return parse_config(doc)
