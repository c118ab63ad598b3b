"""The Host aggregate: decides which events a command on a host produces.

Pure functions of the current HostState and the command; the handlers load the
state, call these, and append the result with the stream's expected version.
Repeating a command that already took effect produces no event.
"""

from datetime import datetime

from potluck.contracts.host_events import (
    Actor,
    HostDeregistered,
    HostDrainStarted,
    HostEnrolled,
    HostJoined,
    HostJoinTokenIssued,
    HostLost,
    HostPaused,
    HostRecovered,
    HostRegistered,
    HostResumed,
    HostSleeping,
    HostSuspected,
    HostWoke,
)
from potluck.contracts.messages import ControlHost, RegisterHost, SleepNotice
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState


def enroll(state: HostState | None, host_id: str, name: str, nkey: str) -> list[Event]:
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


def register(state: HostState | None, host_id: str, req: RegisterHost) -> list[Event]:
    current = _require_enrolled(state, host_id)
    event = HostRegistered(
        host_id=host_id,
        donated=req.donated,
        labels=req.labels,
        allowed_images=req.allowed_images,
        allow_network=req.allow_network,
        engine=req.engine,
        hostd_version=req.hostd_version,
        ssh_host_key=req.ssh_host_key,
    )
    unchanged = (
        current.registered
        and current.donated == req.donated
        and current.labels == req.labels
        and list(current.allowed_images) == req.allowed_images
        and current.allow_network == req.allow_network
        and current.engine == req.engine
        and current.hostd_version == req.hostd_version
        and current.ssh_host_key == req.ssh_host_key
    )
    if unchanged:
        return (
            []
            if current.liveness == "online"
            else [HostRecovered(host_id=host_id, was=current.liveness or "lost")]
        )
    return [event]


def control(state: HostState | None, host_id: str, cmd: ControlHost, by: Actor) -> list[Event]:
    current = _require_enrolled(state, host_id)
    if current.admin == "deregistered" or not current.registered:
        raise Rejected("NOT_REGISTERED", f"host {host_id} is not registered; start its hostd first")
    match cmd.action:
        case "pause":
            return [] if current.admin == "paused" else [HostPaused(host_id=host_id, by=by)]
        case "resume":
            return [] if current.admin == "active" else [HostResumed(host_id=host_id, by=by)]
        case "drain":
            if current.admin == "draining":
                return []
            return [HostDrainStarted(host_id=host_id, by=by, grace_s=cmd.grace_s)]
        case "deregister":
            return [HostDeregistered(host_id=host_id, by=by)]
    raise Rejected("UNKNOWN_ACTION", f"unknown action {cmd.action!r}", field="action", status=400)


def beat_returned(state: HostState) -> list[Event]:
    """A beat from a host the log has as asleep, unreachable or lost: it is back.

    An asleep host's beat is HostRecovered(was="asleep"), not HostWoke: a beat says the
    machine is up, not how long it slept (hostd stops beating once it announced sleep, and
    says HostWoke itself with the figure on waking; the beat may overtake that notice).
    """
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
