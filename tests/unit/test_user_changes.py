"""An operator removes a user or changes their quota: the decisions (users.py), what follows for
the user's work (user_changes.py), and the folds that take it in (the allocator's users, the
gateway's view and its reactions), without servers."""

import pytest

from potluck.allocator.model import AllocatorModel
from potluck.allocator.user_changes import over_quota, removal_ending
from potluck.allocator.users import (
    QUOTA_MOST,
    RemovedUser,
    UsersView,
    add_user,
    change_quota,
    check_quota_bounds,
    remove_user,
    restore_user,
    rotate_token,
    token_hash,
)
from potluck.contracts.allocation_events import (
    AllocationDiscarded,
    AllocationReleased,
    CapacityFreed,
    Quota,
    UserAdded,
    UserQuotaChanged,
    UserRemoved,
    UserRestored,
    UserTokenRotated,
    alloc_stream,
    capacity_stream,
    user_stream,
)
from potluck.events import Event, Fold, RecordedEvent
from potluck.events.schema import registry
from potluck.kernel.rejections import Rejected
from potluck.sshgateway.context import SessionRegistry
from potluck.sshgateway.links import LinkPool
from potluck.sshgateway.projection import GatewayView
from potluck.sshgateway.reactions import GatewayReactions
from tests.unit.test_allocator_decisions import state
from tests.unit.test_allocator_model import T0, RecordingLog, spec
from tests.unit.test_gateway_reactions import Log, running, session_on


def folded(*events: Event) -> UsersView:
    view = UsersView()
    for event in events:
        view.apply(event)
    return view


def added(name: str, token: str, **quota: float) -> UserAdded:
    return UserAdded(user=name, token_sha256=token_hash(token), quota=Quota(**quota))


# --- removing a user ----------------------------------------------------------------------------


def test_a_removed_users_token_is_refused_and_known_as_theirs_until_the_name_is_added_again() -> None:
    """What is tried: bob added, his token rotated, then removed with a reason; then added again.
    What must hold: after the removal his token authenticates nobody, but is known as the removed
    bob's (the API says why it is refused), and his rotated-away token is not; another user is
    untouched; a rotation folded for a removed user changes nothing; added again, only the new
    token works, the removed one's is neither valid nor "removed" any more."""
    view = folded(
        added("bob", "old"),
        added("ann", "anns"),
        UserTokenRotated(user="bob", token_sha256=token_hash("bobs")),
        UserRemoved(user="bob", by="olga", reason="left the group"),
        UserTokenRotated(user="bob", token_sha256=token_hash("stray")),
    )
    assert view.authenticate("bobs") is None
    assert view.authenticate("stray") is None
    assert "bob" not in view.users
    assert view.removed_holder("bobs") == RemovedUser("bob", token_hash("bobs"), "olga", "left the group")
    assert view.removed_holder("old") is None
    assert view.removed_holder("anns") is None
    ann = view.authenticate("anns")
    assert ann is not None
    assert ann.name == "ann"
    assert view.removed["bob"].said() == "user bob was removed by the operator (olga): left the group"

    view.apply(added("bob", "new"))
    assert view.authenticate("bobs") is None
    assert view.removed_holder("bobs") is None
    assert "bob" not in view.removed
    again = view.authenticate("new")
    assert again is not None
    assert again.name == "bob"


def test_removing_decides_once_and_refuses_an_unknown_user_or_a_long_reason() -> None:
    """What is tried: remove a user, the same user again, a user never added, a reason too long,
    and a new token or a quota for a removed user.
    What must hold: the first records UserRemoved with who and why; the second records nothing;
    an unknown user is USER_NOT_FOUND (the command's exit 1) naming how to add one; a long reason
    is refused (400: exit 2); rotate-token and set-quota of a removed user say so and how to let
    them back in."""
    view = folded(added("bob", "t"))
    assert remove_user(view, "bob", by="olga", reason="token leaked") == [
        UserRemoved(user="bob", by="olga", reason="token leaked")
    ]
    view.apply(UserRemoved(user="bob", by="olga", reason="token leaked"))
    assert remove_user(view, "bob", by="olga", reason="") == []
    with pytest.raises(Rejected) as unknown:
        remove_user(view, "nobody", by="olga", reason="")
    assert (unknown.value.code, unknown.value.status) == ("USER_NOT_FOUND", 409)
    assert "potluck ops users add nobody" in unknown.value.message
    with pytest.raises(Rejected) as long:
        remove_user(folded(added("cy", "t")), "cy", by="olga", reason="x" * 501)
    assert (long.value.code, long.value.status) == ("BAD_REASON", 400)

    with pytest.raises(Rejected) as rotate:
        rotate_token(view.users.get("bob"), "bob", removed=True)
    assert rotate.value.code == "USER_REMOVED"
    assert "`potluck ops users restore bob` lets them back in" in rotate.value.message
    with pytest.raises(Rejected) as quota:
        change_quota(view.users.get("bob"), "bob", {"cpus": 1.0}, removed=True)
    assert quota.value.code == "USER_REMOVED"


def test_a_removed_users_name_is_not_given_to_another_user() -> None:
    """What is tried: bob is removed (by olga, "left the group"), then `ops users add bob` is
    decided; then a name never used, and one removed without a reason or who.
    What must hold: adding bob is refused (USER_REMOVED, not a 400: the command's exit 1) saying
    he was removed, by whom and why, that his allocations, jobs and images stay his, and how to
    let the same person back in (`ops users restore bob`); nothing is decided; a fresh name is
    added; a removal without words is said without empty parentheses."""
    view = folded(added("bob", "t"), UserRemoved(user="bob", by="olga", reason="left the group"))
    with pytest.raises(Rejected) as refused:
        add_user(view.users.get("bob"), "bob", Quota(), removed=view.removed.get("bob"))
    assert (refused.value.code, refused.value.status) == ("USER_REMOVED", 409)
    message = refused.value.message
    assert message.startswith("user bob was removed by olga (left the group), ")
    assert "allocations, jobs and images stay theirs" in message
    assert message.endswith(
        "Pick another name, or, to let the same person back in, `potluck ops users restore bob`"
    )
    events, _ = add_user(view.users.get("cy"), "cy", Quota(), removed=view.removed.get("cy"))
    assert [type(e) for e in events] == [UserAdded]

    quiet = folded(added("dee", "t"), UserRemoved(user="dee"))
    with pytest.raises(Rejected) as plain:
        add_user(None, "dee", Quota(), removed=quiet.removed.get("dee"))
    assert plain.value.message.startswith("user dee was removed, and a removed user's name")


def test_a_restored_user_is_the_same_person_back_with_a_new_token_and_their_quota() -> None:
    """What is tried: bob (2 CPUs, 3 allocations) is removed and restored, once with no quota
    given and once (from the same removal) with --cpus 4; restoring an active user, a name never
    added, and with a quota over the bounds.
    What must hold: restore records UserRestored with who, a new token (neither of his old ones)
    and the quota he had when removed, or it with only cpus changed; folded, the new token
    authenticates bob, the removed token is neither valid nor said to be a removed user's any
    more (a generic 401, as a rotated-away token's), and bob is not among the removed; an active
    user is USER_ACTIVE and an unknown one USER_NOT_FOUND (the command's exit 1); a quota over
    the bounds is BAD_QUOTA 400 (exit 2)."""
    view = folded(
        added("bob", "first", cpus=2, allocations=3),
        UserTokenRotated(user="bob", token_sha256=token_hash("second")),
        UserRemoved(user="bob", by="olga", reason="on leave"),
    )
    assert view.removed["bob"].quota == Quota(cpus=2, allocations=3)
    events, (token, quota) = restore_user(view, "bob", {}, by="olga")
    assert quota == Quota(cpus=2, allocations=3)
    assert events == [UserRestored(user="bob", token_sha256=token_hash(token), quota=quota, by="olga")]
    assert token not in ("first", "second")
    [(_, (_, more))] = [restore_user(view, "bob", {"cpus": 4.0}, by="olga")]
    assert more == Quota(cpus=4, allocations=3)

    view.apply(events[0])
    back = view.authenticate(token)
    assert back is not None
    assert (back.name, back.quota) == ("bob", quota)
    assert view.authenticate("second") is None
    assert view.removed_holder("second") is None
    assert "bob" not in view.removed

    with pytest.raises(Rejected) as active:
        restore_user(view, "bob", {}, by="olga")
    assert (active.value.code, active.value.status) == ("USER_ACTIVE", 409)
    assert "`potluck ops users rotate-token bob`" in active.value.message
    with pytest.raises(Rejected) as unknown:
        restore_user(view, "nobody", {}, by="olga")
    assert unknown.value.code == "USER_NOT_FOUND"
    view.apply(UserRemoved(user="bob"))
    with pytest.raises(Rejected) as huge:
        restore_user(view, "bob", {"allocations": 10**20}, by="olga")
    assert (huge.value.code, huge.value.status, huge.value.field) == ("BAD_QUOTA", 400, "allocations")


def test_a_removed_users_work_is_released_with_the_reason_and_kept_containers_removed() -> None:
    """What is tried: end a running, a pending, an ended-but-kept and an ended allocation of a
    removed user. What must hold: the running one is released by "operator" with the removal's
    words and its capacity freed in the same append; the pending one is released too (no host,
    nothing freed); the kept container is discarded with the words, its disk freed; the plain
    ended one needs nothing."""
    said = "user alice was removed by the operator (olga)"
    run = removal_ending(state("running"), said)
    assert [a.stream for a in run] == [alloc_stream("a1"), capacity_stream("h1")]
    assert run[0].expected_version == 2
    assert run[0].events == [AllocationReleased(alloc_id="a1", host_id="h1", by="operator", reason=said)]
    assert isinstance(run[1].events[0], CapacityFreed)

    waiting = removal_ending(state("pending", host_id=None), said)
    assert [a.stream for a in waiting] == [alloc_stream("a1")]
    assert waiting[0].events == [AllocationReleased(alloc_id="a1", host_id=None, by="operator", reason=said)]

    kept = removal_ending(state("exited", kept_until=T0), said)
    assert [type(e).__name__ for a in kept for e in a.events] == ["AllocationDiscarded", "CapacityFreed"]
    assert kept[0].events[0] == AllocationDiscarded(alloc_id="a1", host_id="h1", reason=said)

    assert removal_ending(state("exited"), said) == []


# --- changing a quota ---------------------------------------------------------------------------


def test_only_the_fields_given_change_and_bad_or_no_changes_are_refused() -> None:
    """What is tried: change cpus alone, then the same again, nothing at all, cpus to 0, and a
    user never added. What must hold: the whole new quota is recorded with only cpus changed; the
    same quota records nothing (and says what it is); no change and a bad value are 400 (exit 2)
    naming the option; an unknown user is USER_NOT_FOUND; the fold takes the new quota."""
    view = folded(added("bob", "t", cpus=8, memory_bytes=1 << 30, allocations=3))
    user = view.users["bob"]
    events, quota = change_quota(user, "bob", {"cpus": 2.0})
    assert quota == Quota(cpus=2, memory_bytes=1 << 30, allocations=3)
    assert events == [UserQuotaChanged(user="bob", quota=quota)]
    view.apply(events[0])
    assert view.users["bob"].quota == quota
    assert view.users["bob"].token_sha256 == token_hash("t")
    assert change_quota(view.users["bob"], "bob", {"cpus": 2.0}) == ([], quota)

    with pytest.raises(Rejected) as nothing:
        change_quota(user, "bob", {})
    assert (nothing.value.code, nothing.value.status) == ("NOTHING_TO_CHANGE", 400)
    assert "--cpus" in nothing.value.message
    with pytest.raises(Rejected) as bad:
        change_quota(user, "bob", {"cpus": 0.0})
    assert (bad.value.code, bad.value.status, bad.value.field) == ("BAD_QUOTA", 400, "cpus")
    assert bad.value.message.startswith("--cpus: ")
    with pytest.raises(Rejected) as unknown:
        change_quota(None, "nobody", {"cpus": 1.0})
    assert unknown.value.code == "USER_NOT_FOUND"


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("cpus", 1e300, "--cpus: at most 100,000, "),
        ("cpus", 100_000.5, "--cpus: at most 100,000, "),
        ("allocations", 99999999999999999999, "--allocations: at most 1,000,000, "),
        ("memory_bytes", (1 << 50) + 1, "--memory: at most 1024T (1 PiB), "),
        ("disk_bytes", 1 << 60, "--disk: at most 1024T (1 PiB), "),
    ],
)
def test_a_quota_over_its_bounds_is_refused_where_the_operator_decides(
    field: str, value: float, said: str
) -> None:
    """What is tried: set-quota, add and restore with one field past its bound (1e300 CPUs,
    20-digit allocations, memory or disk past 1 PiB).
    What must hold: each is BAD_QUOTA 400 (the command's exit 2, nothing recorded) naming the
    option and its bound; each field at its bound is taken; a quota over the bounds recorded
    before them still folds, and changing another of its fields leaves it as it is."""
    view = folded(added("bob", "t"), added("old", "o"), UserRemoved(user="old"))
    for decide in (
        lambda: change_quota(view.users["bob"], "bob", {field: value}),
        lambda: check_quota_bounds(Quota(**{field: value}).model_dump()),  # as `ops users add` does
        lambda: restore_user(view, "old", {field: value}, by="olga"),
    ):
        with pytest.raises(Rejected) as refused:
            decide()
        assert (refused.value.code, refused.value.status) == ("BAD_QUOTA", 400)
        assert refused.value.message.startswith(said), refused.value.message
    _, quota = change_quota(view.users["bob"], "bob", {field: QUOTA_MOST[field]})
    assert getattr(quota, field) == QUOTA_MOST[field]
    check_quota_bounds(Quota(**QUOTA_MOST).model_dump())

    before = folded(added("big", "t", **{field: value}))
    assert getattr(before.users["big"].quota, field) == value
    other = "allocations" if field != "allocations" else "cpus"
    _, kept = change_quota(before.users["big"], "big", {other: 2})
    assert getattr(kept, field) == value


def test_a_lowered_quota_keeps_what_is_held_and_refuses_the_waiting_requests_it_does_not_admit() -> None:
    """What is tried: a user holds 2 running CPUs, a job's attempt waits for 1, and their own
    requests wait for 2 then 0.5 (oldest first); the quota is lowered to 3.5 CPUs, then raised.
    What must hold: nothing held is refused (even over the quota), the job's attempt is never
    refused, the 2-CPU request is (saying the quota was lowered and what it would hold), and the
    later 0.5-CPU one still fits beside what counts before it; a quota with room refuses nothing."""
    held = [
        state("running", alloc_id="r1", spec=spec(2), requested_at=T0),
        state("pending", alloc_id="job-1", spec=spec(1), job_id="j1", host_id=None, requested_at=T0),
        state("pending", alloc_id="big", spec=spec(2), host_id=None, requested_at=T0.replace(minute=1)),
        state("pending", alloc_id="small", spec=spec(0.5), host_id=None, requested_at=T0.replace(minute=2)),
    ]
    lowered = Quota(cpus=3.5, memory_bytes=64 << 30, disk_bytes=64 << 30)
    refused = over_quota(lowered, reversed(held))
    assert [(s.alloc_id, why) for s, why in refused] == [
        ("big", "the user's quota was lowered: this would hold 5 CPUs, your quota is 3.5")
    ]
    assert over_quota(Quota(cpus=1), held[:1]) == []  # held over the quota: kept
    assert over_quota(Quota(cpus=8), held) == []


# --- the folds ----------------------------------------------------------------------------------


def test_the_allocator_model_folds_removals_and_quota_changes_from_user_streams() -> None:
    """What is tried: the model folds bob's stream: added, quota changed, removed, added again
    (as older commands recorded), removed, restored.
    What must hold: each step is what the user's view says: the quota in force, then no bob (his
    name among the removed), then the new bob with the default quota; restored, bob with the
    quota in force when he was removed."""
    log = RecordingLog()
    stream = user_stream("bob")
    log.add(stream, added("bob", "t", cpus=4))
    log.add(stream, UserQuotaChanged(user="bob", quota=Quota(cpus=1)))
    model = AllocatorModel()
    fold = Fold(model, reader="test")
    fold.apply_all(log.records)
    assert model.users.users["bob"].quota == Quota(cpus=1)
    log.add(stream, UserRemoved(user="bob", by="olga"))
    fold.apply_all(log.records)
    assert "bob" not in model.users.users
    assert set(model.users.removed) == {"bob"}
    log.add(stream, added("bob", "new"))
    fold.apply_all(log.records)
    assert model.users.users["bob"].quota == Quota()
    assert model.users.removed == {}
    log.add(stream, UserQuotaChanged(user="bob", quota=Quota(cpus=3)))
    log.add(stream, UserRemoved(user="bob", by="olga"))
    fold.apply_all(log.records)
    assert "bob" not in model.users.users
    [(_, (token, quota))] = [restore_user(model.users, "bob", {}, by="olga")]
    log.add(stream, UserRestored(user="bob", token_sha256=token_hash(token), quota=quota, by="olga"))
    fold.apply_all(log.records)
    assert model.users.users["bob"].quota == Quota(cpus=3)
    assert model.users.authenticate(token) is not None
    assert model.users.removed == {}


def test_the_gateway_refuses_a_removed_users_allocations_and_ends_their_sessions_at_once() -> None:
    """What is tried: ann runs a1 with an open session; bob's a2 runs with one too; ann is
    removed, then restored.
    What must hold: on the removal (before any allocation event) ann's session is ended saying
    her user was removed, and `admitted` refuses a1, which the view still holds; bob's session
    and a2 are untouched; restored, her allocation is admitted again."""
    view, sessions = GatewayView(), SessionRegistry()
    fold = Fold(GatewayReactions(view, sessions, LinkPool()), reader="sshgateway")
    log = Log()
    fold.apply_all(running(log, "a1"))
    fold.apply_all([log(r.stream, _as_bob(r)) for r in running(Log(), "a2")])
    hers, his = session_on("a1"), session_on("a2")
    sessions.add(hers)
    sessions.add(his)

    fold.apply(log(user_stream("ann"), UserRemoved(user="ann", by="olga", reason="")))
    assert hers.ends == [
        ("ALLOCATION_ENDED", "your user was removed by the pool's operator; the session ended")
    ]
    assert his.ends == []
    assert view.allocation("a1") is not None
    assert view.admitted("a1") is None
    assert view.admitted("a2") is not None

    fold.apply(log(user_stream("ann"), UserRestored(user="ann", token_sha256="ab", quota=Quota())))
    assert view.admitted("a1") is not None


def _as_bob(record: RecordedEvent) -> Event:
    """The event of `record` as if bob had made it."""
    event = registry.decode_record(record)
    return event.model_copy(update={"user": "bob"}) if "user" in type(event).model_fields else event


@pytest.mark.parametrize("name", ["bob", "b0b", "a-b", "a--b", "a__b", "a_b-c", "x" * 32])
def test_a_name_the_pool_registry_takes_as_a_namespace_is_a_users_name(name: str) -> None:
    """What is tried: adding a user whose name is a path component of the pool registry.
    What must hold: the user is added, under that name."""
    [added], _ = add_user(None, name, Quota())
    assert isinstance(added, UserAdded)
    assert added.user == name


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("bob-", "ending with a letter or digit"),
        ("bob_", "ending with a letter or digit"),
        ("a_-b", "no '-' next to a '_'"),
        ("a___b", "no '-' next to a '_'"),
        ("1bob", "starting with a letter"),
        ("Bob", "[a-z0-9_-]"),
        ("x" * 33, "1-32"),
        ("library", "the pool's own images"),
    ],
)
def test_a_name_that_cannot_be_a_registry_namespace_or_is_the_pools_own_is_refused(
    name: str, said: str
) -> None:
    """What is tried: adding a user whose name the pool registry cannot take as their namespace
    (before, `bob-` was added and could push no image), or `library`, the namespace of the
    pool's own images (no user could write there, but one called so looked as if they could).
    What must hold: BAD_USER_NAME (400), saying what a name may be; nothing is decided."""
    with pytest.raises(Rejected) as refused:
        add_user(None, name, Quota())
    assert (refused.value.code, refused.value.status) == ("BAD_USER_NAME", 400)
    assert said in refused.value.message, refused.value.message
