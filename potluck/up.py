"""`potluck up` and `potluck down`: a whole pool on this machine, for a first try.

Embedded NATS and Postgres, a Docker engine (this machine's, or a private one
when none answers), the central services, a hostd donating part of this
machine, and a demo user. State lives in one directory (default
~/.potluck): the event log survives `down`, so the next `up` carries on where
it stopped. Once ready, a process that dies (the registry, the allocator, the
gateway, hostd, the image registry, and the NATS and Postgres it started) is
started again, with growing pauses while it
keeps dying (`potluck.supervisor`); `down` stops the watching first, then
everything.
"""

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from potluck.allocator.web.connect import GATEWAY_ADDRESS
from potluck.cli_options import seconds_from_env
from potluck.kernel.private_files import append_private, write_private
from potluck.kernel.redacted_urls import redacted
from potluck.localpool import EnrolledHost, LocalPool
from potluck.localstack import LocalStackError, NatsServer, PostgresServer
from potluck.localstack.default_image import ensure_default_image
from potluck.localstack.docker_engine import DockerEngine, ensure_docker_installed
from potluck.localstack.ports import BROWSERS_REFUSE, port_accepts
from potluck.localstack.process import ChildProcess, wait_until_listening
from potluck.localstack.reaper import start_time, still_runs
from potluck.localstack.test_image import DEFAULT_TAG, build_test_image, image_id
from potluck.registry.enrollment import current_hosts, revoke_host
from potluck.registry.host import name_holder
from potluck.supervisor import Supervised, Supervisor
from potluck.telemetry import TRACES_FILE, collector_configured
from potluck.up_state import PID_FILE, READY_FILE, Running, pid_alive, pool_files, running

Say = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class UpSettings:
    state_dir: Path
    api_port: int = 8080
    nats_port: int = 4222
    postgres_port: int = 55432
    ssh_port: int = 2222
    tunnel_port: int = 2223
    cpus: float = max(1.0, (os.cpu_count() or 2) / 2)
    memory: str = "2G"
    disk: str = "10G"
    # Part of every pool image's name: keep it stable across restarts.
    registry_port: int = 5050


#: The ports the state directory's last pool came up on (kept across `potluck down`, unlike
#: up.json): the next `potluck up` there takes them for the port options it is not given.
PORTS_FILE = "ports.json"
PORT_OPTIONS = ("api_port", "nats_port", "postgres_port", "ssh_port", "tunnel_port", "registry_port")


def last_ports(state_dir: Path) -> dict[str, int]:
    """The ports `state_dir`'s last pool came up on, by option (empty when none is recorded).

    A later start on other ports silently broke what holds them: every image pushed names the
    registry's port, and members' hostd.toml the NATS URL and the gateway's address."""
    try:
        recorded = json.loads((state_dir / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {
        name: port
        for name, port in recorded.items()
        if name in PORT_OPTIONS and type(port) is int and 1 <= port <= 65535
    }


class AlreadyUp(Exception):
    pass


class _Interrupted(Exception):
    """Ctrl-C (or SIGTERM: `potluck down`) came while the pool was still starting."""


async def _unless_stopped(stop: asyncio.Event, waiting: Awaitable[T]) -> T:
    """`waiting`'s result, or _Interrupted as soon as `stop` is set (`waiting` is cancelled).

    Only for waits that start nothing (polling an API or a port): one cancelled half-way
    leaves nothing behind for the clean-up to miss."""
    wait = asyncio.ensure_future(waiting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({wait, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if wait.done():
        return wait.result()
    wait.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await wait
    raise _Interrupted


def _ports(settings: UpSettings, *, postgres: bool) -> dict[str, int]:
    """Each port option with its port: Postgres's only when `potluck up` starts Postgres."""
    wanted = {
        "--api-port": settings.api_port,
        "--nats-port": settings.nats_port,
        "--ssh-port": settings.ssh_port,
        "--tunnel-port": settings.tunnel_port,
        "--registry-port": settings.registry_port,
    }
    if postgres:
        wanted["--postgres-port"] = settings.postgres_port
    return wanted


def shared_ports(settings: UpSettings, *, postgres: bool) -> str | None:
    """What is wrong when two of the pool's servers were given one port, or None.

    Checked before anything starts: the second server to bind it would fail only once the
    first listened there, half a minute into the start, as a traceback of its own."""
    by_port: dict[int, list[str]] = {}
    for option, port in _ports(settings, postgres=postgres).items():
        by_port.setdefault(port, []).append(option)
    shared = [
        f"{', '.join(options[:-1])} and {options[-1]} are {'both' if len(options) == 2 else 'all'} {port}"
        for port, options in by_port.items()
        if len(options) > 1
    ]
    if not shared:
        return None
    return (
        f"{'; '.join(shared)}: each of the pool's servers needs a port of its own; give them different ports"
    )


def _check_ports(settings: UpSettings, *, postgres: bool) -> None:
    problem = shared_ports(settings, postgres=postgres)
    if problem is not None:
        raise LocalStackError(problem)
    for option, port in _ports(settings, postgres=postgres).items():
        if port_accepts(port):
            raise LocalStackError(
                f"port {port} is in use on 127.0.0.1; stop what listens there or choose another with {option}"
            )


async def _reachable(database_url: str) -> None:
    """Raise LocalStackError naming POTLUCK_DATABASE_URL when its Postgres does not answer: it
    is still set from the operator's quick start, say, and the pool would not start its own."""
    import asyncpg

    from potluck.events import EventStore

    try:
        store = await EventStore.open(database_url, min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise LocalStackError(
            f"POTLUCK_DATABASE_URL names {redacted(database_url, 'a database URL')}, which cannot be "
            f"reached ({exc}); `potluck up` keeps its event log there instead of starting its own "
            "Postgres: start that server, or unset POTLUCK_DATABASE_URL"
        ) from None
    await store.close()


def _engine(state_dir: Path, say: Say) -> tuple[str, DockerEngine | None]:
    from potluck.localstack.docker_engine import engine_answers

    for url in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if url and url.startswith("unix://") and engine_answers(url):
            say(f"using the Docker engine at {url}")
            return url, None
    ensure_docker_installed()
    engine = DockerEngine(state_dir / "docker")
    say("starting a private Docker engine")
    engine.start()
    return engine.url, engine


#: How long `potluck up` waits for its hostd to come online, in seconds (default
#: ONLINE_TIMEOUT_S): a test whose hostd must refuse to start shortens the wait for it.
ONLINE_TIMEOUT_VARIABLE = "POTLUCK_UP_ONLINE_TIMEOUT_S"
ONLINE_TIMEOUT_S = 60.0


def online_timeout() -> float:
    """The wait for the local hostd (POTLUCK_UP_ONLINE_TIMEOUT_S, else ONLINE_TIMEOUT_S)."""
    try:
        return seconds_from_env(ONLINE_TIMEOUT_VARIABLE, ONLINE_TIMEOUT_S)
    except ValueError as exc:
        raise LocalStackError(str(exc)) from None


async def _wait_online(
    api: str, token: str, hostd: ChildProcess, hostd_log: Path, timeout: float = ONLINE_TIMEOUT_S
) -> None:
    """Until the pool lists a host active; a hostd that stopped meanwhile (it refused its
    settings, or this machine) fails the start at once with its reason, not after `timeout`."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and hostd.running():
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{api}/v1/pool", headers=headers) as response:
                    if response.status == 200 and any(
                        h["status"] == "active" for h in (await response.json())["hosts"]
                    ):
                        return
            await asyncio.sleep(0.2)
    # hostd says why it stopped in its own log (a donation past this machine, a bad setting):
    # the reason belongs in the one error the person reads.
    said = (
        [
            line.strip()
            for line in hostd_log.read_text(errors="replace").splitlines()[-200:]
            if line.startswith("error:")
        ]
        if hostd_log.exists()
        else []
    )
    why = f": {said[-1].removeprefix('error: ')}" if said else ""
    stopped = "" if hostd.running() else f" (it stopped, exit code {hostd.exit_code()})"
    raise LocalStackError(f"the local hostd did not come online{stopped}{why}; see {hostd_log}")


#: The name `potluck up` enrolls its own machine under.
LOCAL = "local"
#: Who the log says revoked a `local` that this state directory holds no credentials of.
REPLACED_BY = "potluck up"
#: Why, as the log records it (HostRevoked.reason).
LOST_LOCAL = (
    "replaced by a new `local`: `potluck up` ran on this log from a state directory that does not hold "
    "this machine's credentials (a restored log, or a lost state directory), so it can never connect again"
)


def local_config(state_dir: Path) -> Path:
    """This machine's hostd configuration in a `potluck up` state directory."""
    return state_dir / "pool" / f"{LOCAL}.toml"


def kept_policy(config: Path) -> dict[str, Any] | None:
    """The `[policy]` of this machine's hostd configuration as its member left it (None: none).

    Each start writes the configuration anew (ports, keys, the donation asked for), so an owner
    policy edited there was lost at the next `ops/up`: it is the member's, and kept. A file that
    is not TOML is named (LocalStackError) before anything starts, rather than written over with
    the edits in it; hostd itself names a policy field that makes no sense."""
    try:
        text = config.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalStackError(f"cannot read {config}: {exc}") from None
    try:
        policy = tomllib.loads(text).get("policy")
    except tomllib.TOMLDecodeError as exc:
        raise LocalStackError(
            f"{config} is not valid TOML ({exc}): fix it, or remove it to start with the default "
            "owner policy (its [policy] is yours; the rest is written anew at each start)"
        ) from None
    return policy if isinstance(policy, dict) else None


async def _local_host(pool: LocalPool, say: Say, notices: list[str]) -> EnrolledHost:
    saved = pool.workdir / "local.host"
    if saved.exists():
        host_id = saved.read_text().strip()
        return EnrolledHost(host_id, LOCAL, pool.workdir / "local.creds", local_config(pool.workdir.parent))
    # A log that holds a `local` this state directory knows nothing of (`potluck ops restore`,
    # then `up` in a new directory): its key went with the old directory, so it cannot be taken
    # over, and enrolling beside it made two machines named `local` (users select machines by
    # name). `potluck join` would be refused NAME_TAKEN; `up` must start, so it revokes the old
    # one, the log saying by whom and why, and says so.
    view = await current_hosts(pool.store)
    holder = name_holder(view.hosts.values(), LOCAL, await pool.store.log_clock())
    if holder is not None:
        await revoke_host(pool.store, holder.host_id, by=REPLACED_BY, reason=LOST_LOCAL)
        notice = (
            f"revoked {holder.host_id}, the log's earlier `{LOCAL}` machine ({holder.status}): its "
            f"credentials are not in {pool.workdir}; this machine is enrolled as `{LOCAL}` anew"
        )
        say(notice)
        notices.append(notice)
    host = await pool.enroll(LOCAL)
    saved.write_text(host.host_id)
    return host


async def _demo_token(pool: LocalPool) -> str:
    saved = pool.workdir.parent / "demo.token"
    if saved.exists():
        return saved.read_text().strip()
    token = await pool.token_for("demo")
    write_private(saved, token)
    return token


def _record_pool_images(docker_url: str, state_dir: Path, tags: list[str]) -> None:
    """Put the images `potluck up` built for its pool in its hostd's ledger of the pool's images."""
    from potluck.hostd.pool_images import PoolImages

    ledger = PoolImages.in_state_dir(state_dir)
    for tag in tags:
        ledger.add(image_id(docker_url, tag))


async def _publish_default_image(
    pool: LocalPool, docker_url: str, registry: str, image: str, say: Say
) -> None:
    """Put the default image in the pool registry's library, where members' machines that lack it
    pull it. A pool whose registry refuses still runs it here; the operator is told how to retry.

    This build's image goes from its files (its layer compressed once, then kept beside the root
    filesystem): the engine's push compressed 300 MB at every start, its CPU's work for 20 s. An
    image of that name the engine holds otherwise (built by the operator) goes by the engine."""
    from potluck.localstack.default_image import default_image_files
    from potluck.ops.pool_images import PublishFailed, publish_files, publish_image

    say(f"publishing {image} in the image registry, for members' machines to pull")
    key = pool.registry_signing_key()
    try:
        files = await asyncio.to_thread(default_image_files, docker_url, say)
        if files is not None:
            await asyncio.to_thread(publish_files, registry, key, image, files)
        else:
            await asyncio.to_thread(publish_image, docker_url, registry, key, image, quiet=True)
    except (PublishFailed, LocalStackError, OSError) as exc:
        say(
            f"could not publish {image} ({exc}): only this machine can run it; "
            f"`potluck ops images publish {image}` tries again"
        )


async def serve(settings: UpSettings, say: Say, on_ready: Callable[[Running], None]) -> None:
    """Start everything, call `on_ready`, run until SIGINT/SIGTERM, then stop everything we started."""
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    if pid_alive(state) is not None:
        raise AlreadyUp(str(state))
    external_db = os.environ.get("POTLUCK_DATABASE_URL")
    _check_ports(settings, postgres=not external_db)
    online_s = online_timeout()  # a bad value is named before anything starts
    policy = kept_policy(local_config(state))  # and a broken [policy] of this machine's too
    (state / PID_FILE).write_text(f"{os.getpid()} {start_time(os.getpid())}")
    stop = asyncio.Event()
    starting = True

    def on_signal() -> None:
        # Ctrl-C while starting used to be heard only once all was up: the summary and "Ctrl-C
        # stops the pool" came after it, half a minute later. Each step now looks at `stop`.
        if starting and not stop.is_set():
            say("stopping: the step under way ends, then everything started so far stops")
        stop.set()

    def go_on() -> None:
        if stop.is_set():
            raise _Interrupted

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    postgres: PostgresServer | None = None
    engine: DockerEngine | None = None
    pool: LocalPool | None = None
    watchers: list[asyncio.Task[None]] = []
    served = False
    try:
        if external_db:
            await _reachable(external_db)
            database_url = external_db
        else:
            say("starting Postgres (the event log)")
            postgres = PostgresServer(state / "postgres", port=settings.postgres_port, durable=True)
            await asyncio.to_thread(postgres.start)
            database_url = postgres.url
        go_on()
        docker_url, engine = await asyncio.to_thread(_engine, state, say)
        go_on()
        image = await asyncio.to_thread(ensure_default_image, docker_url, say)
        go_on()
        await asyncio.to_thread(build_test_image, docker_url)
        go_on()
        if not collector_configured():
            # Every process started below inherits it: spans stay in the state dir, no collector needed.
            os.environ.setdefault(TRACES_FILE, str(pool_files(state).traces_file))
            # Written within a second (not the SDK's 5 s), so a new allocation's page shows its trace.
            os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "1000")
        # The allocator's pages print the plain `ssh` line with the gateway's address.
        os.environ.setdefault(GATEWAY_ADDRESS, f"127.0.0.1:{settings.ssh_port}")
        say("starting NATS, the registry, the allocator, the image registry and the SSH gateway")
        pool = await LocalPool.create(
            state / "pool",
            database_url,
            nats_port=settings.nats_port,
            image_registry_port=settings.registry_port,
        )
        go_on()
        pool.start_registry()
        pool.start_allocator(port=settings.api_port)
        image_registry = await asyncio.to_thread(pool.start_image_registry)
        # Before the publish (a first one compresses and sends ~120 MB): an allocator that could
        # not start is named now, not after it.
        await _unless_stopped(stop, pool.wait_api())
        go_on()
        await _publish_default_image(pool, docker_url, image_registry.address, image, say)
        go_on()
        ssh = f"127.0.0.1:{settings.ssh_port}"
        tunnel = f"127.0.0.1:{settings.tunnel_port}"
        # The key is made here, before the gateway starts, so that the two never race to make it.
        client_key = pool.gateway_client_key()
        gateway_key = pool.gateway_host_key()
        gateway = pool.start_gateway(listen=ssh, tunnel_listen=tunnel)
        notices: list[str] = []
        host = await _local_host(pool, say, notices)
        pool.write_config(
            host,
            docker_url,
            allowed_images=[],
            donate={"cpus": settings.cpus, "memory": settings.memory, "disk": settings.disk},
            labels={"name": LOCAL},
            timing={"heartbeat_interval_s": 5, "drain_grace_s": 300},
            # hostd dials the gateway (no port opens on a member's machine) and pins its key.
            gateways=[{"address": tunnel, "client_key": client_key}],
            **({} if policy is None else {"policy": policy}),
        )
        # The images built above are the pool's own: its hostd runs them though it never pulled
        # them (it runs no other image the engine holds: services/hostd/pool_images.py).
        await asyncio.to_thread(
            _record_pool_images, docker_url, pool.hostd_state_dir(host), [image, DEFAULT_TAG]
        )
        say("starting hostd, donating part of this machine")
        pool.start_hostd(host)
        for port in (settings.ssh_port, settings.tunnel_port):
            await asyncio.to_thread(wait_until_listening, gateway, port, what="the SSH gateway", timeout=60)
        go_on()
        token = await _unless_stopped(stop, _demo_token(pool))
        hostd_log = pool.workdir / f"hostd-{host.name}.log"
        assert host.process is not None  # started above
        await _unless_stopped(stop, _wait_online(pool.api, token, host.process, hostd_log, online_s))
        starting = False
        ready = Running(
            pid=os.getpid(),
            api=pool.api,
            nats=pool.nats.url,
            database=database_url,
            docker=docker_url,
            ssh=ssh,
            image=image,
            token=token,
            host_id=host.host_id,
            logs=str(pool.workdir),
            registry=image_registry.address,
            tunnel=tunnel,
            gateway_key=gateway_key,
            notices=notices,
        )
        # It holds the demo token and the log's URL (a password, when POTLUCK_DATABASE_URL has one).
        write_private(state / READY_FILE, json.dumps(asdict(ready)))
        (state / PORTS_FILE).write_text(json.dumps({name: getattr(settings, name) for name in PORT_OPTIONS}))
        on_ready(ready)
        supervisor = Supervisor(say)
        watched: dict[str, Supervised] = dict(pool.processes)
        # The servers under them too: a NATS or a Postgres that died left every service waiting
        # (allocations hung, nothing said on the console), and `up` said the pool was up.
        if isinstance(pool.nats, NatsServer):
            watched["nats-server"] = pool.nats
        if postgres is not None:
            watched["postgres"] = postgres
        watchers = [
            asyncio.create_task(supervisor.keep_running(name, proc), name=f"watch-{name}")
            for name, proc in watched.items()
        ]
        await stop.wait()
        served = True
        say("stopping")
    except _Interrupted:
        say("stopped before the pool was ready (the event log is kept)")
    finally:
        # Nothing may be restarted while it is being stopped.
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            (state / READY_FILE).unlink()
        if pool is not None:
            await pool.close()
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
        with contextlib.suppress(FileNotFoundError):
            (state / PID_FILE).unlink()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if served:  # "stopping" alone left the console silent on whether everything had
            say("stopped (the event log is kept)")


def start_detached(settings: UpSettings, argv: list[str], timeout: float = 600) -> Running:
    """Run `potluck up` in the background and wait until it is ready (or failed)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log = settings.state_dir / "up.log"
    with append_private(log) as out:  # the console: it prints the demo token
        # The log is kept across runs: only what this run writes explains its failure.
        began = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "potluck", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with log.open("rb") as written:
                    written.seek(began)
                    tail = "\n".join(written.read().decode(errors="replace").splitlines()[-15:])
                raise LocalStackError(f"potluck up stopped (exit code {proc.returncode}):\n{tail}")
            found = running(settings.state_dir)
            if found is not None and found.pid == proc.pid:
                return found
            time.sleep(0.25)
    except KeyboardInterrupt:
        # Ctrl-C while waiting: the person wants no pool. The child is in a session of its own
        # (it must outlive this terminal), so it never heard it and went on starting, while
        # this process said only "Aborted!". It stops at its next step (SIGTERM, as `down`).
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise LocalStackError(
                f"interrupted; the pool starting in the background (pid {proc.pid}) did not stop "
                f"within 120 s: `potluck down --state-dir {settings.state_dir}` stops it"
            ) from None
        raise LocalStackError(
            f"interrupted: the pool that was starting in the background stopped (its console: {log})"
        ) from None
    raise LocalStackError(f"potluck up was not ready within {timeout:.0f}s; see {log}")


def stop(state_dir: Path, timeout: float = 120) -> int | None:
    """Stop a pool started with `potluck up`; returns its PID, or None when none was running."""
    pid = pid_alive(state_dir)
    if pid is None:
        return None
    started = start_time(pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Its PID file goes once what it started has stopped; the process itself ends a moment
        # later. `down` returns when nothing of the pool runs, `potluck up` included.
        if pid_alive(state_dir) is None and not still_runs(pid, started):
            return pid
        time.sleep(0.2)
    raise LocalStackError(f"potluck up (pid {pid}) did not stop within {timeout:.0f}s")


def summary(ready: Running) -> list[str]:
    return [
        f"allocator API   {ready.api}",
        f"web page        {ready.api}/{_unless_browsers_refuse(ready.api)}",
        f"SSH gateway     {ready.ssh}",
        f"NATS            {ready.nats}",
        f"event log       {redacted(ready.database, 'a database URL')}",
        f"Docker engine   {ready.docker}",
        f"default image   {ready.image}",
        f"image registry  {ready.registry}",
        f"local host      {ready.host_id}",
        f"logs            {ready.logs}",
        "",
        f"demo token      {ready.token}",
        "",
        "next:",
        *_put_on_path(),
        f"  potluck login --url {ready.api} --token {ready.token} --gateway {ready.ssh}"
        + (f" --gateway-key '{ready.gateway_key}'" if ready.gateway_key else ""),
        f"  potluck alloc create --cpus 1 --memory 512M --image {ready.image} "
        "--ssh-key ~/.ssh/id_ed25519.pub --wait",
        "  potluck alloc ls",
        "  potluck ssh ALLOCATION_ID",
        "  potluck image push YOUR_IMAGE",
    ]


def _put_on_path() -> list[str]:
    """The `export PATH=...` line to run before the next commands when the shell that started the
    pool finds no `potluck`, or another one (`ops/up` runs the checkout's `.venv/bin/potluck`,
    which a newcomer's PATH does not hold yet: each `potluck ...` line said "command not found")."""
    here = Path(sys.executable).parent
    mine = here / "potluck"
    if not mine.is_file():
        return []
    found = shutil.which("potluck")
    if found is not None and Path(found).resolve() == mine.resolve():
        return []
    return [f'  export PATH={shlex.quote(str(here))}:"$PATH"   # the potluck command, in this shell']


def _unless_browsers_refuse(api: str) -> str:
    """What to do about a web page on a port browsers will not open (Chromium's and Firefox's
    restricted ports; the API itself answers there all the same)."""
    port = urlsplit(api).port
    if port not in BROWSERS_REFUSE:
        return ""
    return f"  (browsers refuse port {port}: to open this page, start the pool with another --api-port)"


def settings_dict(settings: UpSettings) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
