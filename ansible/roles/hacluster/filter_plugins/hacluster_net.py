"""Address checks for the role's preflight, with Python's ipaddress (no collection needed).

    {{ '10.0.0.100' | hacluster_in_network('10.0.0.11/24') }}       -> True
    {{ ansible_facts.eth0.ipv4 | hacluster_cidr }}                 -> '10.0.0.11/24'
    {{ '10.0.0.x' | hacluster_is_ipv4 }}                            -> False
"""

from __future__ import annotations

import ipaddress


def hacluster_is_ipv4(value):
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        return False
    return True


def hacluster_in_network(address, interface_cidr):
    """Whether address lies in the network of interface_cidr ('10.0.0.11/24' or
    '10.0.0.0/24'); False for anything unparseable."""
    try:
        return ipaddress.IPv4Address(str(address)) in ipaddress.IPv4Interface(str(interface_cidr)).network
    except ValueError:
        return False


def hacluster_cidr(ipv4_fact):
    """'ADDRESS/PREFIX' from an interface's ipv4 fact ({address, netmask, ...})."""
    try:
        return str(ipaddress.IPv4Interface(f"{ipv4_fact['address']}/{ipv4_fact['netmask']}"))
    except (KeyError, TypeError, ValueError):
        return ""


def hacluster_interface_of(facts, address):
    """The name of the interface whose IPv4 addresses (primary or secondary) include
    address, from gathered facts; "" when none does."""
    for name in facts.get("interfaces", []):
        fact = facts.get(name.replace("-", "_").replace(".", "_").replace(":", "_"), {})
        ipv4 = [fact.get("ipv4", {}), *fact.get("ipv4_secondaries", [])]
        if any(isinstance(a, dict) and a.get("address") == address for a in ipv4):
            return name
    return ""


def hacluster_members(names, hostvars, raft_port=7100, grpc_port=7101):
    """The members of the cluster from the inventory: one dict per host of the members
    group, {name, id, address, raft_port, grpc_port}, with the role's defaults where a host
    sets nothing (the id defaults to the inventory name). The config template and the
    preflight checks both use this, so they cannot disagree."""
    out = []
    for name in names:
        hv = hostvars[name]
        out.append({
            "name": name,
            "id": str(hv.get("hacluster_node_id") or name),
            "address": str(hv.get("hacluster_address") or ""),
            "raft_port": int(hv.get("hacluster_raft_port") or raft_port),
            "grpc_port": int(hv.get("hacluster_grpc_port") or grpc_port),
            "voter": bool(hv.get("hacluster_voter", True)),
        })
    return out


class FilterModule:
    def filters(self):
        return {
            "hacluster_is_ipv4": hacluster_is_ipv4,
            "hacluster_in_network": hacluster_in_network,
            "hacluster_cidr": hacluster_cidr,
            "hacluster_interface_of": hacluster_interface_of,
            "hacluster_members": hacluster_members,
        }
