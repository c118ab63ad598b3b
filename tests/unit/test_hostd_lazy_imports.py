"""hostd loads asyncssh and the OpenTelemetry exporters only when its config needs them, and
never what it has no use for: rich and pygments (through structlog), charset_normalizer
(through requests), aiohttp (through nats-py), the event store (asyncpg) and the relay, the
user and operator commands (issue 20).

Each check runs in a fresh interpreter: in pytest's own process other tests have imported
everything already.
"""

import json
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from potluck.hostd.gateway_config import GatewayLink
from potluck.kernel.ssh_identity import host_key_path, load_or_create_key, public_key_line

#: What a hostd without [[gateways]] and without a collector has no use for: each would stay
#: resident for its whole life.
KEPT_OUT = (
    "asyncssh",
    "opentelemetry.exporter",
    "rich",
    "pygments",
    "asyncpg",
    "potluck.events.store",
    "potluck.events.follower",
    "potluck.events.relay",
    "potluck.events.projection",
    "potluck.user",
    "potluck.ops",
    "charset_normalizer",
    "chardet",
    "aiohttp",
)


def _loaded_after(code: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter; it sets `result`; returns it with the KEPT_OUT modules loaded."""
    script = (
        f"import sys, json\n{code}\n"
        f"heavy = {KEPT_OUT!r}\n"
        "result['loaded'] = sorted(\n"
        "    m for m in heavy if any(k == m or k.startswith(m + '.') for k in sys.modules)\n"
        ")\n"
        "print(json.dumps(result))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_hostd_modules_load_none_of_what_hostd_does_not_use() -> None:
    """Importing hostd's command, agent, config and telemetry with tracing off: none of KEPT_OUT is
    in sys.modules (the link's modules come in with [[gateways]])."""
    answer = _loaded_after(
        "import potluck.cli, potluck.hostd.agent, potluck.hostd.config\n"
        "from potluck.telemetry import configure_telemetry\n"
        "configure_telemetry('potluck-hostd')()\n"
        "result = {}"
    )
    assert answer["loaded"] == []


def test_the_hostd_command_loads_none_of_what_hostd_does_not_use(tmp_path: Path) -> None:
    """`potluck hostd` itself, as a member starts it, up to its config (a missing file here, so
    it stops there with exit code 2 after importing the agent and configuring logging): none of
    KEPT_OUT is loaded, so nothing imported ahead of potluck.logs let structlog load rich."""
    answer = _loaded_after(
        "from potluck.cli import main\n"
        "try:\n"
        f"    main(['hostd', '--config', {str(tmp_path / 'hostd.toml')!r}])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "result = {'exit': code, 'agent': 'potluck.hostd.agent' in sys.modules}"
    )
    assert answer == {"exit": 2, "agent": True, "loaded": []}


def test_the_registry_and_the_gateway_load_no_aiohttp_and_the_allocator_serves_with_it() -> None:
    """Through the potluck command, as they start: nats-py in the registry and the gateway has no
    aiohttp behind it (they serve no HTTP); the allocator imports aiohttp for its API all the
    same, and nats-py's connect still works there, over nats://."""
    answer = _loaded_after(
        "import potluck.cli, potluck.registry.service, potluck.sshgateway.service\n"
        "plain = 'aiohttp' in sys.modules\n"
        "import potluck.allocator.service, aiohttp.web\n"
        "import nats.aio.transport\n"
        "result = {'plain': plain, 'api': 'aiohttp.web' in sys.modules,\n"
        "          'tcp': nats.aio.transport.TcpTransport.__name__}"
    )
    assert "aiohttp" in answer.pop("loaded")  # type: ignore[operator]
    assert answer == {"plain": False, "api": True, "tcp": "TcpTransport"}


def test_console_logs_still_carry_the_traceback_without_rich() -> None:
    """For people (not JSON), an exception is still logged with its traceback, while rich stays
    unloaded; and rich is importable afterwards, for the user commands that draw with it."""
    script = (
        "import sys\n"
        "from potluck.logs import configure_logging\n"
        "import structlog\n"
        "configure_logging('INFO', json=False)\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    structlog.get_logger().exception('it.failed', host='h1')\n"
        "print('rich' in sys.modules, file=sys.stdout)\n"
        "import rich.console\n"
        "print(rich.console.Console.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "Console"]
    assert "it.failed" in done.stderr
    assert "host=h1" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "ZeroDivisionError: division by zero" in done.stderr


def test_host_key_line_is_read_without_asyncssh(tmp_path: Path) -> None:
    """With hostd's key made, its public line is read without loading asyncssh, and it is the very
    line asyncssh gives for that key (what the gateway pins at registration)."""
    path = host_key_path(tmp_path)
    expected = public_key_line(load_or_create_key(path, comment="potluck-hostd-h1"))
    answer = _loaded_after(
        "from pathlib import Path\n"
        "from potluck.kernel.ssh_identity import ssh_host_key\n"
        f"result = {{'line': ssh_host_key(Path({str(tmp_path)!r}), 'h1')}}"
    )
    assert answer == {"line": expected, "loaded": []}


def test_a_first_start_makes_the_key_without_loading_asyncssh(tmp_path: Path) -> None:
    """No key yet (a first start): one is made, mode 0600, its line is what asyncssh reads from
    it, and the process that asked has not loaded asyncssh."""
    answer = _loaded_after(
        "from pathlib import Path\n"
        "from potluck.kernel.ssh_identity import ssh_host_key\n"
        f"result = {{'line': ssh_host_key(Path({str(tmp_path)!r}), 'h1')}}"
    )
    path = host_key_path(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert answer == {"line": public_key_line(load_or_create_key(path)), "loaded": []}
    assert str(answer["line"]).endswith(" potluck-hostd-h1")


def test_host_key_line_of_a_replaced_key_is_the_new_one(tmp_path: Path) -> None:
    """A key file replaced while its .pub stayed behind: the line is the new key's, not the stale one."""
    path = host_key_path(tmp_path)
    load_or_create_key(path, comment="old")
    stale = path.with_name(path.name + ".pub").read_text()
    path.unlink()
    new = load_or_create_key(path, comment="new")
    path.with_name(path.name + ".pub").write_text(stale)
    from potluck.kernel.ssh_identity import ssh_host_key

    assert ssh_host_key(tmp_path, "h1") == public_key_line(new)


def test_gateway_key_is_checked_as_asyncssh_reads_it() -> None:
    """A pinned gateway key: its blob is what asyncssh decodes; a line that is not a key is refused
    with the field named."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="potluck-sshgateway")
    line = key.export_public_key("openssh").decode().strip()
    link = GatewayLink(address="127.0.0.1:2223", client_key=line)
    assert link.key_blob() == bytes(asyncssh.import_public_key(line).public_data)
    blob = line.split()[1]
    for bad in ("ssh-ed25519", "ssh-rsa " + blob, "ssh-ed25519 !!!", "ssh-ed25519 " + blob[:-8]):
        with pytest.raises(ValueError, match="client_key"):
            GatewayLink(address="127.0.0.1:2223", client_key=bad)


def test_the_engine_sdk_reads_text_without_a_charset_detector() -> None:
    """hostd's requests has no character-set detector, warns nothing at import, and reads an
    answer that names no charset as UTF-8 (the engine's encoding); the SDK's errors are there."""
    answer = _loaded_after(
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "from potluck.hostd.docker_sdk import docker, requests\n"
        "response = requests.models.Response()\n"
        "response._content = 'conteneur arrêté'.encode()\n"
        "response.headers['Content-Type'] = 'application/octet-stream'\n"
        "errors = issubclass(docker.errors.NotFound, docker.errors.APIError)\n"
        "result = {'text': response.text, 'errors': errors}"
    )
    assert answer == {"text": "conteneur arrêté", "errors": True, "loaded": []}
