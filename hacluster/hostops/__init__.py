"""Host side effects: VIPs through netlink, ARP probe and announce. See base.HostOps."""

from hacluster.hostops.base import HostOps, HostOpsError

__all__ = ["HostOps", "HostOpsError"]
