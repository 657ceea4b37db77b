"""The HA core: the loop (snapshot -> decide -> act), the leader's duties, failover, status views."""
