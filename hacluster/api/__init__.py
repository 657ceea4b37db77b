"""Generated protobuf and gRPC modules for hacluster (from proto/hacluster/v1/).

Everything here except this file is written by scripts/gen_proto.sh and never edited by hand;
tests/unit/test_api_generated.py checks that it matches proto/. Protobuf types stay at the
edges: admin.py (server side) and the CLI's client convert them to and from hacluster.model.
"""
