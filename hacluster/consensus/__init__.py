"""Consensus: the pure replicated state (state.py) and the pysyncobj wrapper (raft.py)."""
