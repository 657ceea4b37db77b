from hacluster.lab.traffic import Attempt, outage, outage_windows

STEP = 0.01


def run(pattern: str, start: float = 100.0, servers: str = "") -> list[Attempt]:
    """'o' = success, 'x' = failure, one attempt per interval; servers per success, in order."""
    names = iter(servers) if servers else iter(lambda: "a", None)
    return [Attempt(start + i * STEP, c == "o", next(names) if c == "o" else None)
            for i, c in enumerate(pattern)]


def test_single_clean_gap():
    a = run("oooxxxxxooo", servers="aaabbb")
    o = outage(a, fault_at=100.025, interval=STEP)
    assert round(o.ms) == 50 and o.before == "a" and o.after == "b"
    assert o.failed_attempts == 5 and o.recovered


def test_in_flight_success_does_not_hide_the_real_outage():
    # fault at 100.025: the attempt started at 100.03 (in flight) still succeeded
    a = run("oooxoxxxxxxooo", servers="aaaabbb")
    o = outage(a, fault_at=100.025, interval=STEP)
    assert len(outage_windows(a, 100.025)) == 2
    assert round(o.ms) == 10 + 60 and o.after == "b"  # both gaps count


def test_no_recovery_and_no_failure():
    assert outage(run("oooxxx"), 100.025, STEP).recovered is False
    assert outage(run("oooxxx"), 100.025, STEP).ms == float("inf")
    clean = outage(run("oooooo"), 100.025, STEP)
    assert clean.ms == 0 and clean.recovered and clean.failed_attempts == 0
