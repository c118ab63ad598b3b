"""The pool registry's access decision: a user's grants never leave their namespace, and the
pool's library (`library/...`, what the operator publishes for everyone) is pull-only for all."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.registry_access import (
    REPOSITORY,
    Scope,
    grant_for_user,
    namespace_of,
    parse_scope,
    parse_scopes,
)
from potluck.kernel.rejections import Rejected

component = st.from_regex(r"\A[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}\Z")
repository = st.lists(component, min_size=1, max_size=4).map("/".join)
actions = st.sets(st.sampled_from(["pull", "push", "delete", "*", "frobnicate"]), min_size=1)


users = st.one_of(st.just("library"), st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z"))
names = st.one_of(repository, repository.map("library/".__add__))


@given(user=users, name=names, wanted=actions)
def test_grants_stay_in_the_users_namespace_or_pull_the_library(
    user: str, name: str, wanted: set[str]
) -> None:
    granted = grant_for_user(user, Scope("repository", name, frozenset(wanted)))
    if name.startswith("library/"):
        assert granted.actions == ({"pull"} if wanted & {"pull", "*"} else set())
    elif granted.actions:
        assert name.startswith(user + "/")
        assert user != "library"
        assert granted.actions <= {"pull", "push", "delete"}


def test_nobody_writes_the_library_not_even_a_user_called_library() -> None:
    for user in ("alice", "library"):
        assert grant_for_user(user, parse_scope("repository:library/potluck-default:*")).actions == {"pull"}
        assert (
            grant_for_user(user, parse_scope("repository:library/python:push,delete")).actions == frozenset()
        )
    assert namespace_of("library") is None


@given(name=repository, wanted=actions)
def test_a_scope_reads_back_as_written(name: str, wanted: set[str]) -> None:
    scope = parse_scope(f"repository:{name}:{','.join(sorted(wanted))}")
    assert scope == Scope("repository", name, frozenset(wanted))


def test_another_users_repository_and_the_catalog_get_nothing() -> None:
    assert grant_for_user("bob", parse_scope("repository:alice/sim:pull")).actions == frozenset()
    assert grant_for_user("alice", parse_scope("repository:alice:pull")).actions == frozenset()
    assert grant_for_user("alice", parse_scope("registry:catalog:*")).actions == frozenset()
    assert grant_for_user("alice", parse_scope("repository:alice/sim:*")).actions == {
        "pull",
        "push",
        "delete",
    }


def test_a_user_name_that_cannot_be_a_namespace_gets_nothing() -> None:
    wanted = Scope("repository", "bob-/x", frozenset({"pull"}))
    assert grant_for_user("bob-", wanted).actions == frozenset()


@pytest.mark.parametrize(
    "text",
    ["x", "repository", "repository:x", "repository::pull", "repository:UP/x:pull", "repository:a//b:pull"],
)
def test_malformed_scopes_are_rejected_naming_the_scope(text: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_scopes([text])
    assert caught.value.field == "scope"
    assert caught.value.status == 400


def test_no_scope_is_a_login_that_grants_nothing() -> None:
    assert parse_scopes([]) == []
    assert parse_scopes([""]) == []


def test_too_many_scopes_are_rejected() -> None:
    with pytest.raises(Rejected):
        parse_scopes(["repository:a/b:pull"] * 17)


def test_repository_grammar_refuses_path_tricks() -> None:
    for name in ["../x", "a/../b", "a/.b", "a/b/", "/a", "a b"]:
        assert not REPOSITORY.match(name), name
