"""potluck.user.remote.why_unreadable: why `potluck logs` and `potluck cp` find no container."""

from potluck.user.remote import why_unreadable


def test_each_end_says_its_own_reason_for_no_container() -> None:
    """Tried: the allocation's record as the API gives it, for each way it can have ended with
    no container. Before, a task whose image was never got was told its container "was not
    kept, its keep_for is up, or it was released" and to ask for --keep-for (its keep-for was
    1h). Must hold: a failure names its reason and detail and says nothing of keeping; an
    exited one speaks of keep-for; released, expired and lost say so."""
    failed = why_unreadable(
        "a-1", {"state": "failed", "reason": "image_pull_failed", "detail": "no such image x:1"}
    )
    assert failed.startswith("allocation a-1 failed (image_pull_failed: no such image x:1)")
    assert "keep" not in failed
    assert "keep-for" in why_unreadable("a-1", {"state": "exited"})
    assert "it was released" in why_unreadable("a-1", {"state": "released"})
    assert "its lifetime ran out" in why_unreadable("a-1", {"state": "expired"})
    assert "its host was lost" in why_unreadable("a-1", {"state": "lost"})
    assert (
        why_unreadable("a-1", {"state": "refused"}) == "allocation a-1 was refused: it never had a container"
    )
