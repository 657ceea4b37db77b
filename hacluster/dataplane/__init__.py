"""The data plane: the balancing table in nftables, or in a userspace proxy (DESIGN.md §6)."""
