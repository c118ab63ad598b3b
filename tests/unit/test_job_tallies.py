"""A job's tasks counted by state as the log is folded (services/allocator/task_standing.py's
JobTallies), its pages of tasks, the per-user cap on jobs not finished, and the paging of a
job's tasks' query (paging.py), without servers.

The tallies are checked against asking every task (`standing`), the way the allocator
answered before it kept them: after every event of random jobs whose attempts end in random
ways, some cancelled halfway.
"""

import pickle
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potluck.allocator.job_decisions import (
    MAX_UNFINISHED_JOBS,
    cancellation,
    check_unfinished_jobs,
    release_attempt,
)
from potluck.allocator.paging import MAX_LIMIT, task_page_query
from potluck.allocator.task_standing import TASK_STATES, JobTallies, TaskState, standing
from potluck.contracts.allocation_events import Quota
from potluck.contracts.job_events import (
    MAX_TASKS,
    JobCancelled,
    JobCompleted,
    JobSpec,
    JobSubmitted,
)
from potluck.events.checkpoints import _unpickled
from potluck.events.schema import registry
from potluck.kernel.rejections import Rejected
from potluck.readmodels.jobs import JobsView
from tests.unit.test_allocator_model import T0
from tests.unit.test_job_decisions import JOB, OUTCOMES, USER, Outcome, Sim, job_spec, jobs


def every_task(sim: Sim) -> list[TaskState]:
    """Each task's state, asked of each task: what the tallies must agree with."""
    return [standing(sim.job, i, sim.allocations).state for i in range(sim.job.spec.tasks)]


def walk(tallies: JobTallies, sim: Sim, limit: int, state: TaskState | None = None) -> list[list[int]]:
    """Every page of the job's tasks (in `state`), following each page's next."""
    pages: list[list[int]] = []
    after = None
    while True:
        page, following = tallies.page(sim.job, after, limit, state)
        pages.append(page)
        if following is None:
            return pages
        assert following == page[-1], "next is the page's last task"
        after = following


def agree(sim: Sim, limit: int) -> None:
    tallies = sim.model.job_tallies
    states = every_task(sim)
    assert tallies.counts(sim.job) == {s: n for s, n in Counter(states).items()}
    assert [tallies.state_of(sim.job, i) for i in range(len(states))] == states
    pages = walk(tallies, sim, limit)
    assert [i for page in pages for i in page] == list(range(len(states))), "each task once, in order"
    assert all(len(page) == limit for page in pages[:-1])
    for state in TASK_STATES:
        found = [i for page in walk(tallies, sim, limit, state) for i in page]
        assert found == [i for i, s in enumerate(states) if s == state], state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs(),
    st.lists(st.tuples(st.integers(0, 7), st.sampled_from(OUTCOMES)), max_size=60),
    st.none() | st.integers(0, 8),
    st.integers(1, 4),
)
def test_the_tallies_agree_with_every_task_asked_however_the_job_goes(
    job: tuple[JobSpec, Quota], endings: list[tuple[int, Outcome]], cancel_at: int | None, limit: int
) -> None:
    """Tried: random jobs (tasks, parallelism, retries, retry_on, quota) stepped, their active
    attempts ending in random ways, some cancelled by their user at a random step and their
    attempts then released; read with pages of 1 to 4 tasks. Must hold after every step: the
    counts are those of asking every task, each task's tallied state is its standing, the
    pages hold every task exactly once in index order, and the pages of one state hold exactly
    the tasks in that state."""
    spec, quota = job
    sim = Sim(spec, quota)
    script = iter(endings)
    for round_ in range(400):
        agree(sim, limit)
        if sim.job.terminal:
            break
        if round_ == cancel_at:
            sim.add(cancellation(sim.job, f"user:{USER}", ""))
            agree(sim, limit)
            for alloc_id in sim.active():
                sim.add(release_attempt(sim.job, sim.allocations[alloc_id]))
            continue
        sim.step()
        agree(sim, limit)
        sim.end_as_scripted(next(script, None))
    agree(sim, limit)
    assert sim.job.terminal


def test_a_task_waiting_for_its_retry_is_cancelled_with_its_job() -> None:
    """Tried: a 2-task job with `retries: 1` on `exit`, task 0 exits 3 (so it is retrying) and
    task 1 runs; then its user cancels it. Must hold: 1 retrying and 1 running before; after,
    task 0 counts as cancelled, with no event of its own, and task 1 still runs until released;
    the tasks not final (where an attempt may still be open) are both, then 1, then none."""
    sim = Sim(job_spec(2, retries=1, retry_on=("exit",)))
    sim.step()
    first, second = sim.active()
    sim.end(first, "exit")
    sim.end(second, "run")
    tallies = sim.model.job_tallies
    assert tallies.counts(sim.job) == {"running": 1, "retrying": 1}
    assert tallies.open_of(JOB) == {0, 1}
    sim.add(cancellation(sim.job, f"user:{USER}", ""))
    assert tallies.counts(sim.job) == {"running": 1, "cancelled": 1}
    assert tallies.page(sim.job, None, 5, "cancelled") == ([0], None)
    assert tallies.open_of(JOB) == {1}, "what a removal still has to release"
    sim.add(release_attempt(sim.job, sim.allocations[second]))
    assert tallies.counts(sim.job) == {"cancelled": 2}
    assert tallies.open_of(JOB) == set()
    agree(sim, 1)


def test_a_big_job_is_counted_without_looking_at_its_tasks_not_requested() -> None:
    """Tried: a job of MAX_TASKS tasks with parallelism 3, one step. Must hold: 3 pending and
    the rest waiting; the tally holds a byte for each requested task only; a page after the
    requested ones, and a page of waiting tasks, start where they should."""
    sim = Sim(job_spec(MAX_TASKS, parallelism=3))
    sim.step()
    tallies = sim.model.job_tallies
    assert tallies.counts(sim.job) == {"pending": 3, "waiting": MAX_TASKS - 3}
    assert len(tallies.tallies[JOB].states) == 3
    assert tallies.page(sim.job, None, 2) == ([0, 1], 1)
    assert tallies.page(sim.job, MAX_TASKS - 3, 5) == ([MAX_TASKS - 2, MAX_TASKS - 1], None)
    assert tallies.page(sim.job, None, 2, "waiting") == ([3, 4], 4)
    assert tallies.page(sim.job, 1, 3, "pending") == ([2], None)
    assert tallies.page(sim.job, None, 3, "running") == ([], None)
    sim.add(cancellation(sim.job, f"user:{USER}", ""))
    assert tallies.counts(sim.job) == {"pending": 3, "cancelled": MAX_TASKS - 3}
    assert tallies.page(sim.job, None, 2, "cancelled") == ([3, 4], 4)
    assert tallies.page(sim.job, None, 2, "waiting") == ([], None)


def test_the_tallies_survive_a_checkpoint_as_folded() -> None:
    """Tried: a job half done, its model pickled (with pickle's default protocol and its highest,
    which the checkpoints use) and read back through a checkpoint's guarded unpickler, then
    folded on. Must hold: the restored tallies equal the folded ones, and keep agreeing."""
    sim = Sim(job_spec(6, parallelism=2))
    sim.step()
    first, second = sim.active()
    sim.end(first, "ok")
    sim.end(second, "exit")
    assert _unpickled(pickle.dumps(sim.model)).job_tallies == sim.model.job_tallies
    restored = _unpickled(pickle.dumps(sim.model, protocol=pickle.HIGHEST_PROTOCOL))
    assert restored.job_tallies == sim.model.job_tallies
    sim.model = restored
    sim.fold.projection = restored
    sim.run_to_end()
    agree(sim, 4)


def test_the_cap_refuses_the_job_past_the_user_s_unfinished_ones() -> None:
    """Tried: the cap with MAX_UNFINISHED_JOBS - 1 and MAX_UNFINISHED_JOBS jobs not finished.
    Must hold: the first passes; the second is a 403 TOO_MANY_JOBS that says what to do."""
    check_unfinished_jobs(MAX_UNFINISHED_JOBS - 1)
    with pytest.raises(Rejected) as refused:
        check_unfinished_jobs(MAX_UNFINISHED_JOBS)
    assert (refused.value.code, refused.value.status) == ("TOO_MANY_JOBS", 403)
    assert "potluck job rm" in refused.value.message
    assert str(MAX_UNFINISHED_JOBS) in refused.value.message


def test_each_user_s_unfinished_jobs_are_kept_as_they_start_and_end() -> None:
    """Tried: alice submits three jobs and bob one; one of alice's completes, another is
    cancelled; then another view is made of its jobs alone. Must hold: each user's unfinished
    jobs are exactly those not ended, in both views."""
    view = JobsView()
    spec = job_spec(1)
    for version, (job_id, user) in enumerate(
        (("j-1", "alice"), ("j-2", "alice"), ("j-3", "alice"), ("j-4", "bob"))
    ):
        view.apply(
            JobSubmitted(job_id=job_id, user=user, spec=spec), version=1, at=T0 + timedelta(seconds=version)
        )
    assert (view.unfinished_of("alice"), view.unfinished_of("bob")) == ({"j-1", "j-2", "j-3"}, {"j-4"})
    view.apply(JobCompleted(job_id="j-1", succeeded=1, failed=0), version=2, at=T0)
    view.apply(JobCancelled(job_id="j-2", by="user:alice"), version=2, at=T0)
    assert view.unfinished_of("alice") == {"j-3"}
    assert view.unfinished_of("carol") == set()
    assert JobsView(jobs=dict(view.jobs)).unfinished_ids == view.unfinished_ids


def test_a_page_of_tasks_takes_limit_and_after_as_the_other_lists_do() -> None:
    """Tried: `limit` and `after` of a page of a 10-task job's tasks, good and bad. Must hold:
    none given: 100 from the first; `after` a task of the job; a limit outside 1..1000 or not a
    whole number, and an `after` that is not an index, 400 naming the field; an index past the
    job's last task, 404 naming `after`."""
    assert task_page_query({}, 10) == task_page_query({"limit": "100"}, 10)
    page = task_page_query({"limit": "3", "after": "9"}, 10)
    assert (page.limit, page.after) == (3, 9)
    assert task_page_query({"after": "0"}, 10).after == 0
    for query, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"after": "-1"}, "after"),
        ({"after": "+3"}, "after"),
        ({"after": "1.0"}, "after"),
        ({"after": str(MAX_TASKS)}, "after"),
    ):
        with pytest.raises(Rejected) as refused:
            task_page_query(query, 10)
        assert (refused.value.status, refused.value.field) == (400, field), query
    with pytest.raises(Rejected) as missing:
        task_page_query({"after": "10"}, 10)
    assert (missing.value.status, missing.value.code, missing.value.field) == (404, "NOT_FOUND", "after")


def test_events_folded_again_are_tallied_once() -> None:
    """Tried: every event of a running job handed to the model a second time (as a redelivery
    past the Fold's own guard would be). Must hold: the counts and states do not move."""
    sim = Sim(job_spec(5, parallelism=3))
    sim.step()
    first, second, _ = sim.active()
    sim.end(first, "ok")
    sim.end(second, "exit")
    before = pickle.dumps(sim.model.job_tallies)
    for record in sim.log.records:
        sim.model.apply(registry.decode_record(record), record)
    assert pickle.dumps(sim.model.job_tallies) == before
    agree(sim, 2)
