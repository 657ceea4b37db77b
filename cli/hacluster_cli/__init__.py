"""The `hacluster` command: a thin gRPC client of the agents, plus the namespace lab."""
