"""The network-namespace lab: N servers and a client on a bridge, on one machine."""
