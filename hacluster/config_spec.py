"""The config file's schema (pydantic): every key, its type, bounds and default.

config.py reads a file with it, checks what one field alone cannot say, and builds the
Config the code uses. Unknown keys are errors (extra="forbid").
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hacluster.dataplane.spec import ServiceSpec
from hacluster.health.spec import USER_NAME, CheckSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberSpec(_Strict):
    id: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    address: str
    raft_port: int = Field(ge=1, le=65535)
    grpc_port: int = Field(ge=1, le=65535)
    voter: bool = True  # false: a non-voting member (gossips, checks, serves; never votes or leads)


class VipSpec(_Strict):
    address: str
    prefix: int = Field(ge=1, le=128)
    interface: str = Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.@:-]+$")


class TimingSpec(_Strict):
    # Defaults: 3 servers on one LAN (DESIGN.md §3), tuned by bench/failover.py.
    heartbeat_ms: int = Field(default=50, ge=5, le=10_000)
    election_timeout_min_ms: int = Field(default=250, ge=20, le=60_000)
    # 250-350: the first of two followers fires ~283 ms after the last heartbeat. A wider
    # spread only adds outage; with pre-vote a split vote costs one more round (bench/).
    election_timeout_max_ms: int = Field(default=350, ge=30, le=120_000)
    lease_ms: int = Field(default=200, ge=10, le=60_000)
    leader_fallback_ms: int = Field(default=200, ge=10, le=60_000)
    tick_ms: int = Field(default=10, ge=1, le=1_000)
    # A quiet loop (nothing claimed, released, announced or applied) ticks this often, or at
    # the leader's lease deadline if sooner; any Raft change, request or commit wakes it.
    idle_tick_ms: int = Field(default=250, ge=1, le=500)
    connection_retry_ms: int = Field(default=200, ge=10, le=60_000)
    vip_lifetime_s: int = Field(default=2, ge=1, le=3_600)
    probe_ms: int = Field(default=30, ge=1, le=5_000)


class GossipSpec(_Strict):
    # memberlist's LAN profile, faster: a hospital LAN has sub-millisecond RTTs, and the
    # balancing table should lose a dead server's backends within seconds, not tens.
    probe_interval_ms: int = Field(default=500, ge=50, le=60_000)
    probe_timeout_ms: int = Field(default=200, ge=10, le=30_000)
    indirect_checks: int = Field(default=3, ge=0, le=16)
    suspicion_mult: int = Field(default=4, ge=2, le=32)
    suspicion_max_timeout_mult: int = Field(default=6, ge=1, le=100)
    retransmit_mult: int = Field(default=4, ge=1, le=32)
    gossip_interval_ms: int = Field(default=200, ge=10, le=60_000)
    gossip_nodes: int = Field(default=3, ge=1, le=16)
    push_pull_interval_ms: int = Field(default=10_000, ge=100, le=3_600_000)
    reconnect_interval_ms: int = Field(default=2_000, ge=100, le=3_600_000)


class HealthSpec(_Strict):
    # How long the leader's gossiped view must hold a backend's new health before the leader
    # commits it. Node-side rise/fall already filters single failed checks; this filters
    # gossip's own flicker. bench/detection.py: it is most of the gossip-to-commit delay.
    settle_ms: int = Field(default=200, ge=0, le=600_000)
    # A member back from DEAD (healed partition, thawed process) refutes with the results
    # it had before; its backends are committed up only once it stayed alive this long.
    rejoin_ms: int = Field(default=2_000, ge=0, le=600_000)
    # A SUSPECT member whose Raft heartbeat acks have also stopped for this long, and whose
    # kernel has not acknowledged our Raft traffic for as long (TCP), is down at once: the
    # server is gone, not merely slow. A CPU-starved one's kernel still acks, so this may be
    # shorter than the Raft silences such a member shows (bench/starvation.py: up to ~0.6 s
    # at 10 % of a CPU). Was 1000 before the kernel's acks were looked at.
    corroborate_ms: int = Field(default=500, ge=100, le=600_000)
    # The leader has gossip probe a member out of turn (directly and through others at once,
    # one gossip probe timeout) once its Raft heartbeat acks have stopped this long, so that
    # the suspicion corroborate_ms waits for starts within a few heartbeats instead of at the
    # member's turn in the probe round. 0: off. Above 2 x timing.heartbeat_ms and below
    # corroborate_ms (checked).
    silence_probe_ms: int = Field(default=150, ge=0, le=600_000)


class TlsSpec(_Strict):
    """Mutual TLS for gossip and the admin API (hacluster/tls.py). Relative paths are
    relative to the config file."""

    ca_file: str = Field(min_length=1)  # the cluster CA's certificate (hacluster certs init)
    cert_file: str = Field(min_length=1)  # this node's certificate (hacluster certs issue NODE)
    key_file: str = Field(min_length=1)  # its key, mode 0600
    # What `hacluster --config THIS_FILE` presents: an admin (or reader) certificate for
    # operators on this server. Optional: without it, pass --cert/--key to the CLI.
    cli_cert_file: str | None = Field(default=None, min_length=1)
    cli_key_file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _cli_pair(self) -> TlsSpec:
        if (self.cli_cert_file is None) != (self.cli_key_file is None):
            raise ValueError("give both cli_cert_file and cli_key_file, or neither")
        return self


class MetricsSpec(_Strict):
    # Prometheus metrics over plain HTTP: whoever reaches this address reads the cluster's
    # layout (VIPs, backends, checks). HOST:PORT or [IPv6]:PORT; absent: no listener.
    listen: str | None = Field(default=None, min_length=1, max_length=300)
    # HTTPS with this node's certificate; a client certificate of the cluster CA required
    # (admin, reader or node: Prometheus gets a reader one). Off: plain HTTP.
    tls: bool = False
    # Host names the listener answers besides its address and this host's name (listener.py)
    allowed_hosts: list[Annotated[str, Field(max_length=253, pattern=r"^[A-Za-z0-9._:-]+$")]] = Field(
        default_factory=list, max_length=64)


class ConntrackSyncSpec(_Strict):
    # off: flows through a VIP break when it moves. on: run conntrackd (refuse to start
    # without it). auto: on when conntrackd is installed and this server balances services
    # with nftables (docs/snat.md).
    mode: str = Field(default="auto", pattern=r"^(off|auto|on)$")
    # The sync link: default the first VIP's interface; conntrackd binds to this member's
    # address on it and sends to the other members' addresses.
    interface: str | None = Field(default=None, min_length=1, max_length=15,
                                  pattern=r"^[A-Za-z0-9_.@:-]+$")
    # auto = unicast: one FTFW pair per peer, each on its own UDP port from `port` up
    # (port + 0 .. port + n(n-1)/2 - 1). multicast: one group for all (see docs/snat.md for
    # why that loses updates with more than two members).
    transport: str = Field(default="auto", pattern=r"^(auto|unicast|multicast)$")
    port: int = Field(default=3780, ge=1, le=65535)
    multicast_group: str = "225.0.0.50"
    # A claim waits at most this long for the synced flows to be committed to the kernel.
    commit_timeout_ms: int = Field(default=100, ge=10, le=5000)


class ConfigSpec(_Strict):
    cluster: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    node_id: str = Field(min_length=1)
    members: list[MemberSpec] = Field(min_length=1)
    vips: list[VipSpec] = Field(default_factory=list)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    gossip: GossipSpec = Field(default_factory=GossipSpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    checks: list[CheckSpec] = Field(default_factory=list)
    # exec checks run as this user unless they name their own (health/exec_check.py)
    checks_user: str | None = Field(default=None, pattern=USER_NAME)
    services: list[ServiceSpec] = Field(default_factory=list)
    # auto: nftables when usable, else the userspace proxy with a loud log line.
    dataplane: str = Field(default="auto", pattern=r"^(auto|nftables|proxy)$")
    data_dir: str
    secret_file: str
    tls: TlsSpec
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")
    # one JSON object per line for a log shipper; HACLUSTER_LOG_FORMAT overrides it (logs.py)
    log_format: str = Field(default="human", pattern=r"^(human|json)$")
    # off | auto | on, or a mapping (ConntrackSyncSpec). YAML reads a bare off/on as a
    # boolean: false/true mean off/on.
    conntrack_sync: ConntrackSyncSpec = Field(default_factory=ConntrackSyncSpec)

    @field_validator("conntrack_sync", mode="before")
    @classmethod
    def _sync_shorthand(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"mode": "on" if v else "off"}
        if isinstance(v, str):
            if v not in ("off", "auto", "on"):
                raise ValueError("must be off, auto, on or a mapping")
            return {"mode": v}
        return v
