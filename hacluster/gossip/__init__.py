"""Health gossip between agents: SWIM membership with Lifeguard, over gRPC (DESIGN.md §5)."""
