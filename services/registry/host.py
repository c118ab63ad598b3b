"""The Host aggregate: decides which events a command on a host produces.

Pure functions of the current HostState and the command; the handlers load the
state, call these, and append the result with the stream's expected version.
Repeating a command that already took effect produces no event.
"""

from potluck.contracts.host_events import (
    Actor,
    HostDeregistered,
    HostDrainStarted,
    HostEnrolled,
    HostFrozen,
    HostLost,
    HostPaused,
    HostRecovered,
    HostRegistered,
    HostResumed,
    HostShareRestored,
    HostSuspected,
    HostThrottled,
)
from potluck.contracts.messages import ControlHost, PolicyChanged, RegisterHost
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState


def enroll(state: HostState | None, host_id: str, name: str, nkey: str) -> list[Event]:
    if state is not None:
        raise Rejected("HOST_EXISTS", f"host {host_id} is already enrolled as {state.name!r}")
    return [HostEnrolled(host_id=host_id, name=name, nkey=nkey)]


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
    if state.registered and state.liveness in ("unreachable", "asleep", "lost"):
        return [HostRecovered(host_id=state.host_id, was=state.liveness)]
    return []


def went_silent(
    state: HostState, silent_for_s: float, *, suspect_after_s: float, lost_after_s: float
) -> list[Event]:
    if not state.registered:
        return []
    if state.liveness in ("online", "unreachable", "asleep") and silent_for_s >= lost_after_s:
        return [HostLost(host_id=state.host_id, silent_for_s=round(silent_for_s, 3))]
    if state.liveness == "online" and silent_for_s >= suspect_after_s:
        return [HostSuspected(host_id=state.host_id, silent_for_s=round(silent_for_s, 3))]
    return []


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
