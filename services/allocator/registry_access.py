"""Who may do what in the pool registry: the pure decision behind its access tokens.

The registry asks for scopes such as `repository:alice/sim:pull,push`; a user
is granted pull, push and delete on the repositories of their own namespace
(`<user>/...`) and nothing else, so one user can neither read nor overwrite
another's images. Scopes the registry may ask for but nobody here is granted
(the catalog of every repository, say) are answered with no access, which the
token specification asks for instead of an error.

The `library` namespace holds the pool's own images, which the operator
publishes for everyone (`potluck ops images publish`; `potluck up` publishes
the default image there): every user may pull them, no user may write them,
and no user can own that namespace by being called `library`.
"""

import re
from dataclasses import dataclass

from potluck.kernel.rejections import Rejected

# Distribution's grammar for a repository name: components of lower-case
# letters and digits joined by '.', '_', '__' or runs of '-', separated by '/'.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
MAX_REPOSITORY = 255
MAX_SCOPES = 16
USER_ACTIONS = frozenset({"pull", "push", "delete"})
#: The pool's own images, Docker Hub's convention for its official ones: `potluck-default:latest`
#: is `library/potluck-default:latest` in the pool registry.
LIBRARY = "library"


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    def claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


def parse_scope(text: str) -> Scope:
    """`repository:alice/sim:pull,push` as a Scope; anything else is a clear 400."""
    kind, _, rest = text.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name or not actions:
        raise Rejected(
            "BAD_SCOPE", f"a scope is TYPE:NAME:ACTIONS, not {text[:80]!r}", field="scope", status=400
        )
    if kind == "repository" and (len(name) > MAX_REPOSITORY or not REPOSITORY.match(name)):
        raise Rejected(
            "BAD_SCOPE",
            f"{name[:80]!r} is not a repository name (lower-case letters, digits, '.', '_', '-', '/')",
            field="scope",
            status=400,
        )
    return Scope(kind, name, frozenset(a for a in actions.split(",") if a))


def parse_scopes(values: list[str]) -> list[Scope]:
    # Docker sends one `scope` parameter per scope; some clients join them with spaces.
    texts = [part for value in values for part in value.split()]
    if len(texts) > MAX_SCOPES:
        raise Rejected("BAD_SCOPE", f"at most {MAX_SCOPES} scopes per token", field="scope", status=400)
    return [parse_scope(text) for text in texts]


def namespace_of(user: str) -> str | None:
    """The repository namespace of `user`, or None when the name cannot be a repository component
    (or is the pool's own namespace)."""
    return user if re.fullmatch(_COMPONENT, user) and user != LIBRARY else None


def in_library(repository: str) -> bool:
    return repository.startswith(LIBRARY + "/")


def grant_for_user(user: str, wanted: Scope) -> Scope:
    """What `user` gets of `wanted`: its actions within the user's own namespace, pull of the
    pool's library, else none."""
    if wanted.type == "repository" and in_library(wanted.name):
        pull = wanted.actions & {"pull", "*"}
        return Scope(wanted.type, wanted.name, frozenset({"pull"}) if pull else frozenset())
    namespace = namespace_of(user)
    own = wanted.type == "repository" and namespace is not None and wanted.name.startswith(namespace + "/")
    actions = wanted.actions & USER_ACTIONS if own else frozenset()
    if "*" in wanted.actions and own:
        actions = USER_ACTIONS
    return Scope(wanted.type, wanted.name, actions)
