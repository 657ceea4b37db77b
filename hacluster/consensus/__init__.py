"""Consensus: what the agent may ask of Raft (protocol.py), its implementation on pysyncobj
(raft.py: lease, stickiness, pre-vote, transfer), the one seam that touches pysyncobj
(pysyncobj_compat.py) and the pure replicated state (state.py)."""
