"""One server's HA core, assembled: the loop, the leader's duties, failover and the read model.

Everything is built in the constructor from parts that are passed in (Raft, HostOps, gossip,
the data plane), so the same assembly runs in the daemon (hacluster/daemon.py, with the
real parts) and in the unit tests (with fakes, tests/support/). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hacluster import clock as clocks
from hacluster.config import Config
from hacluster.consensus.protocol import Consensus
from hacluster.events import EventLog
from hacluster.ha.failover import Failover
from hacluster.ha.leader import LeaderDuties
from hacluster.ha.loop import HaLoop
from hacluster.ha.record import Recorder
from hacluster.ha.requests import Channel
from hacluster.ha.views import StatusViews
from hacluster.hostops.base import HostOps
from hacluster.hostops.connsync import ConnSync
from hacluster.model import GossipState


class Agent:
    def __init__(self, config: Config, hostops: HostOps, raft: Consensus, *,
                 clock: Any = clocks.now, gossip: Any = None, dataplane: Any = None,
                 events: EventLog | None = None, failovers: Any = None, timings: Any = None,
                 watchdog: Any = None, sync: ConnSync | None = None):
        """gossip: a gossip.membership.Membership, or None to run without health gossip.
        dataplane: a dataplane.worker.DataplaneWorker, or None. failovers, timings: the
        metrics' FailoverHistogram and Timings, or None. watchdog: a sdnotify.WatchdogPinger.
        sync: the connection-state sync (hostops/connsync.py), or None for none."""
        self.config = config
        self.events = events if events is not None else EventLog(config.node_id)
        self.channel = Channel()

        def gossip_states() -> Mapping[str, GossipState] | None:
            return {m.node: m.state for m in gossip.members()} if gossip is not None else None

        self.failover = Failover(config, raft, self.channel, self.events, gossip_states, clock=clock)
        leader = LeaderDuties(config, raft, clock, self.events, gossip=gossip, timings=timings,
                              handover=lambda: self.failover.run(None, False, 0))
        self.loop = HaLoop(config, hostops, raft, self.channel, Recorder(config.node_id, self.events,
                                                                            failovers, raft),
                           leader, clock=clock, dataplane=dataplane, watchdog=watchdog, sync=sync)
        self.views = StatusViews(config, raft, self.loop.report, clock, gossip=gossip, dataplane=dataplane,
                                 sync=sync)
