"""Which open sessions a lost gateway left behind (gateway_runs.py): the pure decision.

A sweeper looks up the entries of the runs carrying open sessions at each sweep
(`observe`), and a run's sessions are orphaned once it has seen the run's entry
unchanged or absent for `lost_after` (`orphaned`). Held here: a run that keeps
refreshing faster than `lost_after` is never taken for lost however the sweeps
fall; one that stops is, within `lost_after` plus one sweep; the sweeper's own
run never is; and a sweeper that forgot what it saw starts counting again.
"""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from potluck.sshgateway.gateway_runs import OpenSession, Sighting, lost_detail, observe, orphaned

T0 = datetime(2025, 1, 1, tzinfo=UTC)
OWN = "run-own"
LOST_AFTER = 30.0


def session(session_id: str, run: str) -> OpenSession:
    return OpenSession(session_id=session_id, alloc_id="a1", gateway="gw", gateway_run=run, started_at=T0)


def sweep(
    seen: dict[str, Sighting], sessions: list[OpenSession], revisions: dict[str, int | None], now: float
) -> tuple[dict[str, Sighting], set[str]]:
    """One sweep, as gateway_sweep.py runs it: observe, then decide."""
    seen = observe(seen, revisions, now)
    lost = orphaned(sessions, seen, now=now, lost_after=LOST_AFTER, own_run=OWN)
    return seen, {s.session_id for s in lost}


def test_a_run_whose_entry_stops_changing_is_lost_after_the_grace_and_only_its_sessions() -> None:
    sessions = [session("s-dead", "run-dead"), session("s-dead-2", "run-dead"), session("s-live", "run-live")]
    seen, lost = sweep({}, sessions, {"run-dead": 7, "run-live": 8}, now=0.0)
    assert lost == set()
    seen, lost = sweep(seen, sessions, {"run-dead": 7, "run-live": 12}, now=15.0)
    assert lost == set()
    seen, lost = sweep(seen, sessions, {"run-dead": 7, "run-live": 20}, now=29.9)
    assert lost == set()
    seen, lost = sweep(seen, sessions, {"run-dead": 7, "run-live": 25}, now=30.0)
    assert lost == {"s-dead", "s-dead-2"}


def test_an_absent_entry_counts_from_the_first_look_not_at_once() -> None:
    sessions = [session("s1", "run-gone")]
    seen, lost = sweep({}, sessions, {"run-gone": None}, now=100.0)
    assert lost == set()
    assert seen["run-gone"] == Sighting(None, 100.0)
    _, lost = sweep(seen, sessions, {"run-gone": None}, now=130.0)
    assert lost == {"s1"}


def test_an_entry_that_vanishes_or_comes_back_is_a_change() -> None:
    sessions = [session("s1", "run-x")]
    seen, _ = sweep({}, sessions, {"run-x": 3}, now=0.0)
    seen, lost = sweep(seen, sessions, {"run-x": None}, now=29.0)  # deleted: a clean stop, or the bus
    assert (lost, seen["run-x"]) == (set(), Sighting(None, 29.0))
    seen, lost = sweep(seen, sessions, {"run-x": 9}, now=58.0)  # back: the bus had lost its entries
    assert (lost, seen["run-x"]) == (set(), Sighting(9, 58.0))


def test_the_sweepers_own_run_is_never_lost() -> None:
    sessions = [session("mine", OWN)]
    seen, _ = sweep({}, sessions, {OWN: 1}, now=0.0)
    _, lost = sweep(seen, sessions, {OWN: 1}, now=1000.0)
    assert lost == set()


def test_a_run_not_looked_up_is_not_lost_and_is_forgotten() -> None:
    seen = observe({"run-old": Sighting(4, 0.0)}, {}, now=500.0)
    assert seen == {}
    assert orphaned([session("s1", "run-old")], seen, now=500.0, lost_after=LOST_AFTER, own_run=OWN) == []


def test_after_a_blind_spot_the_count_starts_again() -> None:
    """The sweeper could not reach the bus and forgot what it saw (`{}`): a run silent all along is
    lost only `lost_after` after the first look after it, whatever came before."""
    sessions = [session("s1", "run-x")]
    seen, _ = sweep({}, sessions, {"run-x": 3}, now=0.0)
    seen, lost = sweep({}, sessions, {"run-x": 3}, now=40.0)
    assert lost == set()
    _, lost = sweep(seen, sessions, {"run-x": 3}, now=70.0)
    assert lost == {"s1"}


def test_the_detail_names_the_gateway_and_its_run() -> None:
    assert lost_detail(session("s1", "r123")) == "the gateway gw run r123 stopped without ending the session"


@given(
    refresh=st.floats(min_value=0.5, max_value=14.0),
    phase=st.floats(min_value=0.0, max_value=1.0),
    gaps=st.lists(st.floats(min_value=0.1, max_value=40.0), min_size=1, max_size=40),
)
def test_a_run_refreshing_faster_than_half_the_grace_is_never_lost_however_sweeps_fall(
    refresh: float, phase: float, gaps: list[float]
) -> None:
    """The live run puts its entry every `refresh` (the revision counts the puts); the sweeper
    looks at arbitrary times. Settings refuse a grace below twice the refresh interval."""
    sessions = [session("s1", "run-live")]
    seen: dict[str, Sighting] = {}
    now = 0.0
    for gap in gaps:
        now += gap
        revision = int((now + phase * refresh) // refresh)
        seen, lost = sweep(seen, sessions, {"run-live": revision}, now)
        assert lost == set(), (now, revision, seen)


@given(
    died_at=st.floats(min_value=0.0, max_value=100.0),
    interval=st.floats(min_value=0.5, max_value=20.0),
)
def test_a_run_that_stops_refreshing_is_lost_within_the_grace_and_one_sweep(
    died_at: float, interval: float
) -> None:
    """Sweeps every `interval`; the run puts once a second until `died_at`, then never again."""
    sessions = [session("s1", "run-dying")]
    seen: dict[str, Sighting] = {}
    now = 0.0
    while True:
        revision = int(min(now, died_at))
        seen, lost = sweep(seen, sessions, {"run-dying": revision}, now)
        if lost:
            break
        now += interval
    assert now >= died_at + LOST_AFTER - 1.0 - 1e-9  # never before the grace (a put is ≤ 1 s apart)
    assert now <= died_at + LOST_AFTER + 2 * interval + 1e-9
