"""Placement: a snapshot of the hosts and a request in, a decision out (Nomad's scheduler, in small).

Pure: no I/O, no clock, no randomness. The same inputs always give the same
decision.

Decisions
    ``Placed(host_id)``   a schedulable host has the request free now.
    ``Wait(reason)``      some host matching the request could hold it (judged on
                          its donation) but none that is schedulable has it free
                          now: the request waits in the fair queue.
                          ``NO_FREE_CAPACITY``: a schedulable host could hold it
                          once capacity frees; ``NO_SCHEDULABLE_HOST``: only hosts
                          that are away (asleep, unreachable, lost), paused,
                          draining, frozen by their owner's policy, or whose
                          Docker engine stopped answering could;
                          ``NO_HOST_REGISTERED``: the pool has no host at all
                          (between members), so nothing can be judged impossible.
    ``Impossible(...)``   no registered host, whatever its liveness or admin
                          state, could ever give it (HTTP 422). ``code`` is
                          ``NO_HOST_MATCHES`` (field ``constraints``: no host
                          has its labels, or only hollow hosts, which take
                          only requests constrained to ``hollow=true``),
                          ``NO_HOST_ALLOWS_IMAGE`` (field ``image``),
                          ``NO_HOST_ALLOWS_NETWORK`` (field ``network``: the
                          request wants a network and no matching host that
                          allows the image lets containers have one) or
                          ``EXCEEDS_ANY_HOST`` (field ``cpus``, ``memory`` or
                          ``disk``: the first resource, in that order, that no
                          matching host donates together with the ones before it).
                          ``NO_HOST_LEFT`` (field ``image``): every host that
                          admits the request is one it must not go to again
                          (``excluded_hosts``: they could not get its image).

Scoring
    Free capacity is measured in reference shares: one cpu weighs as much as
    4 GiB of memory and as 256 GiB of disk. ``best_fit`` (the default, bin
    packing) chooses the schedulable host that has the request free with the
    smallest score, i.e. the least weighted capacity left over after placing;
    ``spread`` the one with the largest. Ties go to the smallest host id.
    Because the weights are fixed (not relative to each host), a host's score
    does not depend on the request, which lets ``Scheduler`` keep the hosts
    sorted once and answer each request without looking at all of them.

Image locality
    Among the hosts that could take the request now, those that already hold
    its image (``held_images``, as hostd reported them) come first; the
    strategy chooses within them, and among the others only when none of them
    has room. It is a preference, never a constraint: it is weighed only
    between hosts that the member's allow-list, the labels and the free
    capacity already admit, so it cannot send an image where it would be
    refused nor past a host's capacity, and it never turns a placement into a
    wait. A host that must pull the image is slower to start (Kubernetes'
    ImageLocality scores the same way, as one score among others; here it is
    the first one because a pull dwarfs any packing gain).

Throttled hosts
    A host whose owner's policy cut the pool's CPU (``throttled``: the owner
    uses the machine, it runs on battery or hot, or it is the member's busy
    hours) still takes work, but only when no host that is not throttled has
    room: new work there would start slow and slow the owner down. This
    preference comes before image locality (a pull is paid once, a throttle
    for as long as it lasts) and, like it, never turns a placement into a wait
    or sends work past what the member admits. A *frozen* host takes nothing
    new at all: it is not schedulable (HostState.schedulable).

Hollow hosts
    A host labelled ``hollow=true`` (``HOLLOW_LABEL``: ``potluck ops hollow``,
    an in-memory engine for scale tests) accepts work and runs none of it. It
    takes only a request constrained to ``hollow=true``; every other request
    is decided as if it were not in the pool, so no user's work and no job's
    task "runs" on nothing. A refusal that set hollow hosts aside says so
    (``HOLLOW_ASIDE``): when only hollow hosts match, ``NO_HOST_MATCHES``
    names them rather than claiming the pool has no such host; otherwise the
    refusal's own reason carries the note. ``Scheduler`` keeps them in a
    ``Scheduler`` of their own, which only requests that want them open.

Two implementations of one rule
    ``place(hosts, request)`` looks at every host: the plain statement of the
    rule, for a one-off decision. ``Scheduler`` holds the same hosts grouped
    by levels of their free cpus and memory, each group sorted by score, and
    is kept current by ``reserve``/``release``/``set_host``; its ``place``
    gives the same decision as ``place(scheduler.snapshots(), request)`` (the
    unit and property tests hold it to that) without looking at most hosts: it
    opens only groups that could hold the request, best first, and stops as
    soon as no unopened group can beat what it found. A request that names a
    label is decided among the hosts carrying it, by an index of their own
    (bench/README.md, placement, has the profiles).
"""

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import Literal, TypeAlias

from potluck.contracts.capacity import Capacity
from potluck.contracts.host_images import image_keys
from potluck.contracts.host_labels import HOLLOW_LABEL
from potluck.contracts.image_reference import image_allowed
from potluck.contracts.registry_locality import named_registries
from potluck.kernel.sizes import format_size

Strategy = Literal["best_fit", "spread"]
STRATEGIES: tuple[Strategy, ...] = ("best_fit", "spread")

GIB = 1 << 30
#: What one reference share of each resource is (see "Scoring" above).
CPU_UNIT = 1.0
MEMORY_UNIT = 4 * GIB
DISK_UNIT = 256 * GIB
#: Capacity.fits_in allows this much rounding on cpus; so does every check here.
CPU_TOLERANCE = 1e-9
#: Below this much under the request's own score no host can hold the request.
_SCORE_SLACK = 1e-6

ZERO = Capacity.model_construct(cpus=0.0, memory_bytes=0, disk_bytes=0)

NO_FREE_CAPACITY = "NO_FREE_CAPACITY"
NO_SCHEDULABLE_HOST = "NO_SCHEDULABLE_HOST"
NO_HOST_REGISTERED = "NO_HOST_REGISTERED"
NO_HOST_MATCHES = "NO_HOST_MATCHES"
NO_HOST_ALLOWS_IMAGE = "NO_HOST_ALLOWS_IMAGE"
NO_HOST_ALLOWS_NETWORK = "NO_HOST_ALLOWS_NETWORK"
EXCEEDS_ANY_HOST = "EXCEEDS_ANY_HOST"
NO_HOST_LEFT = "NO_HOST_LEFT"

# HOLLOW_LABEL (potluck.contracts.host_labels, where hostd's hollow hosts take it from too):
# hollow hosts run nothing, so only requests constrained to it may go there.
_HOLLOW_KEY, _HOLLOW_VALUE = HOLLOW_LABEL
#: Said after a refusal whose reason holds only because hollow hosts were set aside.
HOLLOW_ASIDE = f"hollow hosts take only requests constrained to {_HOLLOW_KEY}={_HOLLOW_VALUE}"

WAIT_MESSAGES: Mapping[str, str] = {
    NO_FREE_CAPACITY: "no host has that much free right now; the request waits until capacity frees",
    NO_SCHEDULABLE_HOST: (
        "only hosts that are away, paused, draining or frozen by their owner, or whose Docker "
        "engine stopped answering (or whose hostd awaits an upgrade), could hold the request; "
        "it waits for one to return"
    ),
    NO_HOST_REGISTERED: (
        "no host is in the pool right now (none has joined yet, or every one has left or been "
        "revoked); the request waits for one to join"
    ),
}


def score(cpus: float, memory_bytes: int, disk_bytes: int) -> float:
    """Capacity in reference shares; monotonic in each argument."""
    return cpus / CPU_UNIT + memory_bytes / MEMORY_UNIT + disk_bytes / DISK_UNIT


@dataclass(frozen=True)
class HostSnapshot:
    """A host as placement sees it. ``allowed_images`` holds image patterns (see
    potluck.contracts.image_reference); empty allows any image. ``allow_network``: its
    member lets containers that ask for a network run there. ``held_images``: the
    normalised names of the images its engine holds (potluck.contracts.host_images).
    ``throttled``: its owner's policy cut the pool's CPU there; it is chosen last."""

    host_id: str
    donated: Capacity
    reserved: Capacity = ZERO
    labels: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = True
    allowed_images: tuple[str, ...] = ()
    allow_network: bool = False
    held_images: frozenset[str] = frozenset()
    throttled: bool = False

    @property
    def free(self) -> Capacity:
        return self.donated - self.reserved


@dataclass(frozen=True)
class PlacementRequest:
    """What to place. Every constraint must equal the host's label of that name; a request
    with ``network`` goes only to hosts that allow it, and none goes to a host in
    ``excluded_hosts`` (hosts it was sent back from: they could not get its image).
    ``local_registry``: the image's registry when its very name puts it on a member's own
    machine or network and it is not the pool's (potluck.contracts.registry_locality); only
    hosts whose members name it, without a wildcard, in ``allowed_images`` take the request,
    for every other host's hostd would refuse the pull."""

    alloc_id: str
    resources: Capacity
    constraints: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    network: bool = False
    excluded_hosts: frozenset[str] = frozenset()
    local_registry: str | None = None


@dataclass(frozen=True)
class Placed:
    host_id: str


@dataclass(frozen=True)
class Wait:
    reason: str

    @property
    def message(self) -> str:
        return WAIT_MESSAGES.get(self.reason, self.reason)


@dataclass(frozen=True)
class Impossible:
    code: str
    message: str
    field: str


Decision: TypeAlias = Placed | Wait | Impossible


# --- one host, as both implementations see it ------------------------------------------------


class _Host:
    """Mutable per-host bookkeeping: donated and reserved as plain numbers, and its index entries."""

    __slots__ = (
        "dc",
        "dd",
        "dm",
        "donated",
        "donated_entry",
        "free_entry",
        "free_group",
        "held",
        "host_id",
        "images",
        "labels",
        "network",
        "rc",
        "rd",
        "rm",
        "schedulable",
        "throttled",
    )

    def __init__(self, snapshot: HostSnapshot) -> None:
        self.host_id = snapshot.host_id
        self.donated = snapshot.donated
        self.dc = snapshot.donated.cpus
        self.dm = snapshot.donated.memory_bytes
        self.dd = snapshot.donated.disk_bytes
        self.rc = snapshot.reserved.cpus
        self.rm = snapshot.reserved.memory_bytes
        self.rd = snapshot.reserved.disk_bytes
        self.labels: Mapping[str, str] = dict(snapshot.labels)
        self.images = tuple(snapshot.allowed_images)
        self.schedulable = snapshot.schedulable
        self.network = snapshot.allow_network
        self.held = snapshot.held_images
        self.throttled = snapshot.throttled
        self.free_entry: _Entry | None = None
        self.free_group: _Group | None = None  # where free_entry sits, so taking it out finds it at once
        self.donated_entry: _Entry | None = None

    def free_values(self) -> tuple[float, int, int]:
        # Exactly Capacity.__sub__, so both implementations see the same numbers.
        return round(self.dc - self.rc, 6), self.dm - self.rm, self.dd - self.rd

    def snapshot(self) -> HostSnapshot:
        return HostSnapshot(
            host_id=self.host_id,
            donated=self.donated,
            reserved=Capacity.model_construct(cpus=self.rc, memory_bytes=self.rm, disk_bytes=self.rd),
            labels=dict(self.labels),
            schedulable=self.schedulable,
            allowed_images=self.images,
            allow_network=self.network,
            held_images=self.held,
            throttled=self.throttled,
        )


def _fits(c: float, m: int, d: int, fc: float, fm: int, fd: int) -> bool:
    return c <= fc + CPU_TOLERANCE and m <= fm and d <= fd


def _labels_match(labels: Mapping[str, str], constraints: tuple[tuple[str, str], ...]) -> bool:
    return all(labels.get(k) == v for k, v in constraints)


def is_hollow(labels: Mapping[str, str]) -> bool:
    """The host runs nothing (HOLLOW_LABEL): only requests that want hollow hosts go there."""
    return labels.get(_HOLLOW_KEY) == _HOLLOW_VALUE


def wants_hollow(request: PlacementRequest) -> bool:
    """The request is constrained to HOLLOW_LABEL: the only kind a hollow host takes."""
    return request.constraints.get(_HOLLOW_KEY) == _HOLLOW_VALUE


def _image_allowed(patterns: tuple[str, ...], request: PlacementRequest) -> bool:
    """A host with these `allowed_images` takes the request's image (any image if none)."""
    image = request.image
    if image is None:
        return True
    if request.local_registry is not None and not _names(patterns, request.local_registry):
        return False
    return not patterns or _allows(patterns, image)


@lru_cache(maxsize=4096)
def _names(patterns: tuple[str, ...], registry: str) -> bool:
    return registry in named_registries(patterns)


@lru_cache(maxsize=4096)
def _image_keys(image: str) -> tuple[str, ...]:
    return image_keys(image)


@lru_cache(maxsize=4096)
def _allows(patterns: tuple[str, ...], image: str) -> bool:
    # Pure and asked again for every decision on the same few pattern lists and images.
    return image_allowed(patterns, image)


def _admits(host: _Host, request: PlacementRequest) -> bool:
    """The host's member allows what the request asks for: its image and, if wanted, a network."""
    return (host.network or not request.network) and _image_allowed(host.images, request)


def _cpus(c: float) -> str:
    return f"{c:g} cpu" + ("" if c == 1 else "s")


def _no_match(request: PlacementRequest, hollow_aside: bool = False) -> Impossible:
    """No host matches the request's constraints; `hollow_aside`: hollow hosts would, had the
    request wanted them."""
    if request.constraints:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(request.constraints.items()))
        if hollow_aside:
            message = f"no host in the pool has the labels {wanted} but hollow hosts, and {HOLLOW_ASIDE}"
            return Impossible(NO_HOST_MATCHES, message, "constraints")
        return Impossible(NO_HOST_MATCHES, f"no host in the pool has the labels {wanted}", "constraints")
    if hollow_aside:
        # Not "no host is registered": there are hosts, and a constraint is what would reach them.
        message = f"no host in the pool takes it: the pool has only hollow hosts, and {HOLLOW_ASIDE}"
        return Impossible(NO_HOST_MATCHES, message, "constraints")
    # Only where hollow hosts are decided apart (Scheduler.place says so in their words): with
    # no host at all, both `place`s wait (NO_HOST_REGISTERED).
    return Impossible(EXCEEDS_ANY_HOST, "no host is registered in the pool", "cpus")


def _hollow_noted(refusal: Impossible) -> Impossible:
    """A refusal among the hosts left once hollow ones were set aside: true only with that said."""
    return Impossible(refusal.code, f"{refusal.message} ({HOLLOW_ASIDE})", refusal.field)


def _image_refused(request: PlacementRequest) -> Impossible:
    where = " matching the constraints" if request.constraints else ""
    if request.local_registry is not None:
        message = (
            f"no host{where} names the registry {request.local_registry} in its allowed_images: it is "
            "on the machine or network of whichever host would pull from it, and a host pulls from "
            "there only what its member named; push the image to the pool registry "
            "(`potluck image push`)"
        )
        return Impossible(NO_HOST_ALLOWS_IMAGE, message, "image")
    return Impossible(NO_HOST_ALLOWS_IMAGE, f"no host{where} allows the image {request.image!r}", "image")


def _network_refused(request: PlacementRequest, images_narrowed: bool) -> Impossible:
    where = " matching the constraints" if request.constraints else ""
    if images_narrowed:
        where += f" that allows the image {request.image!r}"
    message = (
        f"no host{where} lets containers have a network: a member allows it with `allow_network = "
        "true` in their hostd.toml (ask one, or an operator); without one, bring files and "
        "packages in with `potluck cp` (e.g. wheels for `pip install --no-index --find-links`)"
    )
    return Impossible(NO_HOST_ALLOWS_NETWORK, message, "network")


def _none_left(request: PlacementRequest) -> Impossible:
    tried = ", ".join(sorted(request.excluded_hosts))
    return Impossible(
        NO_HOST_LEFT,
        f"every host that could take it was tried and could not get the image {request.image!r} ({tried})",
        "image",
    )


def _refused(request: PlacementRequest, matching: Sequence[_Host]) -> tuple[Impossible | None, bool]:
    """Why no host that matches the constraints admits the request (None if one does), and
    whether some matching host does not admit it (narrowed)."""
    images = [h for h in matching if _image_allowed(h.images, request)]
    if not images:
        return _image_refused(request), True
    admitted = [h for h in images if h.network or not request.network]
    if not admitted:
        return _network_refused(request, len(images) < len(matching)), True
    return None, len(admitted) < len(matching)


def _exceeds(
    request: PlacementRequest,
    field: Literal["cpus", "memory", "disk"],
    narrowed: bool,
    hosts: Iterable[_Host],
) -> Impossible:
    """`narrowed`: some host that matches the constraints does not admit the request; `hosts`:
    those that admit it, whose largest donation of `field` the refusal names (what could be
    asked instead: "no host donates 64 cpus" alone left the user guessing)."""
    r = request.resources
    wanted = {
        "cpus": _cpus(r.cpus),
        "memory": f"{_cpus(r.cpus)} with {format_size(r.memory_bytes)} of memory",
        "disk": (
            f"{_cpus(r.cpus)} with {format_size(r.memory_bytes)} of memory "
            f"and {format_size(r.disk_bytes)} of disk"
        ),
    }[field]
    where = " matching the constraints" if request.constraints else ""
    if narrowed:
        where += " that allows " + (
            f"the image {request.image!r}" + (" and a network" if request.network else "")
            if request.image is not None
            else "a network"
        )
    return Impossible(EXCEEDS_ANY_HOST, f"no host{where} donates {wanted}{_largest(r, field, hosts)}", field)


def _largest(r: Capacity, field: Literal["cpus", "memory", "disk"], hosts: Iterable[_Host]) -> str:
    """The most of `field` a host in `hosts` donates along with the resources before it that
    `r` asks for, as a refusal's ending ("" when no host donates even those)."""
    if field == "cpus":
        most = max((h.dc for h in hosts), default=None)
        return "" if most is None else f"; the most a host donates is {_cpus(most)}"
    if field == "memory":
        memory = max((h.dm for h in hosts if h.dc + CPU_TOLERANCE >= r.cpus), default=None)
        said = f"; the most memory a host with {_cpus(r.cpus)} donates is {format_size(memory or 0)}"
        return "" if memory is None else said
    disk = max(
        (h.dd for h in hosts if h.dc + CPU_TOLERANCE >= r.cpus and h.dm >= r.memory_bytes), default=None
    )
    with_both = f"{_cpus(r.cpus)} and {format_size(r.memory_bytes)} of memory"
    return "" if disk is None else f"; the most disk a host with {with_both} donates is {format_size(disk)}"


def _holds(host: _Host, keys: tuple[str, ...]) -> bool:
    return any(k in host.held for k in keys)


def _best_among(
    allowed: Iterable[_Host], request: PlacementRequest, strategy: Strategy, keys: tuple[str, ...]
) -> str | None:
    """The schedulable host, among hosts that admit the request, that has it free and comes
    first: not throttled, then holding the image (`keys`), then by the strategy's score, then by
    host id."""
    r = request.resources
    c, m, d = r.cpus, r.memory_bytes, r.disk_bytes
    best: tuple[int, int, float, str] | None = None
    for h in allowed:
        if h.schedulable:
            fc, fm, fd = h.free_values()
            if _fits(c, m, d, fc, fm, fd):
                s = score(fc, fm, fd)
                key = (
                    1 if h.throttled else 0,
                    0 if _holds(h, keys) else 1,
                    s if strategy == "best_fit" else -s,
                    h.host_id,
                )
                if best is None or key < best:
                    best = key
    return None if best is None else best[3]


def _decide_over(hosts: Iterable[_Host], request: PlacementRequest, strategy: Strategy) -> Decision:
    """The rule, by looking at every host: what `place` does, and `Scheduler` for small candidate sets."""
    constraints = tuple(request.constraints.items())
    matching = [h for h in hosts if _labels_match(h.labels, constraints)]
    aside = False
    if not wants_hollow(request):
        kept = [h for h in matching if not is_hollow(h.labels)]
        aside, matching = len(kept) < len(matching), kept
    if not matching:
        return _no_match(request, aside)
    decision = _decide_among(matching, request, strategy)
    return _hollow_noted(decision) if aside and isinstance(decision, Impossible) else decision


def _decide_among(matching: list[_Host], request: PlacementRequest, strategy: Strategy) -> Decision:
    """The rule among the hosts that match the request's constraints and may take it (hollow
    or not); there is at least one."""
    r = request.resources
    c, m, d = r.cpus, r.memory_bytes, r.disk_bytes
    refused, narrowed = _refused(request, matching)
    if refused is not None:
        return refused
    allowed = [h for h in matching if _admits(h, request)]
    if request.excluded_hosts:
        allowed = [h for h in allowed if h.host_id not in request.excluded_hosts]
        if not allowed:
            return _none_left(request)
    keys = _image_keys(request.image) if request.image is not None else ()
    chosen = _best_among(allowed, request, strategy, keys)
    if chosen is not None:
        return Placed(chosen)
    if any(h.schedulable and _fits(c, m, d, h.dc, h.dm, h.dd) for h in allowed):
        return Wait(NO_FREE_CAPACITY)
    if any(_fits(c, m, d, h.dc, h.dm, h.dd) for h in allowed):
        return Wait(NO_SCHEDULABLE_HOST)
    if not any(_fits(c, 0, 0, h.dc, h.dm, h.dd) for h in allowed):
        return _exceeds(request, "cpus", narrowed, allowed)
    if not any(_fits(c, m, 0, h.dc, h.dm, h.dd) for h in allowed):
        return _exceeds(request, "memory", narrowed, allowed)
    return _exceeds(request, "disk", narrowed, allowed)


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown placement strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def place(
    hosts: Sequence[HostSnapshot], request: PlacementRequest, strategy: Strategy = "best_fit"
) -> Decision:
    """Decide where `request` goes among `hosts` (every registered host, schedulable or not)."""
    _check_strategy(strategy)
    if not hosts:
        # A pool between members (a restored log's `potluck up` revokes the old host before its
        # new one joins; the only member leaves) is not one that can never hold the request, nor
        # one where no host has its labels for good.
        return Wait(NO_HOST_REGISTERED)
    return _decide_over((_Host(h) for h in hosts), request, strategy)


# --- the index ------------------------------------------------------------------------------

#: (score, host_id, cpus, memory, disk): sorted by score, then host id (unique within an index).
_Entry: TypeAlias = tuple[float, str, float, int, int]
_Accept: TypeAlias = Callable[[str], bool] | None

_M = 1 << 20
#: A host's group is the largest level at or below its cpus (plus the tolerance), and at or
#: below its memory.
CPU_LEVELS: tuple[float, ...] = (
    *(0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 16.0),
    *(20.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0, 512.0),
)
MEMORY_LEVELS: tuple[int, ...] = (
    *(0, 128 * _M, 256 * _M, 512 * _M, 768 * _M, GIB, 3 * GIB // 2, 2 * GIB, 3 * GIB, 4 * GIB),
    *(5 * GIB, 6 * GIB, 7 * GIB, 8 * GIB, 10 * GIB, 12 * GIB, 14 * GIB, 16 * GIB, 20 * GIB, 24 * GIB),
    *(32 * GIB, 48 * GIB, 64 * GIB, 96 * GIB, 128 * GIB, 192 * GIB, 256 * GIB, 512 * GIB, 1024 * GIB),
)


def _level(levels: Sequence[float], value: float) -> int:
    i = bisect_right(levels, value) - 1
    return i if i > 0 else 0


class _Group:
    """Entries whose cpus (plus the tolerance) and memory fall in one pair of levels, sorted by
    (score, host_id).

    ``lb``: no entry of the group that could hold a request scores below it (the score of
    its levels, less the tolerance on cpus)."""

    __slots__ = ("ci", "entries", "lb", "mi")

    def __init__(self, ci: int, mi: int) -> None:
        self.ci = ci
        self.mi = mi
        self.entries: list[_Entry] = []
        self.lb = score(CPU_LEVELS[ci] - CPU_TOLERANCE, MEMORY_LEVELS[mi], 0)


def _group_order(g: _Group) -> tuple[float, int, int]:
    return (g.lb, g.ci, g.mi)


class _Index:
    """Entries grouped by the levels of their cpus and memory.

    A search opens only the groups whose levels could hold the request. Best fit
    visits them by their lower bound and stops as soon as no group left can beat
    what it found; inside a group it starts at the request's own score and reads
    entries in order. Hosts that best fit has left nearly full sit in low groups
    it never opens. Groups are kept once made (there are at most a few hundred
    pairs of levels), so the candidate groups of each request level are worked
    out once; a new group is slotted into them.
    """

    __slots__ = ("_candidates_at", "_groups", "_size")

    def __init__(self) -> None:
        self._groups: dict[tuple[int, int], _Group] = {}
        self._candidates_at: dict[tuple[int, int], list[_Group]] = {}
        self._size = 0

    def __bool__(self) -> bool:
        return self._size > 0

    def _group_of(self, e: _Entry) -> _Group:
        # Levels on cpus plus the tolerance: a request's own level then finds every host that
        # holds it within the tolerance.
        key = (_level(CPU_LEVELS, e[2] + CPU_TOLERANCE), _level(MEMORY_LEVELS, e[3]))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(*key)
            # Into the candidate lists it belongs to, in order: a pool filling up makes new
            # groups often, and working every list out anew cost more than the searches.
            for (ci, mi), candidates in self._candidates_at.items():
                if group.ci >= ci and group.mi >= mi:
                    insort(candidates, group, key=_group_order)
        return group

    def add(self, e: _Entry) -> "_Group":
        """Add the entry; returns its group, for `discard`."""
        group = self._group_of(e)
        insort(group.entries, e)
        self._size += 1
        return group

    def discard(self, e: _Entry, group: "_Group | None" = None) -> None:
        """Take out the entry (from `group`, when the caller knows it from `add`)."""
        entries = (group or self._group_of(e)).entries
        j = bisect_left(entries, e)
        if j == len(entries) or entries[j] != e:
            raise KeyError(e[1])
        del entries[j]
        self._size -= 1

    def _candidates(self, c: float, m: int) -> list[_Group]:
        """Groups whose levels could hold (c, m), by lower bound."""
        key = (_level(CPU_LEVELS, c), _level(MEMORY_LEVELS, m))
        found = self._candidates_at.get(key)
        if found is None:
            ci, mi = key
            found = sorted((g for g in self._groups.values() if g.ci >= ci and g.mi >= mi), key=_group_order)
            self._candidates_at[key] = found
        return found

    def best_fit(self, c: float, m: int, d: int, accept: _Accept) -> _Entry | None:
        """The smallest entry in (score, host_id) order that holds (c, m, d)."""
        key = (score(c, m, d) - _SCORE_SLACK,)  # nothing below this can hold the request
        tol = CPU_TOLERANCE
        best: _Entry | None = None
        for g in self._candidates(c, m):
            if best is not None and g.lb > best[0]:
                break  # this group and the ones after it score above what was found
            entries = g.entries
            j = bisect_left(entries, key)
            n = len(entries)
            # A group's levels most often hold the request: its first entry from the key on is
            # then its answer, and one comparison rules it out or in.
            while j < n:
                e = entries[j]
                if best is not None and e >= best:
                    break
                if c <= e[2] + tol and m <= e[3] and d <= e[4] and (accept is None or accept(e[1])):
                    best = e
                    break
                j += 1
        return best

    def widest(self, c: float, m: int, d: int, accept: _Accept) -> _Entry | None:
        """The entry with the largest score that holds (c, m, d); among equals, the smallest host id."""
        tops = sorted(
            ((g.entries[-1][0], g) for g in self._candidates(c, m) if g.entries),
            key=lambda t: t[0],
            reverse=True,
        )
        tol = CPU_TOLERANCE
        best: _Entry | None = None
        for top, g in tops:
            if best is not None and top < best[0]:
                break
            entries = g.entries
            for e in reversed(entries):
                if best is not None and e[0] < best[0]:
                    break
                if c <= e[2] + tol and m <= e[3] and d <= e[4] and (accept is None or accept(e[1])):
                    # The first entry of this score that holds it has the smallest host id.
                    for low in islice(entries, bisect_left(entries, (e[0],)), None):
                        if (
                            c <= low[2] + tol
                            and m <= low[3]
                            and d <= low[4]
                            and (accept is None or accept(low[1]))
                        ):
                            e = low
                            break
                    if best is None or e[0] > best[0] or e[1] < best[1]:
                        best = e
                    break
        return best

    def any_fit(self, c: float, m: int, d: int, accept: _Accept) -> bool:
        tol = CPU_TOLERANCE
        for g in self._candidates(c, m):
            for e in g.entries:
                if c <= e[2] + tol and m <= e[3] and d <= e[4] and (accept is None or accept(e[1])):
                    return True
        return False


class Scheduler:
    """The hosts of the pool, indexed for placement; `place` is a pure function of what it holds.

    Keep it in step with the registry and the capacity ledger through
    `set_host`, `remove_host`, `set_schedulable`, `set_throttled` and `set_reserved` (or
    `reserve`/`release` for tentative reservations). It does no I/O and never
    changes itself while deciding, but for the label indexes it builds the first
    time a request names a label (see `place`).
    """

    #: Candidate sets no larger than this (the hosts carrying the rarest
    #: required label) are decided by looking at each of them.
    SMALL_CANDIDATES = 16

    def __init__(
        self, hosts: Iterable[HostSnapshot] = (), *, label_indexes: bool = True, hollow_apart: bool = True
    ) -> None:
        self._hosts: dict[str, _Host] = {}
        self._free = _Index()  # schedulable hosts not throttled, by free capacity
        self._free_throttled = _Index()  # schedulable hosts throttled by their owner's policy
        self._donated_on = _Index()  # schedulable hosts, by donated capacity
        self._donated_off = _Index()  # the other registered hosts, by donated capacity
        self._by_label: dict[tuple[str, str], set[str]] = {}
        self._restricted: dict[tuple[str, ...], set[str]] = {}  # image patterns -> hosts limited to them
        self._networked: set[str] = set()  # hosts that allow containers a network
        self._holders: dict[str, set[str]] = {}  # image name -> hosts that hold it
        #: For a label some requests require: a Scheduler of the hosts that carry it, kept in
        #: step with this one (None: this is one of them).
        self._labelled: dict[tuple[str, str], Scheduler] | None = {} if label_indexes else None
        #: The hollow hosts (see "Hollow hosts"), in a Scheduler of their own that only requests
        #: wanting them open, so that no other request ever weighs or skips one (None: this is
        #: that Scheduler, or a label's index, which the request was routed to already).
        self._hollow: Scheduler | None = (
            Scheduler(label_indexes=label_indexes, hollow_apart=False) if hollow_apart else None
        )
        for snapshot in hosts:
            self.set_host(snapshot)

    # -- keeping it current --

    def __len__(self) -> int:
        return len(self._hosts) + (len(self._hollow) if self._hollow is not None else 0)

    def __contains__(self, host_id: object) -> bool:
        return host_id in self._hosts or (self._hollow is not None and host_id in self._hollow)

    def _holder(self, host_id: str) -> "Scheduler":
        """The Scheduler that holds the host: this one, or that of the hollow hosts (KeyError:
        neither)."""
        if host_id in self._hosts or self._hollow is None or host_id not in self._hollow:
            return self
        return self._hollow

    def _label_indexes_of(self, host: _Host) -> "list[Scheduler]":
        labelled = self._labelled
        if not labelled:
            return []
        return [index for pair in host.labels.items() if (index := labelled.get(pair)) is not None]

    def set_host(self, snapshot: HostSnapshot) -> None:
        """Add a host, or replace everything known about it."""
        self.remove_host(snapshot.host_id)
        if self._hollow is not None and is_hollow(snapshot.labels):
            self._hollow.set_host(snapshot)
            return
        host = _Host(snapshot)
        self._hosts[host.host_id] = host
        for pair in host.labels.items():
            self._by_label.setdefault(pair, set()).add(host.host_id)
        if host.images:
            self._restricted.setdefault(host.images, set()).add(host.host_id)
        if host.network:
            self._networked.add(host.host_id)
        for name in host.held:
            self._holders.setdefault(name, set()).add(host.host_id)
        host.donated_entry = (score(host.dc, host.dm, host.dd), host.host_id, host.dc, host.dm, host.dd)
        (self._donated_on if host.schedulable else self._donated_off).add(host.donated_entry)
        self._index_free(host)
        for index in self._label_indexes_of(host):
            index.set_host(snapshot)

    def remove_host(self, host_id: str) -> None:
        host = self._hosts.pop(host_id, None)
        if host is None:
            if self._hollow is not None:
                self._hollow.remove_host(host_id)
            return
        for pair in host.labels.items():
            members = self._by_label[pair]
            members.discard(host_id)
            if not members:
                del self._by_label[pair]
        if host.images:
            limited = self._restricted[host.images]
            limited.discard(host_id)
            if not limited:
                del self._restricted[host.images]
        self._networked.discard(host_id)
        for name in host.held:
            holders = self._holders[name]
            holders.discard(host_id)
            if not holders:
                del self._holders[name]
        if host.donated_entry is not None:
            (self._donated_on if host.schedulable else self._donated_off).discard(host.donated_entry)
        self._unindex_free(host)
        for index in self._label_indexes_of(host):
            index.remove_host(host_id)

    def set_schedulable(self, host_id: str, schedulable: bool) -> None:
        if (holder := self._holder(host_id)) is not self:
            holder.set_schedulable(host_id, schedulable)
            return
        host = self._hosts[host_id]
        if host.schedulable == schedulable:
            return
        self._unindex_free(host)
        assert host.donated_entry is not None
        (self._donated_on if host.schedulable else self._donated_off).discard(host.donated_entry)
        host.schedulable = schedulable
        (self._donated_on if host.schedulable else self._donated_off).add(host.donated_entry)
        self._index_free(host)
        for index in self._label_indexes_of(host):
            index.set_schedulable(host_id, schedulable)

    def set_throttled(self, host_id: str, throttled: bool) -> None:
        """The host's owner policy throttled it (True) or gave the pool its share back."""
        if (holder := self._holder(host_id)) is not self:
            holder.set_throttled(host_id, throttled)
            return
        host = self._hosts[host_id]
        if host.throttled == throttled:
            return
        self._unindex_free(host)
        host.throttled = throttled
        self._index_free(host)
        for index in self._label_indexes_of(host):
            index.set_throttled(host_id, throttled)

    def set_reserved(self, host_id: str, reserved: Capacity) -> None:
        """Mirror the ledger's reserved amount for a host exactly."""
        if (holder := self._holder(host_id)) is not self:
            holder.set_reserved(host_id, reserved)
            return
        host = self._hosts[host_id]
        if host.rc == reserved.cpus and host.rm == reserved.memory_bytes and host.rd == reserved.disk_bytes:
            return  # often so: an append that lands moves a reservation from in flight to the ledger
        self._unindex_free(host)
        host.rc, host.rm, host.rd = reserved.cpus, reserved.memory_bytes, reserved.disk_bytes
        self._index_free(host)
        for index in self._label_indexes_of(host):
            index.set_reserved(host_id, reserved)

    def reserve(self, host_id: str, amount: Capacity) -> None:
        """Add to a host's reservation (the same arithmetic as Capacity.__add__)."""
        if (holder := self._holder(host_id)) is not self:
            holder.reserve(host_id, amount)
            return
        host = self._hosts[host_id]
        self._unindex_free(host)
        host.rc = round(host.rc + amount.cpus, 6)
        host.rm += amount.memory_bytes
        host.rd += amount.disk_bytes
        self._index_free(host)
        for index in self._label_indexes_of(host):
            index.reserve(host_id, amount)

    def release(self, host_id: str, amount: Capacity) -> None:
        """Take back part of a host's reservation (the same arithmetic as Capacity.__sub__)."""
        if (holder := self._holder(host_id)) is not self:
            holder.release(host_id, amount)
            return
        host = self._hosts[host_id]
        self._unindex_free(host)
        host.rc = round(host.rc - amount.cpus, 6)
        host.rm -= amount.memory_bytes
        host.rd -= amount.disk_bytes
        self._index_free(host)
        for index in self._label_indexes_of(host):
            index.release(host_id, amount)

    def _free_index(self, host: _Host) -> "_Index":
        return self._free_throttled if host.throttled else self._free

    def _index_free(self, host: _Host) -> None:
        if host.schedulable:
            fc, fm, fd = host.free_values()
            host.free_entry = (score(fc, fm, fd), host.host_id, fc, fm, fd)
            host.free_group = self._free_index(host).add(host.free_entry)

    def _unindex_free(self, host: _Host) -> None:
        if host.free_entry is not None:
            self._free_index(host).discard(host.free_entry, host.free_group)
            host.free_entry = None
            host.free_group = None

    # -- reading --

    def snapshot(self, host_id: str) -> HostSnapshot:
        return self._holder(host_id)._hosts[host_id].snapshot()

    def snapshots(self) -> list[HostSnapshot]:
        """Every host, by host id: what `place(...)` would be given."""
        hosts = self._hosts if self._hollow is None else {**self._hosts, **self._hollow._hosts}
        return [hosts[h].snapshot() for h in sorted(hosts)]

    # -- deciding --

    def place(self, request: PlacementRequest, strategy: Strategy = "best_fit") -> Decision:
        """The same decision as `place(self.snapshots(), request, strategy)`.

        A request that requires labels is decided among the hosts that carry the
        rarest of them: by looking at each when they are few, otherwise by the index
        of that label's hosts, built the first time it is asked for. Only hosts that
        match every label can take it or explain why not, so that index decides
        exactly as this one would. A request that wants hollow hosts is decided
        among them alone, any other without them (see "Hollow hosts").
        """
        _check_strategy(strategy)
        if not self:
            return Wait(NO_HOST_REGISTERED)  # as `place` with no snapshots
        return self._place(request, strategy)

    def _place(self, request: PlacementRequest, strategy: Strategy) -> Decision:
        """`place` in a pool that has hosts: this Scheduler's, or the part of one it indexes."""
        hollow = self._hollow
        if hollow is None:
            return self._place_here(request, strategy)
        if wants_hollow(request):
            # Decided with this one's setting, which may change after it was built (tests do so).
            hollow.SMALL_CANDIDATES = self.SMALL_CANDIDATES
            return hollow._place(request, strategy)
        decision = self._place_here(request, strategy)
        if isinstance(decision, Impossible) and hollow._matched(request.constraints):
            if not self._matched(request.constraints):
                return _no_match(request, hollow_aside=True)
            return _hollow_noted(decision)
        return decision

    def _matched(self, constraints: Mapping[str, str]) -> bool:
        """Some host here carries every label in `constraints`."""
        if not constraints:
            return bool(self._hosts)
        pairs = tuple(constraints.items())
        return any(_labels_match(self._hosts[h].labels, pairs) for h in self._rarest(constraints)[1])

    def _place_here(self, request: PlacementRequest, strategy: Strategy) -> Decision:
        """`place` among the hosts this Scheduler holds itself."""
        if request.constraints:
            pair, candidates = self._rarest(request.constraints)
            if len(candidates) <= self.SMALL_CANDIDATES:
                return _decide_over([self._hosts[h] for h in candidates], request, strategy)
            if self._labelled is not None and len(candidates) < len(self._hosts):
                assert pair is not None
                return self._label_index(pair, candidates)._place(request, strategy)
        r = request.resources
        c, m, d = r.cpus, r.memory_bytes, r.disk_bytes
        accept = self._acceptor(request)
        # Hosts not throttled first, then throttled ones; in each, those holding the image first.
        for throttled, index in ((False, self._free), (True, self._free_throttled)):
            if not index:
                continue
            local = self._local(request, strategy, accept, throttled)
            if local is not None:
                return Placed(local)
            found = self._search(c, m, d, strategy, accept, index)
            if found is not None:
                return Placed(found[1])
        return self._why_not(request, c, m, d, accept)

    def _label_index(self, pair: tuple[str, str], members: set[str]) -> "Scheduler":
        assert self._labelled is not None
        index = self._labelled.get(pair)
        if index is None:
            index = Scheduler(
                (self._hosts[h].snapshot() for h in members), label_indexes=False, hollow_apart=False
            )
            index.SMALL_CANDIDATES = self.SMALL_CANDIDATES
            self._labelled[pair] = index
        return index

    def _search(
        self, c: float, m: int, d: int, strategy: Strategy, accept: _Accept, index: "_Index"
    ) -> _Entry | None:
        if strategy == "best_fit":
            return index.best_fit(c, m, d, accept)
        return index.widest(c, m, d, accept)

    def _local(
        self, request: PlacementRequest, strategy: Strategy, accept: _Accept, throttled: bool
    ) -> str | None:
        """The host the request goes to among those that hold its image and are (not) `throttled`
        (None: none has room)."""
        if request.image is None or not self._holders:
            return None
        keys = _image_keys(request.image)
        holders: set[str] = set()
        for key in keys:
            holders |= self._holders.get(key, set())
        if not holders:
            return None
        if len(holders) <= self.SMALL_CANDIDATES:
            hosts = [self._hosts[h] for h in holders]
            admitted = [
                h
                for h in hosts
                if h.throttled == throttled and (accept is None or accept(h.host_id)) and _admits(h, request)
            ]
            return _best_among(admitted, request, strategy, keys)
        r = request.resources

        def holding(host_id: str) -> bool:
            return host_id in holders and (accept is None or accept(host_id))

        index = self._free_throttled if throttled else self._free
        found = self._search(r.cpus, r.memory_bytes, r.disk_bytes, strategy, holding, index)
        return None if found is None else found[1]

    def _rarest(self, constraints: Mapping[str, str]) -> tuple[tuple[str, str] | None, set[str]]:
        """The least common of the required labels and the hosts carrying it (a superset of
        the matches; empty when some required label is on no host)."""
        rarest: set[str] | None = None
        rarest_pair: tuple[str, str] | None = None
        for pair in constraints.items():
            members = self._by_label.get(pair)
            if not members:
                return pair, set()
            if rarest is None or len(members) < len(rarest):
                rarest, rarest_pair = members, pair
        return (rarest_pair, rarest) if rarest is not None else (None, set(self._hosts))

    def _acceptor(self, request: PlacementRequest) -> _Accept:
        """Which hosts admit the request beyond its size; None when every host here does."""
        n = len(self._hosts)
        by_label = self._by_label
        constraints = tuple(p for p in request.constraints.items() if len(by_label.get(p, ())) < n)
        image = request.image
        refused: list[set[str]] = []  # hosts whose members' allow-lists refuse the image, by list
        only: set[str] | None = None  # else the only hosts that take it
        if image is not None and request.local_registry is not None:
            # Only hosts whose allow-lists name its registry (a host that allows any image names none).
            only = set().union(
                *(
                    limited
                    for patterns, limited in self._restricted.items()
                    if _image_allowed(patterns, request)
                )
            )
        elif image is not None:
            refused = [
                limited for patterns, limited in self._restricted.items() if not _allows(patterns, image)
            ]
        networked = self._networked if request.network and len(self._networked) < n else None
        excluded = request.excluded_hosts
        if not (constraints or refused or only is not None or networked is not None or excluded):
            return None
        hosts = self._hosts

        def accept(host_id: str) -> bool:
            if host_id in excluded or any(host_id in limited for limited in refused):
                return False
            if only is not None and host_id not in only:
                return False
            if networked is not None and host_id not in networked:
                return False
            return not constraints or _labels_match(hosts[host_id].labels, constraints)

        return accept

    def _any_donation(self, c: float, m: int, d: int, accept: _Accept) -> bool:
        return self._donated_on.any_fit(c, m, d, accept) or self._donated_off.any_fit(c, m, d, accept)

    def _why_not(self, request: PlacementRequest, c: float, m: int, d: int, accept: _Accept) -> Decision:
        if self._donated_on.any_fit(c, m, d, accept):
            return Wait(NO_FREE_CAPACITY)
        if self._donated_off.any_fit(c, m, d, accept):
            return Wait(NO_SCHEDULABLE_HOST)
        # Impossible: say why, in the same order as _decide_over.
        if request.constraints:
            constraints = tuple(request.constraints.items())
            matching = [
                h
                for h in self._rarest(request.constraints)[1]
                if _labels_match(self._hosts[h].labels, constraints)
            ]
        else:
            matching = list(self._hosts)
        if not matching:
            return _no_match(request)
        matching_hosts = [self._hosts[h] for h in matching]
        refused, narrowed = _refused(request, matching_hosts)
        if refused is not None:
            return refused
        if request.excluded_hosts and all(
            h.host_id in request.excluded_hosts for h in matching_hosts if _admits(h, request)
        ):
            return _none_left(request)
        # The hosts _decide_over would name the largest of: those that admit it, not excluded.
        allowed = [
            h for h in matching_hosts if _admits(h, request) and h.host_id not in request.excluded_hosts
        ]
        if not self._any_donation(c, 0, 0, accept):
            return _exceeds(request, "cpus", narrowed, allowed)
        if not self._any_donation(c, m, 0, accept):
            return _exceeds(request, "memory", narrowed, allowed)
        return _exceeds(request, "disk", narrowed, allowed)
