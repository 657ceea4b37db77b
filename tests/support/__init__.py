"""What every test tier shares: one wait, one fake clock, the fake Raft, the in-memory gossip
network, the test config. Tests import from here; nothing here imports a test."""
