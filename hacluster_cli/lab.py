"""`hacluster lab ...` (placeholder, being written)."""

import click


@click.group()
def lab() -> None:
    """Build and tear down a cluster of network namespaces on this machine (needs root)."""
