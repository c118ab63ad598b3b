"""Users of the HTTP API: bearer tokens (stored hashed) and quotas, folded from the log.

Tokens are 32 random bytes, so a plain SHA-256 is enough to store them: there
is nothing to brute-force that a slow password hash would protect.

The operator's decisions on a user (`add_user`, `rotate_token`, `remove_user`,
`restore_user`, `change_quota`) are made here on the user's own stream folded, and appended
at the version read. A removed user leaves `users` (so every lookup of a user by token or
name finds nobody), but stays in `removed` with their last token and quota: the API then
says why that token is refused, and a second removal records nothing. The name stays theirs:
`add_user` refuses it, since whoever it named would see the removed user's allocations and
jobs and push to their registry namespace; `restore_user` lets the same person back in, with
a new token (the removed one's stays dead) and their quota unless another is given.

The quotas an operator gives are bounded (`QUOTA_MOST`) here, not in the event: a typo of a
few digits too many is refused, while what the log holds already is still read.
"""

import hashlib
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from potluck.allocator.registry_access import LIBRARY
from potluck.contracts.allocation_events import (
    Quota,
    UserAdded,
    UserQuotaChanged,
    UserRemoved,
    UserRestored,
    UserTokenRotated,
)
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.kernel.sizes import format_size

#: A user's name is also their namespace in the pool registry (`<user>/...`), so it is one of
#: Distribution's path components (registry_access.py): `bob-` or `a_-b` would be a user who
#: could push no image.
USER_NAME = re.compile(r"^(?=.{1,32}$)[a-z][a-z0-9]*(?:(?:_|__|-+)[a-z0-9]+)*$")
#: Names no user may have: the pool's own images' namespace.
RESERVED_NAMES = frozenset({LIBRARY})


def new_token() -> str:
    return "pl_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # `surrogateescape`: a token read from a header holds bytes that are not UTF-8 as lone
    # surrogates (aiohttp decodes them so), which a plain encode() refuses with an exception;
    # hashed as the bytes that were sent, such a token is simply nobody's.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    token_sha256: str
    quota: Quota


@dataclass(frozen=True)
class RemovedUser:
    name: str
    #: The token they held when removed: refused with the reason, not as one never given.
    token_sha256: str
    by: str
    reason: str
    #: The quota they had: theirs again when restored, unless the operator gives another.
    quota: Quota = field(default_factory=Quota)

    def said(self) -> str:
        """Why their work ends, in the words its user reads (an allocation's reason, a job's)."""
        who = f" ({self.by})" if self.by else ""
        return f"user {self.name} was removed by the operator{who}" + (
            f": {self.reason}" if self.reason else ""
        )


@dataclass
class UsersView:
    users: dict[str, User] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)
    #: Users removed and not restored (nor, in an older log, added again), by name.
    removed: dict[str, RemovedUser] = field(default_factory=dict)
    #: Each removed user's last token, to their name.
    removed_tokens: dict[str, str] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        match event:
            case UserAdded() | UserRestored():
                # A removed name added again (older commands recorded that) or restored: the
                # removed token authenticates nobody, and is said to be nobody's.
                gone = self.removed.pop(event.user, None)
                if gone is not None:
                    self.removed_tokens.pop(gone.token_sha256, None)
                old = self.users.get(event.user)
                if old is not None:  # never decided so (add_user refuses), but a token must not linger
                    self.by_token.pop(old.token_sha256, None)
                self.users[event.user] = User(event.user, event.token_sha256, event.quota)
                self.by_token[event.token_sha256] = event.user
            case UserTokenRotated():
                old = self.users.get(event.user)
                if old is not None:
                    self.by_token.pop(old.token_sha256, None)
                    self.users[event.user] = User(old.name, event.token_sha256, old.quota)
                    self.by_token[event.token_sha256] = event.user
            case UserRemoved():
                old = self.users.pop(event.user, None)
                if old is not None:
                    self.by_token.pop(old.token_sha256, None)
                    self.removed[event.user] = RemovedUser(
                        event.user, old.token_sha256, event.by, event.reason, old.quota
                    )
                    self.removed_tokens[old.token_sha256] = event.user
            case UserQuotaChanged():
                old = self.users.get(event.user)
                if old is not None:
                    self.users[event.user] = replace(old, quota=event.quota)

    def authenticate(self, token: str) -> User | None:
        name = self.by_token.get(token_hash(token))
        return self.users.get(name) if name else None

    def removed_holder(self, token: str) -> RemovedUser | None:
        """The removed user whose last token `token` is, if it is one."""
        name = self.removed_tokens.get(token_hash(token))
        return self.removed.get(name) if name else None


def add_user(
    existing: User | None, name: str, quota: Quota, *, removed: "RemovedUser | None" = None
) -> tuple[list[Event], str]:
    """Decide adding a user; returns the events and the token to show once. `removed`: the
    user of that name an operator removed, whose name is not given to anybody else."""
    if not USER_NAME.match(name):
        raise Rejected(
            "BAD_USER_NAME",
            "a user name is 1-32 of [a-z0-9_-], starting with a letter and ending with a letter or "
            "digit, with no '-' next to a '_' (it is also the user's namespace in the pool registry)",
            field="name",
            status=400,
        )
    if name in RESERVED_NAMES:
        raise Rejected(
            "BAD_USER_NAME",
            f"{name} is the pool registry's namespace for the pool's own images; pick another name",
            field="name",
            status=400,
        )
    if existing is not None:
        raise Rejected("USER_EXISTS", f"user {name} exists already; pick another name")
    if removed is not None:
        by = f" by {removed.by}" if removed.by else ""
        why = f" ({removed.reason})" if removed.reason else ""
        raise Rejected(
            "USER_REMOVED",
            f"user {name} was removed{by}{why}, and a removed user's name is not given again: their "
            "allocations, jobs and images stay theirs, and whoever it named would see them. Pick "
            f"another name, or, to let the same person back in, `potluck ops users restore {name}`",
        )
    token = new_token()
    return [UserAdded(user=name, token_sha256=token_hash(token), quota=quota)], token


def rotate_token(existing: User | None, name: str, *, removed: bool = False) -> tuple[list[Event], str]:
    """Decide a new token for a user (a leaked one, say); the old one stops working. `removed`:
    the name is of a user removed (and so not `existing`)."""
    if existing is None:
        raise _not_found(name, removed)
    token = new_token()
    return [UserTokenRotated(user=name, token_sha256=token_hash(token))], token


#: Most characters of a removal's reason: it is shown with each allocation it ends.
MAX_REASON = 500


def remove_user(view: UsersView, name: str, *, by: str, reason: str) -> list[Event]:
    """Decide removing user `name` (nothing, when they were removed already): see UserRemoved."""
    if len(reason) > MAX_REASON:
        raise Rejected(
            "BAD_REASON",
            f"a reason is at most {MAX_REASON} characters; say it shorter",
            field="reason",
            status=400,
        )
    if name in view.users:
        return [UserRemoved(user=name, by=by, reason=reason)]
    if name in view.removed:
        return []
    raise _not_found(name, removed=False)


#: The quota's fields `change_quota` takes, as the command's options name them.
QUOTA_FIELDS = {"cpus": "cpus", "memory_bytes": "memory", "disk_bytes": "disk", "allocations": "allocations"}


def restore_user(
    view: UsersView, name: str, changes: Mapping[str, float | int], *, by: str
) -> tuple[list[Event], tuple[str, Quota]]:
    """Decide letting removed user `name`, the same person, back in: a new token and the quota
    they had, with `changes` (Quota's field names) on top. Returns the events, the token to show
    once and that quota."""
    gone = view.removed.get(name)
    if gone is None:
        if name in view.users:
            raise Rejected(
                "USER_ACTIVE",
                f"user {name} was not removed, so there is nothing to restore (`potluck ops users "
                f"rotate-token {name}` gives them a new token)",
            )
        raise _not_found(name, removed=False)
    quota = _with_changes(gone.quota, changes)
    token = new_token()
    return [UserRestored(user=name, token_sha256=token_hash(token), quota=quota, by=by)], (token, quota)


#: The most of each quota field an operator gives (`--cpus` and so on), far past what a pool of
#: members' machines holds (bench/pool.py calls this much "unbounded"): beyond it is a typo of
#: a few digits, which would be recorded and shown as a quota ("1e+300 CPUs") and mean no
#: quota at all. Checked where the operator decides, not in Quota: logged events stay readable.
QUOTA_MOST: dict[str, float | int] = {
    "cpus": 100_000,
    "memory_bytes": 1 << 50,
    "disk_bytes": 1 << 50,
    "allocations": 1_000_000,
}


def check_quota_bounds(fields: Mapping[str, float | int]) -> None:
    """Refuse (400: the command's exit 2) a quota field over its QUOTA_MOST (or not finite).
    `ops users add` checks its quota so before `add_user`, which the pools of tests and benches
    call with quotas of their own."""
    for name, value in fields.items():
        most = QUOTA_MOST.get(name)
        if most is None or (math.isfinite(value) and value <= most):
            continue
        option = QUOTA_FIELDS[name]
        said = (
            f"{format_size(int(most))} ({most / (1 << 50):g} PiB)" if name.endswith("_bytes") else f"{most:,}"
        )
        raise Rejected(
            "BAD_QUOTA",
            f"--{option}: at most {said}, far more than a pool holds; give a smaller quota",
            field=option,
            status=400,
        )


def change_quota(
    existing: User | None, name: str, changes: Mapping[str, float | int], *, removed: bool = False
) -> tuple[list[Event], Quota]:
    """Decide user `name`'s new quota: theirs with `changes` (Quota's field names) on top; nothing
    when it is the same. Returns the events and the quota in force after them. What they hold
    over a lowered quota is kept (see UserQuotaChanged)."""
    if not changes:
        options = ", ".join(f"--{option}" for option in QUOTA_FIELDS.values())
        raise Rejected("NOTHING_TO_CHANGE", f"give the quota to change: one or more of {options}", status=400)
    if existing is None:
        raise _not_found(name, removed)
    quota = _with_changes(existing.quota, changes)
    if quota == existing.quota:
        return [], quota
    return [UserQuotaChanged(user=name, quota=quota)], quota


def _with_changes(quota: Quota, changes: Mapping[str, float | int]) -> Quota:
    """`quota` with `changes` on top; only what is given is bounded (a quota recorded before the
    bounds stays as it was, if another field changes)."""
    check_quota_bounds(changes)
    try:
        return Quota.model_validate({**quota.model_dump(), **changes})
    except ValidationError as exc:
        error = exc.errors()[0]
        option = QUOTA_FIELDS.get(str(error["loc"][0]) if error["loc"] else "", "quota")
        raise Rejected("BAD_QUOTA", f"--{option}: {error['msg']}", field=option, status=400) from None


def _not_found(name: str, removed: bool) -> Rejected:
    if removed:
        return Rejected(
            "USER_REMOVED",
            f"user {name} was removed; `potluck ops users restore {name}` lets them back in, with a "
            "new token",
        )
    return Rejected("USER_NOT_FOUND", f"there is no user {name}; `potluck ops users add {name}` adds one")
