"""Every service lifts its soft limit of open files to the hard one (potluck/runner.py): a laptop's
shell hands processes 1,024, and a service that runs out refuses everybody's connections at once."""

import resource
import subprocess
import sys

SHOW = (
    "import resource; from potluck.runner import raise_open_files_limit; "
    "got = raise_open_files_limit(); print(got, *resource.getrlimit(resource.RLIMIT_NOFILE))"
)


def _run_with_soft_limit(soft: int) -> tuple[int, int, int]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    out = subprocess.run(
        [sys.executable, "-c", SHOW], preexec_fn=lower, capture_output=True, text=True, check=True
    ).stdout
    got, now_soft, now_hard = (int(x) for x in out.split())
    return got, now_soft, now_hard


def test_a_low_soft_limit_is_lifted_to_the_hard_one() -> None:
    """Tried: a process started with 256 open files allowed, under a higher hard limit.
    Must hold: afterwards its soft limit is the hard one (the returned figure says so too)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard > 256, "this machine's hard limit leaves nothing to lift"
    got, soft, now_hard = _run_with_soft_limit(256)
    assert now_hard == hard
    assert soft == got
    assert soft == (hard if hard != resource.RLIM_INFINITY else 65_536)


def test_a_soft_limit_already_at_the_hard_one_is_left_alone() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 65_536
    got, soft, _ = _run_with_soft_limit(hard)
    assert got == soft == hard
