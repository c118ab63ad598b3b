"""`potluck`'s user and operator commands are attached on first need, not at import.

Every service, a member's hostd among them, runs through `potluck`: what the command
module imports stays resident in each of them (issue 20's footprint). And each user command
imports its own module alone: what a user's command imports it pays for at every call.
"""

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
from click.testing import CliRunner

from potluck.cli import main

USER_COMMANDS = ("login", "alloc", "run", "job", "ssh", "cp", "logs", "image")

#: What `potluck alloc ls` has no use for: the other user commands' modules, the Docker SDK
#: `potluck image` needs, the job contracts and pydantic behind `potluck run`.
NOT_FOR_ALLOC_LS = (
    "potluck.user.jobs",
    "potluck.user.images",
    "potluck.user.copy",
    "potluck.user.logs",
    "potluck.ops",
    "docker",
    "pydantic",
)


def test_importing_the_command_loads_neither_user_nor_operator_commands() -> None:
    """A fresh interpreter imports potluck.cli and hostd's modules: no potluck.user or potluck.ops
    module is loaded (the services' path never needs them)."""
    script = (
        "import sys, potluck.cli, potluck.hostd.agent, potluck.hostd.config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('potluck.user', 'potluck.ops'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_alloc_ls_imports_its_own_module_alone() -> None:
    """Tried: `potluck alloc ls` in a fresh interpreter, with no login. Must hold: it ran (exit
    2, not logged in) and none of NOT_FOR_ALLOC_LS was imported."""
    script = (
        "import json, sys\n"
        "from potluck.cli import main\n"
        "try:\n"
        "    main(['alloc', 'ls'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(json.dumps({'exit': code, 'modules': sorted(sys.modules)}))\n"
    )
    env = {"POTLUCK_CONFIG": "/nonexistent/client.toml", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["exit"] == 2, done.stderr
    assert "potluck.user.cli" in answer["modules"]
    loaded = [m for m in NOT_FOR_ALLOC_LS if any(k == m or k.startswith(m + ".") for k in answer["modules"])]
    assert loaded == []


def test_an_operator_command_loads_the_image_tools_only_when_asked_for_them() -> None:
    """Tried: `potluck ops status --help` in a fresh interpreter, then `potluck ops images
    --help`. Must hold: both answer; the first imports neither the Docker SDK nor
    potluck.ops.pool_images (half a second of every operator command's start), the second does."""
    script = (
        "import json, sys\n"
        "from potluck.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(json.dumps({'exit': code, 'modules': sorted(sys.modules)}))\n"
    )
    for command, wanted in (("status", False), ("images", True)):
        done = subprocess.run(
            [sys.executable, "-c", script, "ops", command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        answer = json.loads(done.stdout.splitlines()[-1])
        assert answer["exit"] == 0, done.stderr
        for module in ("docker", "potluck.ops.pool_images"):
            assert (module in answer["modules"]) is wanted, (command, module)


@pytest.fixture
def logging_as_it_was() -> Iterator[None]:
    """`potluck`'s group configures structlog (cached loggers, a renderer) when it runs: put the
    test process's configuration back, or later tests' `capture_logs` would see nothing."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("logging_as_it_was")
def test_every_command_is_listed_and_reachable() -> None:
    """`--help` lists the user commands beside the services', each answers its own `--help`, the
    operator tools are reachable under `ops`, and an unknown name is still refused."""
    runner = CliRunner()
    listing = runner.invoke(main, ["--help"]).output
    for name in (*USER_COMMANDS, "hostd", "registry", "allocator", "ops", "up"):
        assert f"  {name} " in listing, name
        assert runner.invoke(main, [name, "--help"]).exit_code == 0, name
    for name in ("replay", "status", "trace", "hosts", "hollow", "images"):
        assert runner.invoke(main, ["ops", name, "--help"]).exit_code == 0, name
    unknown = runner.invoke(main, ["no-such-command"])
    assert unknown.exit_code == 2
    assert "No such command" in unknown.output
