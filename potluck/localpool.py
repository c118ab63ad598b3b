"""A whole pool on this machine, as real processes: what `potluck up`, the
end-to-end tests and the benchmarks stand on.

NATS requires nkeys, as in a deployment: the services share one identity,
every enrolled host gets its own, and the users file is rendered from the log
and reloaded, exactly as `potluck ops hosts enroll` does.
"""

import asyncio
import contextlib
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import nats
import tomli_w

from potluck.contracts.registry import ISSUER, SERVICE, TOKEN_PATH
from potluck.contracts.subjects import LIST_HOSTS
from potluck.events import EventStore
from potluck.kernel.signing_keys import ensure_signing_key
from potluck.localstack import LocalStackError, NatsCluster, NatsServer, free_port
from potluck.localstack.forkserver import ForkServers
from potluck.localstack.process import ChildProcess
from potluck.localstack.registry_server import RegistryServer
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.registry.enrollment import enroll_host, refresh_nats_authorization, write_credentials
from potluck.registry.nats_auth import new_user_key


@dataclass(frozen=True)
class PoolFiles:
    """What an operator's `ops hosts enroll` (and the registry, for joins) needs of a local pool."""

    nats_auth_file: Path
    nats_pid_file: Path
    services_seed_file: Path
    gateway_state_dir: Path
    #: Where the pool's processes append their spans (POTLUCK_TRACES_FILE), unless OTEL_* names a collector.
    traces_file: Path
    #: The key that signs the pool registry's tokens (the allocator's), and its certificate.
    registry_keys_dir: Path

    @classmethod
    def in_workdir(cls, workdir: Path) -> "PoolFiles":
        nats = workdir / "nats"
        return cls(
            # NatsServer's own names in its workdir.
            nats_auth_file=nats / "auth.json",
            nats_pid_file=nats / "nats-server.pid",
            services_seed_file=workdir / "services.seed",
            gateway_state_dir=workdir / "sshgateway",
            traces_file=workdir / "traces.jsonl",
            registry_keys_dir=workdir / "registry-keys",
        )


@dataclass
class EnrolledHost:
    host_id: str
    name: str
    credentials: Path
    config: Path
    process: ChildProcess | None = None


@dataclass
class LocalPool:
    workdir: Path
    #: One server, or a cluster's nodes (its `url` lists them all).
    nats: NatsServer | NatsCluster
    database_url: str
    store: EventStore
    services_seed_file: Path
    services_seed: str
    processes: dict[str, ChildProcess] = field(default_factory=dict)
    image_registry: RegistryServer | None = None
    image_registry_port: int | None = None
    #: Heartbeat interval, missed beats before unreachable, stranded grace (see `potluck registry`).
    liveness: tuple[float, int, float] = (5.0, 3, 8 * 3600.0)
    #: The registry's --consumer-grace: how long an out host's consumer waits for its hostd.
    consumer_grace_s: float = 60.0
    #: The registry's --host-connection-limit and --connection-cap-cooldown (None: its defaults).
    connection_caps: tuple[int, float] | None = None
    log_level: str = "INFO"
    #: The services' --stream-replicas (None: the streams keep their copies, 1 when new).
    stream_replicas: int | None = None
    #: Each user's changes a second and at once, the allocator's --change-rate and --change-burst
    #: (None: its defaults). Benchmarks and tests that load the allocator as one user raise it.
    change_rate: tuple[float, int] | None = None
    #: Fork servers, by command (`registry`, `hostd`, ...), that start the pool's Python services
    #: with their imports done (forkserver.py): the tests' many pools. None: each is exec'd.
    forks: ForkServers | None = None

    def _potluck(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> ChildProcess:
        proc = ChildProcess(
            [sys.executable, "-m", "potluck", "--log-level", self.log_level, *args],
            log_path=self.workdir / f"{name}.log",
            env=env,
            forks_from=None if self.forks is None else self.forks.get(args[0]),
        )
        proc.start()
        self.processes[name] = proc
        return proc

    def _service_env(self) -> dict[str, str]:
        """The log's URL, which may hold a password, goes to a service in its environment: on its
        command line every local user would read it (`ps`)."""
        return {"POTLUCK_DATABASE_URL": self.database_url}

    def _service_args(self) -> list[str]:
        replicas = [] if self.stream_replicas is None else ["--stream-replicas", str(self.stream_replicas)]
        return [
            "--nats-url",
            self.nats.url,
            "--nats-seed-file",
            str(self.services_seed_file),
            *replicas,
        ]

    def start_registry(self, name: str = "registry") -> ChildProcess:
        """The registry, able to admit hosts that join with a token (it re-renders the users file);
        another `name` starts one more replica beside it."""
        interval, missed, stranded_grace = self.liveness
        return self._potluck(
            name,
            "registry",
            *self._service_args(),
            "--nats-auth-file",
            str(self.nats.auth_file),
            *(arg for pid_file in self.nats.pid_files for arg in ("--nats-pid-file", str(pid_file))),
            "--heartbeat-interval",
            str(interval),
            "--suspect-after-missed",
            str(missed),
            "--stranded-grace",
            str(stranded_grace),
            "--consumer-grace",
            str(self.consumer_grace_s),
            *(arg for url in self.nats.monitor_urls for arg in ("--nats-monitor-url", url)),
            *(
                []
                if self.connection_caps is None
                else [
                    "--host-connection-limit",
                    str(self.connection_caps[0]),
                    "--connection-cap-cooldown",
                    str(self.connection_caps[1]),
                ]
            ),
            env=self._service_env(),
        )

    api_port: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_allocator(
        self,
        name: str = "allocator",
        *,
        port: int | None = None,
        relay: bool = True,
        options: Sequence[str] = (),
    ) -> ChildProcess:
        """The allocator on `port` (a free one by default), with `options` of its own
        (`--public-url ...`) besides the pool's."""
        port = port or free_port()
        if name == "allocator":
            self.api_port = port
        rate: list[str] = []
        if self.change_rate is not None:
            per_s, burst = self.change_rate
            rate = ["--change-rate", str(per_s), "--change-burst", str(burst)]
        extra = [*([] if relay else ["--no-relay"]), *rate, *options]
        registry = self._image_registry()
        key = self.registry_signing_key()
        return self._potluck(
            name,
            "allocator",
            *self._service_args(),
            "--listen",
            f"127.0.0.1:{port}",
            "--registry-token-key",
            str(key),
            "--registry-address",
            registry.address,
            *extra,
            env=self._service_env(),
        )

    def _registry_keys(self) -> tuple[Path, Path]:
        """The registry token key and its certificate (made the first time)."""
        return ensure_signing_key(PoolFiles.in_workdir(self.workdir).registry_keys_dir)

    def registry_signing_key(self) -> Path:
        """The key the allocator signs the pool registry's tokens with (made the first time)."""
        key, _ = self._registry_keys()
        return key

    def _image_registry(self) -> RegistryServer:
        """The pool's image registry, made (not started) with the first allocator: its API is the realm."""
        if self.image_registry is None:
            _, cert = self._registry_keys()
            self.image_registry = RegistryServer(
                self.workdir / "image-registry",
                realm=self.api + TOKEN_PATH,
                cert=cert,
                service=SERVICE,
                issuer=ISSUER,
                port=self.image_registry_port,
            )
        return self.image_registry

    def start_image_registry(self) -> RegistryServer:
        """Start the pool's image registry (after the allocator, whose address it trusts)."""
        if not self.api_port:
            raise RuntimeError(
                "start the allocator before the image registry: its API is the registry's realm"
            )
        registry = self._image_registry()
        registry.start()
        # One of the pool's processes like the services: stopped, logged and watched with them.
        self.processes["image-registry"] = registry.process
        return registry

    async def wait_api(self, port: int | None = None, timeout: float = 30) -> None:
        url = f"http://127.0.0.1:{port or self.api_port}/readyz"
        deadline = asyncio.get_running_loop().time() + timeout
        # The allocator this pool started on its own port: one that exited will never answer,
        # and its last lines say why (a port taken meanwhile), which `potluck up` must show.
        allocator = self.processes.get("allocator") if port is None else None
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                if allocator is not None and not allocator.running():
                    raise LocalStackError(
                        f"the allocator stopped (exit code {allocator.exit_code()}) before its API "
                        f"answered at {url}; its log {allocator.log_path} ends with:\n"
                        f"{allocator.log_tail(3)}"
                    )
                if asyncio.get_running_loop().time() > deadline:
                    raise LocalStackError(f"the allocator API at {url} never became ready\n{self.logs()}")
                await asyncio.sleep(0.1)

    async def wait_registry(self, timeout: float = 60) -> None:
        """Until the registry answers on NATS: it subscribes only once it has folded the log,
        and whoever asks it first (a join, a host) must not race its start."""
        nc = await nats.connect(self.nats.url.split(","), nkeys_seed_str=self.services_seed)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                try:
                    await nc.request(LIST_HOSTS, b"{}", timeout=1)
                    return
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    if asyncio.get_running_loop().time() > deadline:
                        raise AssertionError(f"the registry never answered\n{self.logs()}") from None
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    async def start_central_services(self, *, wait: bool = True) -> None:
        """The registry and the allocator, returning once both answer; with `wait=False` at once
        (`central_services_ready` waits for them then)."""
        self.start_registry()
        self.start_allocator()
        if wait:
            await self.central_services_ready()

    async def central_services_ready(self) -> None:
        await self.wait_registry()
        await self.wait_api()

    async def add_user(self, name: str, **quota: Any) -> str:
        from potluck.allocator.users import add_user
        from potluck.contracts.allocation_events import Quota, user_stream

        events, token = add_user(None, name, Quota(**quota))
        await self.store.append(user_stream(name), events, expected_version=0)
        return token

    async def token_for(self, name: str) -> str:
        """A token for user NAME: the user is added when the log has none, and given a new token
        when it has (a log kept from another state directory: the old token was in that one)."""
        from potluck.allocator.users import UsersView, add_user, rotate_token
        from potluck.contracts.allocation_events import Quota, user_stream
        from potluck.events import SkippedEvents, decode_or_skip

        records = await self.store.read_stream(user_stream(name))
        view = UsersView()
        skipped = SkippedEvents()
        for record in records:
            event = decode_or_skip(record, skipped, reader="potluck up")
            if event is not None:
                view.apply(event)
        existing = view.users.get(name)
        events, token = rotate_token(existing, name) if existing else add_user(None, name, Quota())
        await self.store.append(user_stream(name), events, expected_version=len(records))
        return token

    async def enroll(self, name: str) -> EnrolledHost:
        host_id, key = await enroll_host(self.store, name)
        credentials = self.workdir / f"{name}.creds"
        write_credentials(credentials, host_id, key)
        await refresh_nats_authorization(self.store, self.nats.auth_file, [self.services_seed], None)
        # The reload waits (polling nats-server's log) until the server has applied it: off the
        # event loop, which serves the pool's other work meanwhile.
        await asyncio.to_thread(self.nats.reload)
        return EnrolledHost(host_id, name, credentials, self.workdir / f"{name}.toml")

    def hostd_state_dir(self, host: EnrolledHost) -> Path:
        """Where the host's hostd keeps its state (write_config's default `state_dir`)."""
        return self.workdir / f"{host.name}-state"

    def write_config(self, host: EnrolledHost, docker_url: str, **overrides: Any) -> Path:
        settings: dict[str, Any] = {
            "host_id": host.host_id,
            "credentials_file": str(host.credentials),
            "nats_url": self.nats.url,
            "docker_url": docker_url,
            "state_dir": str(self.hostd_state_dir(host)),
            "allowed_images": [DEFAULT_TAG],
            "donate": {"cpus": 2, "memory": "2G", "disk": "4G"},
            "labels": {"name": host.name},
            "timing": {
                "heartbeat_interval_s": self.liveness[0],
                "drain_grace_s": 2,
                "usage_interval_s": 5,
                "disk_check_interval_s": 0.5,
            },
        }
        for key, value in overrides.items():
            settings[key] = value
        host.config.write_text(tomli_w.dumps(settings))
        return host.config

    def start_gateway(self, *, listen: str, tunnel_listen: str, name: str = "sshgateway") -> ChildProcess:
        """The SSH gateway, its keys kept in `workdir/sshgateway` across restarts; another `name`
        starts one more replica beside it, with the same keys (users and hosts pin one key)."""
        return self._potluck(
            name,
            "sshgateway",
            *self._service_args(),
            "--listen",
            listen,
            "--tunnel-listen",
            tunnel_listen,
            "--state-dir",
            str(self.gateway_state_dir),
            env=self._service_env(),
        )

    @property
    def gateway_state_dir(self) -> Path:
        return PoolFiles.in_workdir(self.workdir).gateway_state_dir

    def gateway_client_key(self) -> str:
        """The public key hostds pin for this pool's gateway (made now if the gateway never ran)."""
        from potluck.sshgateway.service import client_public_key
        from potluck.sshgateway.settings import GatewaySettings

        return client_public_key(GatewaySettings(state_dir=self.gateway_state_dir), make=True)

    def gateway_host_key(self) -> str:
        """The host key users pin for this pool's gateway (made now if the gateway never ran)."""
        from potluck.sshgateway.service import host_public_key
        from potluck.sshgateway.settings import GatewaySettings

        return host_public_key(GatewaySettings(state_dir=self.gateway_state_dir), make=True)

    def start_hostd(self, host: EnrolledHost) -> ChildProcess:
        host.process = self._potluck(f"hostd-{host.name}", "hostd", "--config", str(host.config))
        return host.process

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {name} ---\n{proc.log_tail(lines)}" for name, proc in self.processes.items())

    def stop_all(self) -> None:
        """Stop every process, all at once: each closes its bus connection and its store as it
        stops, and one after another those waits added up on every stop of a pool."""
        processes = list(self.processes.values())
        if not processes:
            return
        with ThreadPoolExecutor(len(processes), thread_name_prefix="stop") as stopping:
            # list(): the first exception of a stop is raised here, after all have been tried.
            list(stopping.map(lambda proc: proc.stop(timeout=10), processes))

    @classmethod
    async def create(
        cls,
        workdir: Path,
        database_url: str,
        *,
        nats_port: int | None = None,
        nats_nodes: int = 1,
        **options: Any,
    ) -> Self:
        """NATS with nkey authorization in `workdir`, the services' identity, a store on `database_url`.

        `nats_nodes` above 1 starts a NATS cluster of that many nodes instead of one server
        (give `stream_replicas` too, for streams kept on several of them).

        Whatever `workdir` already holds (the services' seed, JetStream's data) is kept,
        so a pool started again carries on where it stopped.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        seed_file = PoolFiles.in_workdir(workdir).services_seed_file
        if seed_file.exists():
            seed = seed_file.read_text().strip()
        else:
            seed = new_user_key().seed
            seed_file.touch(mode=0o600)
            seed_file.write_text(seed)
        nats: NatsServer | NatsCluster
        if nats_nodes > 1:
            nats = NatsCluster(workdir / "nats", nodes=nats_nodes)
        else:
            nats = NatsServer(workdir / "nats", authorization=True, port=nats_port)
        store = await EventStore.open(database_url, max_size=5)
        await refresh_nats_authorization(store, nats.auth_file, [seed], None)
        nats.start()
        return cls(workdir, nats, database_url, store, seed_file, seed, **options)

    async def close(self) -> None:
        # In a thread: a process may, while it stops, wait on a server in this very loop (a
        # test's OTLP receiver took each traced service's last export only after its kill).
        await asyncio.to_thread(self.stop_all)
        self.nats.stop()
        await self.store.close()
