"""The newcomer's path: the README's first command on a clean state directory, then the user quick start."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from potluck.localstack import free_port


def potluck(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def newcomer(tmp_path: Path) -> dict[str, str]:
    """A person with a fresh home: their own state directory and client configuration."""
    return {
        **os.environ,
        "POTLUCK_HOME": str(tmp_path / "state"),
        "POTLUCK_CONFIG": str(tmp_path / "client.toml"),
    }


@pytest.mark.slow
def test_up_then_the_user_quick_start_then_down(newcomer: dict[str, str], tmp_path: Path) -> None:
    ports = [
        "--api-port",
        str(free_port()),
        "--nats-port",
        str(free_port()),
        "--postgres-port",
        str(free_port()),
    ]
    started = potluck("up", "--detach", *ports, env=newcomer, timeout=900)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        summary = started.stdout
        token = next(line.split()[-1] for line in summary.splitlines() if line.startswith("demo token"))
        api = next(line.split()[-1] for line in summary.splitlines() if line.startswith("allocator API"))

        again = potluck("up", "--detach", *ports, env=newcomer)
        assert again.returncode == 0
        assert "already up" in again.stdout

        assert potluck("login", "--url", api, "--token", token, env=newcomer).returncode == 0
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        created = potluck(
            "alloc",
            "create",
            "--cpus",
            "1",
            "--memory",
            "512M",
            "--image",
            "potluck-default:latest",
            "--ssh-key",
            f"{key}.pub",
            "--wait",
            "--json",
            "--",
            "python3",
            "-c",
            "import time; time.sleep(600)",
            env=newcomer,
        )
        assert created.returncode == 0, created.stderr
        allocation = json.loads(created.stdout)
        assert allocation["state"] == "running"

        listed = potluck("alloc", "ls", "--json", env=newcomer)
        assert [a["id"] for a in json.loads(listed.stdout)] == [allocation["id"]]
        shown = potluck("alloc", "show", allocation["id"], env=newcomer)
        assert "AllocationRunning" in shown.stdout
        released = potluck("alloc", "rm", allocation["id"], "--json", env=newcomer)
        assert json.loads(released.stdout)["state"] == "released"
    finally:
        stopped = potluck("down", env=newcomer, timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert potluck("down", env=newcomer).stdout.strip() == "not running."
    state = Path(newcomer["POTLUCK_HOME"])
    assert not (state / "up.pid").exists()
    assert (state / "postgres" / "data" / "PG_VERSION").exists(), "the event log is kept"


def test_a_port_in_use_is_named(newcomer: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = potluck(
            "up",
            "--api-port",
            str(port),
            "--nats-port",
            str(free_port()),
            "--postgres-port",
            str(free_port()),
            env=newcomer,
        )
    assert done.returncode != 0
    assert f"port {port} is in use" in done.stderr
    assert "--api-port" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["alloc", "create", "--cpus", "x"],
        ["alloc", "show"],
        ["host", "pause"],
        ["nope"],
        ["up", "--api-port", "0"],
    ],
)
def test_wrong_arguments_give_a_clear_error_and_a_non_zero_exit(
    newcomer: dict[str, str], args: list[str]
) -> None:
    done = potluck(*args, env=newcomer)
    assert done.returncode == 2
    assert "Error" in done.stderr or "error" in done.stderr


def test_user_commands_without_login_say_what_to_do(newcomer: dict[str, str]) -> None:
    done = potluck("alloc", "ls", env=newcomer)
    assert done.returncode == 2
    assert "potluck login" in done.stderr


def test_every_command_has_help(newcomer: dict[str, str]) -> None:
    from click import Group

    from potluck.cli import main

    def walk(group: Group, prefix: list[str]) -> list[list[str]]:
        found = [prefix]
        for name, command in group.commands.items():
            if isinstance(command, Group):
                found += walk(command, [*prefix, name])
            else:
                found.append([*prefix, name])
        return found

    for path in walk(main, []):
        done = potluck(*path, "--help", env=newcomer)
        assert done.returncode == 0, (path, done.stderr)
        assert "Usage:" in done.stdout
