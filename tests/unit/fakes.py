"""Moved to tests/support/ (one fake clock, the fake Raft, the test config, shared by every
tier). These names stay importable from here only for tests/unit/test_raft_terms.py, which is
being changed on another branch: switch its import to tests.support, then delete this file."""

from tests.support.clock import FakeClock as Clock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view

__all__ = ["Clock", "FakeRaft", "config", "leader_view", "view"]
