import socket


def test_importing_raft_keeps_a_working_inet_ntop():
    import hacluster.consensus.raft  # noqa: F401 - the import is the test

    assert socket.inet_ntop(socket.AF_INET, b"\x0a\x00\x00\x01") == "10.0.0.1"
