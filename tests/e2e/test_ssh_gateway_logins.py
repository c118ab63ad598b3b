"""The users' port against what an outside SSH auditor and a hostile user try at login and on a
session's first requests: the signatures and keys it takes, how many authentication requests one
connection may send, and how much of a session's environment it keeps.

The real OpenSSH client logs in wherever it can say what is tried; asyncssh sends what OpenSSH
will not (authentication requests as fast as a socket takes them). Each test connects from its
own loopback address, since failed logins are counted per address.
"""

import asyncio
import subprocess
from pathlib import Path

from potluck.sshgateway.request import MAX_ENV_VALUE, MAX_ENV_VARS
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import SshEnv

ssh_env = ssh_fixtures.ssh_env


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_session_keeps_only_a_bounded_locale_of_the_environment_it_is_sent(ssh_env: SshEnv) -> None:
    """What is tried: OpenSSH sends, on one session, LANG and LC_TIME, LD_PRELOAD, 600 LC_*
    variables of 8 KB each (5 MB) and 40 short LC_* ones (`SetEnv` in its config file).
    Before the fix the gateway kept every `env` request whole for the session's life and sent
    every LC_* one on to hostd, which kept them too and put them in the exec: 2,000 of 50 KB
    grew the gateway by 300 MB and hostd by 200 MB, from one session.
    What must hold: the command sees LANG and LC_TIME, no LD_PRELOAD, none of the long values,
    and no more than MAX_ENV_VARS of the user's variables in all; the gateway's memory grows by
    less than the 5 MB sent; the session is recorded as any other."""
    env = ssh_env
    await env.place_running(env.hosts[0], "env1", users=("envy",))
    await env.wait_reachable("env1", key="envy")
    big = "v" * 8000
    sent = ["LANG=C.UTF-8", "LC_TIME=en_GB.UTF-8", "LD_PRELOAD=/tmp/evil.so"]
    sent += [f"LC_BIG{i}={big}" for i in range(600)]
    sent += [f"LC_S{i}=s{i}" for i in range(40)]
    config = env.workdir / "env1.ssh_config"
    config.write_text("SetEnv " + " ".join(sent) + "\n")
    pid = env.gateway.pid
    assert pid is not None
    before = _rss_kb(pid)
    argv = env.ssh_argv("env1", "env", key="envy", source="127.0.0.157")
    argv[argv.index("/dev/null")] = str(config)  # -F: the config with the SetEnv line
    ran = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    seen = dict(line.split("=", 1) for line in ran.stdout.decode().splitlines() if "=" in line)
    assert seen.get("LANG") == "C.UTF-8"
    assert seen.get("LC_TIME") == "en_GB.UTF-8"
    assert "LD_PRELOAD" not in seen
    assert not [name for name, value in seen.items() if len(value) > MAX_ENV_VALUE]
    users = [name for name in seen if name == "LANG" or name.startswith("LC_")]
    assert 2 < len(users) <= MAX_ENV_VARS, users
    grown = _rss_kb(pid) - before
    assert grown < 5000, f"the gateway grew by {grown} kB"
    started = [e for e in await env.session_events("env1") if e["type"] == "SessionStarted"]
    assert [e["command"] for e in started if e["source_address"] == "127.0.0.157"] == ["env"]
