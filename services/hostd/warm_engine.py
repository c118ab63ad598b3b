"""Warm containers on the engine: made ahead, listed, taken, removed. Synchronous, like the
driver whose client and error translation these use (callers run them in a thread).

Made ahead: the image is read first (`_check_image`, as for any container) and the
container created with the shape's create arguments (warm_pool.py); with the helper it is
also started and paused (warm_pool.starts_ahead): an interactive one once it runs, one with
a command once its launcher is seen waiting (launcher.py). Without the helper it is only
created.
Taken: renamed to the allocation's name, its limits raised with `docker update`, then
read back in full by the driver's `verify_limits` exactly as a container created for the
allocation would be (a mismatch removes it and fails the allocation), and only then
started, or unpaused (and its launcher told to run the command, after reading the
allocation's environment values from the stdin hostd attached to). What fails before that
leaves the allocation to the usual create path.
"""

import time
import uuid
from typing import Any

import docker

from potluck.contracts.capacity import MIN_CPUS
from potluck.hostd.container_config import LABEL_HOST, LABEL_WARM, ContainerSpec
from potluck.hostd.docker_driver import DockerDriver, DockerDriverError, LimitsNotApplied, create_container
from potluck.hostd.launcher import GO_SIGNAL, GO_WITH_ENV_SIGNAL, env_payload, is_waiting
from potluck.hostd.warm_pool import (
    WARM_NAME_PREFIX,
    WarmContainer,
    WarmKey,
    limits_update,
    starts_ahead,
    warm_create_kwargs,
)

#: How long a launcher started ahead may take to be seen waiting (it needs milliseconds).
LAUNCHER_READY_S = 10.0
_LAUNCHER_LOOK_EVERY_S = 0.02


class NotTaken(DockerDriverError):
    """A warm container could not become the allocation before its start (renamed away,
    removed by hand, the update refused): it was removed; create the allocation's own."""


class ShapeCannotStart(DockerDriverError):
    """A warm container's launcher ended before it waited (its command is not in the image):
    it was removed. Allocations of the shape start cold, where the engine says why."""


def _launcher_ended(client: docker.DockerClient, container_id: str, key: WarmKey) -> ShapeCannotStart | None:
    """Why the launcher is no longer running, or None while it runs."""
    state = client.api.inspect_container(container_id).get("State") or {}
    if state.get("Running"):
        return None
    said = client.api.logs(container_id, tail=3).decode(errors="replace").strip()
    return ShapeCannotStart(
        f"the launcher of a warm container of {key.image} {list(key.command or [])} "
        f"ended with {state.get('ExitCode')} before it waited: {said or '(no output)'}"
    )


def _until_launcher_waits(client: docker.DockerClient, container_id: str, key: WarmKey) -> None:
    deadline = time.monotonic() + LAUNCHER_READY_S
    while True:
        if (ended := _launcher_ended(client, container_id, key)) is not None:
            raise ended
        try:
            top = client.api.top(container_id)
        except docker.errors.APIError:
            # A launcher that ends between the inspect and the top fails the top (runc:
            # "container does not exist"): that is the same answer as the inspect's.
            if (ended := _launcher_ended(client, container_id, key)) is not None:
                raise ended from None
            raise
        if is_waiting(top):
            return
        if time.monotonic() > deadline:
            running = [str(row[-1])[:60] for row in top.get("Processes") or []]
            raise DockerDriverError(
                f"the launcher of warm container {container_id[:12]} was not seen waiting "
                f"within {LAUNCHER_READY_S:.0f} s (running: {running}); the engine or the "
                "machine is too busy"
            )
        time.sleep(_LAUNCHER_LOOK_EVERY_S)


def create_warm(driver: DockerDriver, host_id: str, key: WarmKey) -> WarmContainer:
    facts = driver.engine_facts()
    if not facts.seccomp:
        raise LimitsNotApplied("seccomp", True, False, before=f"the engine at {driver.base_url}")
    suffix = uuid.uuid4().hex[:12]
    with driver._errors(f"creating a warm container of {key.image}") as client:
        image = driver._check_image(client, key.image)
        container = create_container(
            client,
            warm_create_kwargs(
                key,
                host_id,
                suffix,
                disk_quota=facts.disk_quota_supported,
                helper=driver.helper,
                cgroup_parent=driver._pool_parent(),
                hardware=driver.hardware(),
                image_entrypoint=(image.get("Config") or {}).get("Entrypoint"),
                hosts_file=driver.usable_hosts_file(client, str(image.get("Id") or "")),
            ),
        )
    container_id = container.id or ""
    if not starts_ahead(driver.helper):
        return WarmContainer(container_id=container_id, key=key)
    try:
        with driver._errors(f"starting warm container {container_id[:12]} ahead") as client:
            client.api.start(container_id)
            attrs = client.api.inspect_container(container_id)
            driver.started(attrs)
            if key.command is not None:
                _until_launcher_waits(client, container_id, key)
        driver.update_cpus(container_id, MIN_CPUS)  # its start is done: the placeholder's again
        driver.pause(container_id)  # tried again if the engine fails the freeze (pause_races.py)
    except DockerDriverError:
        driver.remove(container_id)
        raise
    return WarmContainer(container_id=container_id, key=key, started=True)


def list_warm(driver: DockerDriver, host_id: str) -> list[tuple[str, str]]:
    """(id, name) of this host's warm containers not taken (created, or started and paused)."""
    filters = {"label": [f"{LABEL_WARM}=1", f"{LABEL_HOST}={host_id}"], "status": ["created", "paused"]}
    with driver._errors(f"listing warm containers of host {host_id}") as client:
        found = client.api.containers(all=True, filters=filters)
    return [
        (str(c["Id"]), name.removeprefix("/"))
        for c in found
        for name in (c.get("Names") or [""])[:1]
        if name.removeprefix("/").startswith(WARM_NAME_PREFIX)
    ]


def _go_with_env(driver: DockerDriver, container_id: str, spec: ContainerSpec) -> None:
    """Tell an unfrozen launcher to read the allocation's environment values, and write them
    to its stdin (the engine attaches only to a running container). It reads exactly the
    payload's count, so the stream needs no end."""
    stdin = driver.attach_stdin(container_id)
    try:
        driver.signal(container_id, GO_WITH_ENV_SIGNAL)
        with driver._errors(f"giving {spec.container_name} its environment"):
            stdin.write_all(env_payload(spec.env))
    finally:
        stdin.close()


def take_warm(driver: DockerDriver, warm: WarmContainer, spec: ContainerSpec) -> str:
    """Make the warm container `spec`'s allocation and start it; returns its id.
    NotTaken: nothing started, the warm container is gone, create the allocation's own.
    LimitsNotApplied: the read-back failed (the container is removed), as in `run`."""
    name, container_id = spec.container_name, warm.container_id
    # A task's values go to its launcher; an interactive one's sessions get them from the
    # exec bridge (ExecBridge.env_of), and its keep-alive needs none.
    give_env = bool(spec.env) and warm.key.command is not None
    try:
        if give_env:
            env_payload(spec.env)  # a name no shell can export is refused here: started cold
        with driver._errors(f"taking warm container {container_id[:12]} as {name}") as client:
            # docker-py's update_container knows no NanoCpus (see DockerDriver.update_cpus).
            api: Any = client.api
            api.rename(container_id, name)
            url = api._url("/containers/{0}/update", container_id)
            response = api._post_json(url, data=limits_update(spec))
            api._raise_for_status(response)
    except (DockerDriverError, ValueError) as exc:
        driver.remove(container_id)
        raise NotTaken(str(exc)) from exc
    driver.verify_limits(container_id, spec)
    try:
        if warm.started:
            driver.unpause(container_id)  # tried again if the engine fails the thaw (pause_races.py)
            if give_env:
                _go_with_env(driver, container_id, spec)
            elif warm.key.command is not None:
                driver.signal(container_id, GO_SIGNAL)  # the launcher execs the command
        with driver._errors(f"starting {name}") as client:
            if not warm.started:
                client.api.start(container_id)
            attrs = client.api.inspect_container(container_id)
    except DockerDriverError:
        driver.remove(container_id)
        raise
    if not warm.started:
        driver.started(attrs)
    return container_id
