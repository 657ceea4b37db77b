"""hacluster: high availability and load balancing for hospital servers."""

__version__ = "0.1.0"
