"""The Host aggregate: decides which events a command on a host produces.

Pure functions of the current HostState and the command; the handlers load the
state, call these, and append the result with the stream's expected version.
Repeating a command that already took effect produces no event.

Leaving (HostLeft) and revocation (HostRevoked) are final: a gone host's
registration and controls are refused with HOST_LEFT or HOST_REVOKED
(`gone_refusal`), unlike a deregistration, which the next registration lifts.

A registration's labels are held to potluck.contracts.host_labels' bound here, where it is
decided (BAD_LABELS): a hostd of another version, or a member who sends the message by hand,
gets a refusal naming the labels at fault, and nothing is recorded.
"""

from collections.abc import Iterable
from datetime import datetime

from potluck.contracts.compatibility import CONTRACT_VERSION, mismatch
from potluck.contracts.host_events import (
    ENGINE_DETAIL_CHARS,
    Actor,
    HostConnectionsCapped,
    HostDeregistered,
    HostDrainStarted,
    HostEngineLost,
    HostEngineReturned,
    HostEnrolled,
    HostFrozen,
    HostJoined,
    HostJoinTokenIssued,
    HostLeft,
    HostLost,
    HostPaused,
    HostRecovered,
    HostRegistered,
    HostResumed,
    HostRevoked,
    HostShareRestored,
    HostSleeping,
    HostSuspected,
    HostThrottled,
    HostWoke,
)
from potluck.contracts.host_labels import BAD_LABELS, InvalidLabels, check_labels, value_problem
from potluck.contracts.messages import ControlHost, PolicyChanged, RegisterHost, SleepNotice
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState

#: The label that names a machine: the name an operator enrolled it under (`_named`).
NAME_LABEL = "name"


def check_name(name: str) -> str:
    """`name` if a machine may be enrolled as it; else BAD_NAME. The name becomes the host's
    `name` label (`potluck join` writes it into hostd.toml) and is shown wherever hosts are
    listed, so it is held to a label value's bound (potluck.contracts.host_labels), and is
    not empty."""
    problem = "is empty" if not name else value_problem(name)
    if problem is not None:
        raise Rejected("BAD_NAME", f"the name {name[:40]!r} {problem}", field="name", status=400)
    return name


def name_holder(hosts: Iterable[HostState], name: str, now: datetime) -> HostState | None:
    """The machine that holds `name`, if one does: users select machines by name, so an
    operator enrolling a second machine under it would send work meant for one to either.
    A name is free again once its machine left or was revoked, or when its join token
    expired unredeemed (nothing can ever register as that host then)."""
    for host in hosts:
        if host.name != name or host.gone:
            continue
        unredeemed = not host.registered and not host.nkey
        if unredeemed and host.join_expires_at is not None and host.join_expires_at <= now:
            continue
        return host
    return None


def refuse_taken_name(hosts: Iterable[HostState], name: str, now: datetime) -> None:
    """NAME_TAKEN (409) when another machine holds `name` (name_holder), saying how to free it."""
    holder = name_holder(hosts, name, now)
    if holder is None:
        return
    raise Rejected(
        "NAME_TAKEN",
        f"the name {name!r} is held by {holder.host_id} ({holder.status}); choose another name, "
        f"or revoke that machine first (`potluck ops hosts revoke {holder.host_id}`)",
        field="name",
        status=409,
    )


def enroll(state: HostState | None, host_id: str, name: str, nkey: str) -> list[Event]:
    check_name(name)
    if state is not None:
        raise Rejected("HOST_EXISTS", f"host {host_id} is already enrolled as {state.name!r}")
    return [HostEnrolled(host_id=host_id, name=name, nkey=nkey)]


# --- Join tokens (`potluck ops hosts enroll` without credentials, then `potluck join`) ---


def issue_token(
    state: HostState | None, host_id: str, *, token_sha256: str, join_nkey: str, expires_at: datetime
) -> list[Event]:
    """A join token for a host enrolled without a key of its own; a new one replaces an unspent one."""
    current = _require_enrolled(state, host_id)
    if current.gone:
        raise Rejected("HOST_GONE", f"host {host_id} is {current.admin}; enroll the machine anew")
    if current.nkey:
        raise Rejected("ALREADY_JOINED", f"host {host_id} has joined already; its token is spent")
    return [
        HostJoinTokenIssued(
            host_id=host_id, token_sha256=token_sha256, join_nkey=join_nkey, expires_at=expires_at
        )
    ]


def join(
    state: HostState | None, host_id: str, *, token_sha256: str, nkey: str, now: datetime
) -> list[Event]:
    """Redeem the host's join token: its digest must match the unspent, unexpired one."""
    used = "this join token was already used or has expired; ask the operator for a new one"
    if state is None:
        raise Rejected("UNKNOWN_TOKEN", "no such join token; ask the operator for a new one", status=404)
    if state.gone:
        raise Rejected(
            "HOST_GONE",
            f"host {host_id} is {state.admin}; ask the operator to enroll this machine anew",
            status=403,
        )
    if not state.join_token_sha256:
        if state.nkey:
            raise Rejected("TOKEN_SPENT", used, status=409)
        raise Rejected("UNKNOWN_TOKEN", "no such join token; ask the operator for a new one", status=404)
    if state.join_token_sha256 != token_sha256:
        raise Rejected("UNKNOWN_TOKEN", "no such join token; ask the operator for a new one", status=404)
    if state.join_expires_at is not None and now >= state.join_expires_at:
        raise Rejected(
            "TOKEN_EXPIRED",
            f"this join token expired at {state.join_expires_at.isoformat()}; ask the operator for a new one",
            status=410,
        )
    return [HostJoined(host_id=host_id, nkey=nkey)]


def _require_enrolled(state: HostState | None, host_id: str) -> HostState:
    if state is None:
        raise Rejected(
            "NOT_ENROLLED",
            f"host {host_id} is not enrolled; ask an operator to enroll it",
            status=404,
        )
    return state


def _named(current: HostState, labels: dict[str, str]) -> dict[str, str]:
    """The labels a registration records: the member's, with `name` the operator's.

    Users' requests select machines by their `name` (`"constraints": {"name": "laptop-ann"}`),
    and a placement carries the user's SSH keys and secrets to the machine: were the member's
    word the name, a hostd could call itself after another machine and be sent the work its
    users meant for that one. The name is the one the machine was enrolled under (BAD_LABELS
    for another; filled in when hostd.toml, written by hand, has none). A host enrolled before
    names were recorded keeps what it says."""
    if not current.name:
        return labels
    said = labels.get(NAME_LABEL)
    if said is not None and said != current.name:
        raise Rejected(
            BAD_LABELS,
            f"this machine's labels say name={said[:40]!r}, but an operator enrolled it as "
            f"{current.name!r}: the name is the operator's; set name = {current.name!r} or remove it "
            "from [labels] in hostd.toml",
            field="labels",
            status=400,
        )
    return {**labels, NAME_LABEL: current.name}


def register(state: HostState | None, host_id: str, req: RegisterHost) -> list[Event]:
    current = _require_present(state, host_id)
    if req.contract != CONTRACT_VERSION:
        # Registered, it would be sent what it cannot read (or send what the services cannot).
        refusal = mismatch(req.contract, CONTRACT_VERSION)
        raise Rejected("CONTRACT_MISMATCH", refusal, field="contract", status=409)
    try:
        check_labels(req.labels)  # as sent, so that the refusal speaks of the member's own
        labels = _named(current, req.labels)
        check_labels(labels)  # the name added may make one label too many
    except InvalidLabels as exc:
        said = f"this machine's labels are outside what the pool takes: {exc}; change [labels] in hostd.toml"
        raise Rejected(BAD_LABELS, said, field="labels", status=400) from None
    event = HostRegistered(
        host_id=host_id,
        donated=req.donated,
        labels=labels,
        allowed_images=req.allowed_images,
        allow_network=req.allow_network,
        engine=req.engine,
        hostd_version=req.hostd_version,
        ssh_host_key=req.ssh_host_key,
        contract=req.contract,
    )
    unchanged = (
        current.registered
        and current.donated == req.donated
        and current.labels == labels
        and list(current.allowed_images) == req.allowed_images
        and current.allow_network == req.allow_network
        and current.engine == req.engine
        and current.hostd_version == req.hostd_version
        and current.ssh_host_key == req.ssh_host_key
        and current.contract == req.contract
    )
    if unchanged:
        return (
            []
            if current.liveness == "online"
            else [HostRecovered(host_id=host_id, was=current.liveness or "lost")]
        )
    return [event]


def control(
    state: HostState | None, host_id: str, cmd: ControlHost, by: Actor, *, now: datetime
) -> list[Event]:
    """The member's or an operator's control; one already in effect records nothing. A drain
    asked during a drain starts again only if its grace ends before the one under way (the
    member needs the machine sooner); a longer one does not put the end off."""
    if cmd.action == "leave":
        return leave(state, host_id, by)
    current = _require_present(state, host_id)
    if current.admin == "deregistered" or not current.registered:
        raise Rejected("NOT_REGISTERED", f"host {host_id} is not registered; start its hostd first")
    match cmd.action:
        case "pause":
            return [] if current.admin == "paused" else [HostPaused(host_id=host_id, by=by)]
        case "resume":
            return [] if current.admin == "active" else [HostResumed(host_id=host_id, by=by)]
        case "drain":
            left = current.drain_left_s(now)
            if left is not None and cmd.grace_s >= left:
                return []
            return [HostDrainStarted(host_id=host_id, by=by, grace_s=cmd.grace_s)]
        case "deregister":
            return [HostDeregistered(host_id=host_id, by=by)]
    raise Rejected("UNKNOWN_ACTION", f"unknown action {cmd.action!r}", field="action", status=400)


# --- leaving and revocation: final until an operator enrolls the machine anew -----------------


def gone_refusal(state: HostState) -> Rejected | None:
    """Why nothing a left or revoked host asks is honoured (None: it is not gone).

    The one wording of HOST_LEFT and HOST_REVOKED: the registry's gate answers every
    request of a gone host with it, and hostd stops on it instead of retrying.
    """
    if state.admin == "left":
        return Rejected(
            "HOST_LEFT",
            f"this machine ({state.host_id}) left the pool; ask an operator to enroll it again",
            status=410,
        )
    if state.admin == "revoked":
        why = f": {state.revoked_reason}" if state.revoked_reason else ""
        return Rejected(
            "HOST_REVOKED",
            f"this machine ({state.host_id}) was revoked by {state.revoked_by}{why}; "
            "ask an operator to enroll it again",
            status=403,
        )
    return None


def _require_present(state: HostState | None, host_id: str) -> HostState:
    """Enrolled, and neither left nor revoked."""
    current = _require_enrolled(state, host_id)
    refusal = gone_refusal(current)
    if refusal is not None:
        raise refusal
    return current


def leave(state: HostState | None, host_id: str, by: Actor) -> list[Event]:
    """The member takes the machine back for good; leaving twice records nothing.

    Allowed from any state but revoked (a deregistered host may still leave for good):
    `potluck host leave` drains first, so what still runs here is lost with the host.
    """
    current = _require_enrolled(state, host_id)
    if current.admin == "left":
        return []
    if current.admin == "revoked":
        refusal = gone_refusal(current)
        assert refusal is not None
        raise refusal
    return [HostLeft(host_id=host_id, by=by)]


#: Bounds of what an operator writes as a revocation's reason (it is shown to users).
MAX_REASON = 500


def revoke(state: HostState | None, host_id: str, by: str, reason: str) -> list[Event]:
    """An operator evicts the machine; revoking twice records nothing (the first reason stands).

    A host that left may still be revoked (a machine stolen after its member left): the
    event records who and why.
    """
    current = _require_enrolled(state, host_id)
    if current.admin == "revoked":
        return []
    by = by.strip()
    if not by:
        raise Rejected("BAD_REQUEST", "a revocation names who revoked the host", field="by", status=400)
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise Rejected(
            "BAD_REQUEST", f"the reason is longer than {MAX_REASON} characters", field="reason", status=400
        )
    return [HostRevoked(host_id=host_id, by=by, reason=reason)]


def cap_connections(
    state: HostState | None, host_id: str, connections: int, limit: int, until: datetime, now: datetime
) -> list[Event]:
    """The host's keys held `connections` NATS connections, more than `limit`: shut them out
    until `until` (potluck.registry.connection_caps decides when), its own key and its join
    token's keys. Nothing for a host with no key in the users file (unknown, left, revoked) or
    one shut out already: a second look at the connections the first cap is closing does not
    lengthen it."""
    if state is None or state.gone or connections <= limit or state.capped(now):
        return []
    if not (state.nkey or state.join_nkey or state.spent_join_nkey):
        return []
    return [
        HostConnectionsCapped(
            host_id=host_id,
            connections=connections,
            limit=limit,
            until=until,
            for_s=max(0.001, (until - now).total_seconds()),
        )
    ]


# --- liveness ---------------------------------------------------------------------------------


def beat_returned(state: HostState, now: datetime | None = None) -> list[Event]:
    """A beat from a host the log has as asleep, unreachable or lost: it is back.

    An asleep host's beat is HostRecovered(was="asleep"), not HostWoke: a beat says the
    machine is up, not how long it slept (hostd stops beating once it announced sleep, and
    says HostWoke itself with the figure on waking; the beat may overtake that notice).

    A beat while its connections are capped (at `now`) is none: it came on a connection the
    server is closing (the key left the users file a moment before), and recovering the host
    then made it placeable again for the whole cap (seen: recovered 60 ms after the cap, an
    allocation placed there waited the cooldown out).
    """
    if now is not None and state.capped(now):
        return []
    if state.registered and state.liveness in ("unreachable", "asleep", "lost"):
        return [HostRecovered(host_id=state.host_id, was=state.liveness)]
    return []


def went_silent(
    state: HostState, silent_for_s: float, *, suspect_after_s: float, stranded_grace_s: float
) -> list[Event]:
    """Silence: unreachable past the suspect time (unless it said it sleeps), lost past the
    stranded grace whether asleep or unreachable."""
    if not state.registered:
        return []
    if state.liveness in ("online", "unreachable", "asleep") and silent_for_s >= stranded_grace_s:
        return [HostLost(host_id=state.host_id, silent_for_s=round(silent_for_s, 3))]
    if state.liveness == "online" and silent_for_s >= suspect_after_s:
        return [HostSuspected(host_id=state.host_id, silent_for_s=round(silent_for_s, 3))]
    return []


# --- Sleep: announced before it happens, or told on waking (SleepNotice) ----------------------


def sleep_noticed(state: HostState | None, host_id: str, notice: SleepNotice) -> list[Event]:
    """hostd's SleepNotice: about to sleep (`slept_s` None), or woke after `slept_s`."""
    current = _require_enrolled(state, host_id)
    if not current.registered:
        raise Rejected("NOT_REGISTERED", f"host {host_id} is not registered; start its hostd first")
    if notice.slept_s is None:
        return slept(current)
    return woke(current, notice.slept_s)


def slept(state: HostState) -> list[Event]:
    """The machine is going to sleep: asleep at once, its allocations wait for it."""
    if state.liveness == "asleep":
        return []
    return [HostSleeping(host_id=state.host_id)]


def woke(state: HostState, slept_s: float) -> list[Event]:
    """The machine slept `slept_s` and is back, whatever the registry made of its silence
    meanwhile (asleep, unreachable, lost, or online for a nap shorter than the suspect time).

    hostd repeats a notice until it is answered: the same figure again on an online host is
    that repeat, and records nothing.
    """
    slept_s = round(slept_s, 3)
    if state.liveness == "online" and state.slept_s == slept_s:
        return []
    return [HostWoke(host_id=state.host_id, slept_s=slept_s)]


# The owner policy: hostd tells each change of its state (PolicyChanged), and again after
# every registration; the same state again records nothing.


def policy_changed(state: HostState | None, host_id: str, msg: PolicyChanged) -> list[Event]:
    current = _require_enrolled(state, host_id)
    if not current.registered or current.gone:
        raise Rejected("NOT_REGISTERED", f"host {host_id} is not registered; start its hostd first")
    if msg.state == "normal":
        return [] if current.policy == "normal" else [HostShareRestored(host_id=host_id, reason=msg.reason)]
    if msg.cause is None:
        raise Rejected("BAD_REQUEST", f"a {msg.state} policy names its cause", field="cause", status=400)
    if msg.state == "throttled":
        share = msg.share_cpus if msg.share_cpus is not None else 0.0
        if (
            current.policy == "throttled"
            and current.policy_cause == msg.cause
            and current.policy_share_cpus == share
        ):
            return []
        return [HostThrottled(host_id=host_id, cause=msg.cause, reason=msg.reason, share_cpus=share)]
    if current.policy == "frozen" and current.policy_cause == msg.cause:
        return []
    return [HostFrozen(host_id=host_id, cause=msg.cause, reason=msg.reason, max_frozen_s=msg.max_frozen_s)]


# The Docker engine: hostd reports it (EngineStatus, on `potluck.report.<host_id>.engine`) when
# it stops or starts answering, at hostd's start, and after every reconnect; the same state
# again records nothing.


def engine_reported(state: HostState | None, available: bool, detail: str = "") -> list[Event]:
    """The host's hostd says its engine answers (`available`) or stopped answering; nothing for
    a host the log does not have registered (never registered, deregistered, left, revoked):
    placement does not look at those, and a hostd that starts reports its engine anew."""
    if state is None or not state.registered or state.gone:
        return []
    if available:
        return [HostEngineReturned(host_id=state.host_id)] if state.engine_away else []
    if state.engine_away:
        return []
    return [HostEngineLost(host_id=state.host_id, detail=detail[:ENGINE_DETAIL_CHARS])]
