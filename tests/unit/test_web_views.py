"""The web pages' values (services/allocator/web/views.py, history.py), folded from a log in memory.

What must hold: the pool page's bars, totals and states are the model's; a
viewer sees their own allocation ids and only counts of others'; `?at=` folds
exactly the log up to a position or a time; the day's samples follow the log.
"""

from datetime import timedelta

import jinja2
import pytest

from potluck.allocator.members import new_member_token
from potluck.allocator.users import token_hash
from potluck.allocator.web import history, views
from potluck.allocator.web.routes import HERE
from potluck.contracts.allocation_events import AllocationRequested, alloc_stream
from potluck.contracts.host_events import HostFrozen, HostShareRestored, HostThrottled, host_stream
from potluck.contracts.member_events import MemberTokenIssued, member_stream
from tests.unit.test_allocator_model import RecordingLog, cap, folded, host, placed, spec


def pool_log() -> RecordingLog:
    log = RecordingLog()
    host(log, "h1", cap(4, 8), room="study")
    host(log, "h2", cap(2, 2), note="<img src=x onerror=alert(1)>")
    placed(log, "a1", "alice", "h1", spec(1, 2))  # positions 5..8
    placed(log, "a2", "bob", "h1", spec(1, 2))
    log.add(
        host_stream("h2"),
        HostThrottled(host_id="h2", cause="owner", reason="the owner is gaming", share_cpus=0.5),
    )
    log.add(alloc_stream("a3"), AllocationRequested(alloc_id="a3", user="bob", spec=spec(8), lifetime_s=60))
    return log


def test_the_pool_page_shows_bars_totals_states_and_the_queue_as_the_viewer_may_see_them() -> None:
    model, fold = folded(pool_log())

    page = views.pool_page(model, fold.position, viewer="alice")

    h1, h2 = page.hosts
    assert (h1.host_id, h1.status, h1.allocations, h1.mine) == ("h1", "active", 2, ("a1",))
    assert [(b.name, b.used, b.donated, b.percent) for b in h1.bars] == [
        ("CPU", "2", "4", 50),
        ("memory", "4.0G", "8.0G", 50),
        ("disk", "4.0G", "8.0G", 50),
    ]
    assert h2.status == "throttled"
    assert "owner" in h2.why
    assert "the owner is gaming" in h2.why
    cpu = page.totals[0]
    assert (cpu.used, cpu.donated, cpu.percent) == ("2", "6", 33)
    (waiting,) = page.queue
    assert waiting.user == "bob"
    assert waiting.alloc_id == ""  # bob's, so not alice's to see
    assert views.pool_page(model, fold.position, viewer="bob").queue[0].alloc_id == "a3"


def test_the_pool_template_escapes_what_members_and_users_wrote() -> None:
    model, fold = folded(pool_log())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)

    html = env.get_template("_pool.html").render(pool=views.pool_page(model, fold.position, "alice"))

    assert "<img" not in html
    assert "note=&lt;img src=x onerror=alert(1)&gt;" in html


def test_at_a_position_or_a_time_folds_the_log_up_to_it_and_no_further() -> None:
    log = pool_log()
    before_a1 = log.records[3]  # h2 registered; a1 not yet requested

    by_position, position = history.fold_until(log.records, history.parse_at(str(before_a1.position)))
    by_time, _ = history.fold_until(log.records, history.parse_at(before_a1.recorded_at.isoformat()))
    naive = before_a1.recorded_at.replace(tzinfo=None).isoformat()
    by_naive_time, _ = history.fold_until(log.records, history.parse_at(naive))

    assert position == before_a1.position
    for model in (by_position, by_time, by_naive_time):
        assert set(model.hosts.hosts) == {"h1", "h2"}
        assert model.allocations.allocations == {}
    assert views.pool_page(by_position, position).totals[0].used == "0"


@pytest.mark.parametrize("raw", ["yesterday", "", "12:00:00Z-", "-3", "\u00b2", "\u0663"])
def test_at_refuses_what_is_neither_a_position_nor_a_time(raw: str) -> None:
    with pytest.raises(ValueError, match="neither a log position nor an ISO time"):
        history.parse_at(raw)


@pytest.mark.parametrize("raw", ["9" * 20, "1" * 5000])
def test_at_refuses_a_position_of_more_digits_than_any_and_names_no_interpreter_setting(raw: str) -> None:
    with pytest.raises(ValueError, match="past any log position") as refused:
        history.parse_at(raw)
    assert "sys." not in str(refused.value)
    assert history.parse_at("0" * 30 + "7").position == 7  # leading zeros are no digits of a position


def test_the_days_samples_follow_the_log_and_plot_within_the_box() -> None:
    log = pool_log()
    end = log.records[-1].recorded_at + timedelta(seconds=1)

    series = history.samples(log.records, end, points=30, span=timedelta(seconds=30))
    cpu = history.plot(series, "cpus", width=300, height=100)

    assert len(series) == 30
    assert series[0].donated.cpus == 0  # before the first host
    assert (series[-1].donated.cpus, series[-1].reserved.cpus) == (6, 2)
    assert [s.reserved.cpus for s in series] == sorted(s.reserved.cpus for s in series)
    points = [tuple(map(float, p.split(","))) for p in cpu.reserved.split()]
    assert len(points) == 30
    assert all(0 <= x <= 300 and 0 <= y <= 100 for x, y in points)
    assert series[0].at == end - timedelta(seconds=30)
    assert series[-1].at == end


def test_a_members_token_shows_their_hosts_only_and_a_new_one_replaces_it() -> None:
    log = pool_log()
    first, second = new_member_token(), new_member_token()
    log.add(member_stream("h2"), MemberTokenIssued(token_sha256=token_hash(first), host_ids=["h1", "h2"]))
    log.add(member_stream("h2"), MemberTokenIssued(token_sha256=token_hash(second), host_ids=["h2"]))
    model, _ = folded(log)

    old, new = model.members.authenticate(first), model.members.authenticate(second)
    machines = views.machine_page(model, new.host_ids if new else ())
    series = history.samples(log.records, log.records[-1].recorded_at, points=5, only=frozenset({"h2"}))

    assert old is not None
    assert old.host_ids == ("h1",)  # h2 went to the newer token
    assert new is not None
    assert new.host_ids == ("h2",)
    assert model.members.authenticate("pm_" + "x" * 43) is None
    ((machine),) = machines
    assert (machine.host.host_id, machine.policy, machine.share) == ("h2", "throttled", "0.5 of 2 CPU")
    assert machine.host.mine == ()  # never another user's allocation ids
    assert (series[-1].donated.cpus, series[-1].reserved.cpus) == (2, 0)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_folding_the_log_a_batch_at_a_time_gives_what_folding_it_whole_gives(size: int) -> None:
    """past.py feeds the log to Until and Sampler a batch at a time: the model, its position and
    the samples must be those of the whole log at once, whatever the batches' size."""
    log = pool_log()
    records = log.records
    end = records[-1].recorded_at + timedelta(seconds=1)
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    for moment in (history.Moment(position=records[6].position), history.Moment(at=records[4].recorded_at)):
        until = history.Until(moment)
        for batch in batches:
            if not until.feed(batch):
                break
        whole, position = history.fold_until(records, moment)
        assert until.position == position
        assert views.pool_page(until.model, position, "alice") == views.pool_page(whole, position, "alice")
    for span in (timedelta(seconds=30), timedelta(seconds=5)):
        sampler = history.Sampler(end - timedelta(seconds=8), points=10, span=span)
        for batch in batches:
            if not sampler.feed(batch):
                break
        assert sampler.series() == history.samples(records, end - timedelta(seconds=8), points=10, span=span)


def test_my_machine_shows_how_long_it_may_stay_frozen_only_while_the_policy_freezes_it() -> None:
    """Tried: a member's host under a policy of max_frozen_s 3600 goes normal, then frozen (its
    HostFrozen carries 3600), then throttled, then back to its full share; a second host is
    frozen by a member who set no limit (`inf`, None on the wire). The "My machine" fragment is
    rendered at each step.
    Must hold: while frozen the page says "frozen at most 3600 s"; whenever the host is not
    frozen it shows no such line at all, never a false "no limit" (the pool does not know the
    member's value then); the host frozen with no limit says "no limit"."""
    log = pool_log()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)

    def shown(host_id: str) -> tuple[str | None, str]:
        model, _ = folded(log)
        (machine,) = views.machine_page(model, (host_id,))
        return machine.max_frozen, env.get_template("_machine.html").render(machines=(machine,))

    max_frozen, html = shown("h1")
    assert max_frozen is None
    assert "frozen at most" not in html
    assert "no limit" not in html

    log.add(
        host_stream("h1"), HostFrozen(host_id="h1", cause="window", reason="office hours", max_frozen_s=3600)
    )
    max_frozen, html = shown("h1")
    assert max_frozen == "3600 s"
    assert "<dt>frozen at most</dt><dd>3600 s</dd>" in html

    log.add(host_stream("h1"), HostThrottled(host_id="h1", cause="owner", reason="busy", share_cpus=1.0))
    assert shown("h1")[0] is None
    log.add(host_stream("h1"), HostShareRestored(host_id="h1"))
    max_frozen, html = shown("h1")
    assert max_frozen is None
    assert "frozen at most" not in html

    log.add(
        host_stream("h2"), HostFrozen(host_id="h2", cause="battery", reason="on battery", max_frozen_s=None)
    )
    max_frozen, html = shown("h2")
    assert max_frozen == "no limit"
    assert "<dt>frozen at most</dt><dd>no limit</dd>" in html
