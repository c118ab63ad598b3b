"""`potluck login`, `potluck alloc ...` and `potluck ssh`: the user's commands.

Human tables by default (rich), `--json` for scripts; exit codes in
potluck/user/client.py.
"""

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from potluck.cli_options import ALLOC_ID, FiniteRange
from potluck.contracts.event_facts import event_facts
from potluck.terminal import foreign
from potluck.token_input import token_from_stdin, warn_token_on_command_line
from potluck.user.client import (
    Api,
    ClientError,
    ExitCode,
    Login,
    allocator_url,
    config_path,
    gateway_address,
    segment,
)
from potluck.user.known_hosts import pin_gateway_key, public_key_line
from potluck.user.remote import IDENTITY, allocation
from potluck.user.ssh_keys import admitted_keys, public_key_files

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")


#: `potluck alloc rm $(potluck alloc ls -q)`; the command calls `ids_alone` for its value.
QUIET_IDS = click.option("--quiet", "-q", is_flag=True, help="Only the ids, one a line.")


def ids_alone(quiet: bool, as_json: bool) -> bool:
    """Whether to print the ids alone (QUIET_IDS); with --json too, a usage error."""
    if quiet and as_json:
        raise click.UsageError("--quiet prints the ids alone and --json the whole rows: choose one")
    return quiet


# Piped output is not cut at 80 columns: ids must stay whole for scripts that grep them, and an
# error's words for those that grep what it says (a terminal still wraps at its width).
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


def say_to_user(text: str) -> None:
    """A line for the person at the terminal, on stderr (stdout stays the command's answer)."""
    err.print(text, highlight=False, soft_wrap=True)


def bail(exc: ClientError) -> NoReturn:
    err.print(f"[red]error:[/red] {foreign(exc)}", highlight=False)
    sys.exit(int(exc.code))


def call_api(
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout: float | None = None,
    idempotency_key: str | None = None,
) -> Any:
    try:
        return asyncio.run(
            Api(Login.load()).call(method, path, body, timeout=timeout, idempotency_key=idempotency_key)
        )
    except ClientError as exc:
        bail(exc)


#: How long one round of a wait (`alloc create --wait`, `job wait`, `run --wait`) rides out an
#: allocator that cannot be reached or is still loading its log (503 NOT_READY) before it gives
#: up with that error: a restart of the allocator takes a few seconds, and a script waiting on
#: a job of hours failed (exit 3) in the first of them.
OUTAGE_GRACE_S = 60.0


def call_while_waiting(path: str, timeout: float, *, until: float | None = None) -> Any:
    """GET `path`, one round of a wait; while the allocator cannot be reached or is not ready,
    asked again each second (said once on stderr) for OUTAGE_GRACE_S at most, and never past
    `until` (time.monotonic()); then its error, as call_api would."""
    give_up = time.monotonic() + OUTAGE_GRACE_S
    if until is not None:
        give_up = min(give_up, until)
    said = False
    while True:
        try:
            return asyncio.run(Api(Login.load()).call("GET", path, timeout=timeout))
        except ClientError as exc:
            passing = exc.code is ExitCode.UNREACHABLE or exc.api_code == "NOT_READY"
            if not passing or time.monotonic() + 1.0 > give_up:
                bail(exc)
            if not said:
                say_to_user(f"{foreign(exc)}; asking again for up to {OUTAGE_GRACE_S:g}s")
                said = True
            time.sleep(1.0)


def delete_each(paths: Sequence[str], as_json: bool, table: Callable[[list[Any]], Table]) -> None:
    """DELETE each of `paths` (once each, in the order given) and show what was answered: one
    JSON object a line, or one `table`. One that is not the user's (404) is said and the others
    go on, the exit code then the first such refusal's; anything else (a wrong token, no
    allocator) would meet every other path too: said once, after what was done before it."""
    done: list[Any] = []

    def say_done() -> None:
        if as_json:
            for answer in done:
                click.echo(json.dumps(answer))
        elif done:
            out.print(table(done))

    not_found: ClientError | None = None
    try:
        api = Api(Login.load())
        for path in dict.fromkeys(paths):
            try:
                done.append(asyncio.run(api.call("DELETE", path)))
            except ClientError as exc:
                if exc.api_code != "NOT_FOUND":
                    raise
                err.print(f"[red]error:[/red] {foreign(exc)}", highlight=False)
                not_found = not_found or exc
    except ClientError as exc:
        say_done()
        bail(exc)
    say_done()
    if not_found is not None:
        sys.exit(int(not_found.code))


def list_rows(
    path: str, key: str, query: dict[str, str], most: int | None, *, after: str | int | None = None
) -> list[Any]:
    """Every row of a paged list (after the row `after`, when given), or the first `most` (Api.rows)."""
    try:
        return asyncio.run(Api(Login.load()).rows(path, key, query, most, after=after))
    except ClientError as exc:
        bail(exc)


#: `--limit N` of the list commands: all rows unless given.
LIMIT = click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Show only the first N (oldest first); all by default.",
)


def key_values(items: tuple[str, ...], what: str) -> dict[str, str]:
    """Repeated KEY=VALUE options as a dict; `what` names the option in the error."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        result[key] = value
    return result


def size_text(n: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor:
            return f"{n / factor:g}{unit}"
    return str(n)


def local_time(iso: str | None) -> str:
    """An API time as the user reads it: local HH:MM today, with the date otherwise."""
    if not iso:
        return "?"
    at = datetime.fromisoformat(iso).astimezone()
    return at.strftime("%H:%M" if at.date() == datetime.now().astimezone().date() else "%Y-%m-%d %H:%M")


def _state(a: dict[str, Any]) -> str:
    """The state, with what its host does to it (waiting, throttled, frozen) or why it ended: as
    text, which may quote hostd's words; `foreign` it, once, to print it."""
    state: str = a["state"]
    condition = a.get("condition")
    if condition:
        since = local_time(condition.get("since"))
        if condition["state"] == "waiting_for_host" and condition["cause"] == "engine":
            return f"{state} (its host's Docker engine is away since {since})"
        if condition["state"] == "waiting_for_host":
            return f"{state} (waiting for host since {since}: {condition['cause']})"
        if condition["state"] == "draining":
            return f"{state} (its host drains: stopped at {local_time(condition.get('until'))})"
        return f"{state} ({condition['state']} since {since}: {condition['reason']})"
    waiting = a.get("waiting")
    if state == "pending" and waiting:
        return f"{state} ({waiting['position']} of {waiting['queue_length']} in the queue)"
    if state == "released" and a.get("frozen_too_long") and a.get("reason"):
        return f"{state} (frozen too long)"
    if state == "exited":
        return _exited(a)
    if state in ("lost", "refused") and a.get("reason"):
        return f"{state} ({a['reason']})"
    return state


def _exited(a: dict[str, Any]) -> str:
    """An ended command's state: its exit code, why its host stopped it, and whether its stopped
    container is still kept (`potluck cp`, `potluck logs` read it) or removed."""
    code = a.get("exit_code")
    said = [str(a["reason"])] if a.get("reason") else []
    if a.get("oom_killed"):
        said.append("out of memory")
    kept = a.get("kept_until")
    said.append(f"kept until {local_time(kept)}" if kept else "container removed")
    return f"exited {code if code is not None else '?'} ({'; '.join(said)})"


def host_text(shown: Mapping[str, Any]) -> str:
    """Where an allocation or task runs: its host's name (what `--constraint name=` selects), else
    its id (an older allocator's answer), else "-"."""
    return str(shown.get("host_name") or shown.get("host_id") or "-")


#: The states in which an allocation's lifetime no longer matters (EXPIRES shows "-").
_ENDED = frozenset({"exited", "failed", "lost", "expired", "released", "refused"})


def _table(allocations: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATE", "HOST", "CPUS", "MEMORY", "DISK", "IMAGE", "EXPIRES"):
        table.add_column(column)
    for a in allocations:
        table.add_row(
            foreign(a["id"]),
            foreign(_state(a)),  # its reason may be hostd's words
            foreign(host_text(a)),
            f"{a['cpus']:g}",
            size_text(a["memory"]),
            size_text(a["disk"]),
            foreign(a["image"]),
            local_time(a["expires_at"]) if a.get("expires_at") and a["state"] not in _ENDED else "-",
        )
    return table


def _show(allocation: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(allocation))
    else:
        out.print(_table([allocation]))
        if allocation.get("reason"):
            out.print(f"reason: {foreign(allocation['reason'])}", highlight=False)
        _show_condition(allocation)
        if allocation.get("detail"):
            out.print(f"detail: {foreign(allocation['detail'])}", highlight=False)
        for failure in allocation.get("failed_on") or []:
            out.print(
                f"could not get the image on {foreign(failure['host_id'])}: {foreign(failure['detail'])}",
                highlight=False,
            )
        pull = allocation.get("pull")
        if allocation.get("state") == "pulling" and pull:
            total = size_text(pull["total_bytes"]) if pull["total_bytes"] else "?"
            out.print(f"pulling the image: {size_text(pull['done_bytes'])} of {total}", highlight=False)


def _show_condition(allocation: dict[str, Any]) -> None:
    waiting = allocation.get("waiting")
    if waiting:
        out.print(f"why it waits: {foreign(waiting['message'])}", highlight=False)
    condition = allocation.get("condition")
    if condition:
        since = local_time(condition.get("since"))
        if condition["state"] == "waiting_for_host" and condition["cause"] == "engine":
            away = f"its host's Docker engine is away since {since}"
            out.print(f"{away}: {foreign(condition['reason'])}", highlight=False)
        elif condition["state"] == "waiting_for_host":
            out.print(f"waiting for its host since {since}: {foreign(condition['reason'])}", highlight=False)
        elif condition["state"] == "draining":
            until = local_time(condition.get("until"))
            out.print(
                f"draining since {since}, stopped at {until}: {foreign(condition['reason'])}", highlight=False
            )
        else:
            share = condition.get("share_cpus")
            kept = f" (the pool keeps {share:g} CPUs on that host)" if share is not None else ""
            out.print(
                f"{condition['state']} since {since}: {foreign(condition['reason'])}{kept}", highlight=False
            )
    mark = allocation.get("frozen_too_long")
    if mark:
        then = (
            "it was released"
            if allocation.get("on_preempt") == "release"
            else "it waits for the host to resume (on_preempt=wait)"
        )
        out.print(
            f"frozen too long: its host froze it at {local_time(mark['frozen_since'])} for over "
            f"{mark['max_frozen_s']:g}s, the member's limit; {then}",
            highlight=False,
        )


@click.command()
@click.option("--url", required=True, help="The allocator, e.g. http://127.0.0.1:8080.")
@click.option(
    "--token",
    envvar="POTLUCK_TOKEN",
    default=None,
    help="Your bearer token (from the operator); `-` reads it from standard input. Left out, it "
    "is asked for without echo on a terminal, else read from standard input: a token on the "
    "command line shows in every local user's process list and in your shell's history.",
)
@click.option("--gateway", default="127.0.0.1:2222", show_default=True, help="The SSH gateway, HOST:PORT.")
@click.option(
    "--gateway-key",
    default=None,
    help="The gateway's host key (a line, or a file holding it; from your operator, or "
    "`potluck sshgateway --print-host-key`): `potluck ssh` is held to it from the first "
    "connection on. Without it the first connection's key is trusted.",
)
def login(url: str, token: str | None, gateway: str, gateway_key: str | None) -> None:
    """Remember the allocator's URL and your token (checked against the allocator first)."""
    try:
        given = "--token"
        if click.get_current_context().get_parameter_source(
            "token"
        ) == ParameterSource.COMMANDLINE and token not in ("", "-"):
            warn_token_on_command_line(
                "--token", instead="leave it out to type it without echo, or pipe it on standard input"
            )
        if token is None or token == "-":
            given = "the token typed or read from standard input"
            token = token_from_stdin("Token", ask=token is None)
        key_line = None
        if gateway_key is not None:
            try:
                key_line = public_key_line(gateway_key)
            except ValueError as exc:
                raise ClientError(f"--gateway-key: {exc}", ExitCode.USAGE) from None
        if not token.strip():
            raise ClientError(
                f"{given} is empty: give the token an operator gave you (`potluck ops users add` "
                "prints one; `potluck up` prints a demo one)",
                ExitCode.USAGE,
            )
        candidate = Login(allocator_url(url), token.strip(), gateway_address(gateway))
        asyncio.run(Api(candidate).call("GET", "/v1/allocations?limit=1"))
    except ClientError as exc:
        if exc.api_code == "NOT_FOUND":
            # Something at that address speaks JSON errors, but has no allocator API there.
            exc = ClientError(
                f"{candidate.url} has no allocator API ({exc}); give `potluck login --url` the "
                "`allocator API` address `potluck up` prints, e.g. http://127.0.0.1:8080",
                ExitCode.USAGE,
            )
        bail(exc)
    path = candidate.save()
    click.echo(f"logged in to {candidate.url}; saved in {path}")
    if key_line is not None:
        known = path.with_name("known_hosts")
        pin_gateway_key(known, candidate.gateway, key_line)
        click.echo(f"the gateway {candidate.gateway} is held to its key {key_line.split()[0]} in {known}")


@click.group()
def alloc() -> None:
    """Ask for capacity and manage your allocations."""


@alloc.command()
@click.option("--cpus", type=FiniteRange(min=0.01), required=True, help="CPU cores, e.g. 1 or 0.5.")
@click.option("--memory", required=True, help="Memory, e.g. 512M or 4G.")
@click.option(
    "--disk",
    default="1G",
    show_default=True,
    help="Disk, e.g. 10G (its output log takes a 16th, at most 30 MiB).",
)
@click.option("--image", required=True, help="Container image, e.g. potluck-default:latest.")
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    callback=public_key_files,
    help="Public key file allowed to SSH in (repeatable). Default: those of ~/.ssh/id_rsa.pub, "
    "id_ecdsa.pub and id_ed25519.pub that exist, the keys `ssh` offers.",
)
@click.option("--lifetime", default="1h", show_default=True, help="How long it may run, e.g. 30m, 2h, 1d.")
@click.option(
    "--keep-for",
    default=None,
    help="Keep its stopped container this long after COMMAND ends, e.g. 1h, for `potluck cp` and "
    "`potluck logs` (its disk stays reserved until then). Default: removed at once.",
)
@click.option("--constraint", "constraints", multiple=True, help="Host label KEY=VALUE that must match.")
@click.option("--env", "env", multiple=True, help="Environment variable KEY=VALUE.")
@click.option("--network/--no-network", default=False, show_default=True, help="Outbound network.")
@click.option(
    "--queue-timeout",
    default=None,
    help="How long it may wait as pending for a host with room, e.g. 30m (default 10m; 0: not at all, "
    "else at least 1s); then refused.",
)
@click.option(
    "--on-preempt",
    type=click.Choice(["wait", "release"]),
    default="wait",
    show_default=True,
    help="If its host's owner keeps it frozen past the member's limit: wait for the host, or release it.",
)
@click.option("--wait/--no-wait", default=False, help="Wait until it runs (with progress).")
@click.option(
    "--timeout",
    type=FiniteRange(min=1, max=3600),
    default=120.0,
    show_default=True,
    help="With --wait: give up after this many seconds (exit code 4).",
)
@JSON
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print only the allocation's id, and no progress (as `docker build -q`).",
)
@click.argument("command", nargs=-1)
def create(
    cpus: float,
    memory: str,
    disk: str,
    image: str,
    ssh_keys: tuple[Path, ...],
    lifetime: str,
    keep_for: str | None,
    constraints: tuple[str, ...],
    env: tuple[str, ...],
    network: bool,
    queue_timeout: str | None,
    on_preempt: str,
    wait: bool,
    timeout: float,
    as_json: bool,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Ask for a container; COMMAND (after --) is what it runs, and it ends when COMMAND ends.
    Without COMMAND it is interactive: up until released or expired (reach it with `potluck ssh`).

    ID=$(potluck alloc create -q --wait ...) keeps its id for the next commands."""
    quiet = ids_alone(quiet, as_json)
    body: dict[str, Any] = {
        "cpus": cpus,
        "memory": memory,
        "disk": disk,
        "image": image,
        "lifetime": lifetime,
        "ssh_keys": admitted_keys(ssh_keys, say_to_user),
        "network": network,
        "on_preempt": on_preempt,
        "constraints": key_values(constraints, "--constraint"),
        "env": key_values(env, "--env"),
        "command": list(command) or None,
    }
    if keep_for is not None:
        body["keep_for"] = keep_for
    if queue_timeout is not None:
        body["queue_timeout"] = queue_timeout
    # One key for every try: an answer lost on its way back, or a database or allocator that
    # went away meanwhile, is sent again without making a second allocation.
    created = call_api("POST", "/v1/allocations", body, idempotency_key=str(uuid.uuid4()))
    if quiet:
        # At once: a script keeps the id (to release it) whatever the wait ends with.
        click.echo(created["id"])
    if wait and created["state"] not in ("running",):
        created = _wait(created, timeout, show_progress=not (as_json or quiet))
    if not quiet:
        _show(created, as_json)
    if wait and created["state"] != "running":
        # The reason on this line too: with -q (a script's way) it is the only one printed.
        why = [created.get("reason"), created.get("detail")] if created.get("reason") else []
        why = why or [(created.get("waiting") or {}).get("message")]
        said = f"allocation {created['id']} is {created['state']}, not running"
        err.print(said + "".join(f": {foreign(str(w))}" for w in why if w), highlight=False)
        sys.exit(int(ExitCode.REFUSED))


def _wait(created: dict[str, Any], timeout: float, *, show_progress: bool) -> dict[str, Any]:
    loop_deadline = asyncio.run(_now()) + timeout
    current: dict[str, Any] = created
    waiting = f"waiting for {created['id']} to run ({foreign(_state(created))})"
    status = err.status(waiting) if show_progress else None
    if status is not None:
        status.start()
    try:
        while True:
            left = loop_deadline - asyncio.run(_now())
            if left <= 0:
                waits = (current.get("waiting") or {}).get("message")
                err.print(
                    f"timed out after {timeout:g}s: {created['id']} is {foreign(_state(current))}"
                    + (f": {foreign(waits)}" if waits else ""),
                    highlight=False,
                )
                sys.exit(int(ExitCode.TIMEOUT))
            chunk = min(left, 10.0)
            current = call_while_waiting(
                f"/v1/allocations/{segment(created['id'])}?wait=running&timeout={chunk:.1f}",
                chunk,
                until=time.monotonic() + left,
            )
            if status is not None:
                status.update(f"waiting for {created['id']} to run ({foreign(_state(current))})")
            if current["state"] not in ("pending", "placed", "pulling"):
                return current
    finally:
        if status is not None:
            status.stop()


async def _now() -> float:
    return asyncio.get_running_loop().time()


#: readmodels' AllocationStatus, written out: importing it would load pydantic into every user
#: command (tests/unit/test_cli_lazy_commands.py); tests/unit/test_user_states.py keeps them equal.
ALLOCATION_STATES = (
    "pending",
    "placed",
    "pulling",
    "running",
    "exited",
    "failed",
    "lost",
    "expired",
    "released",
    "refused",
)


@alloc.command(name="ls")
@click.option(
    "--state",
    # Checked here: a typo is wrong usage (exit 2), not a refusal by the allocator (exit 1).
    type=click.Choice(ALLOCATION_STATES),
    default=None,
    help="Only allocations in this state.",
)
@LIMIT
@JSON
@QUIET_IDS
def ls(state: str | None, limit: int | None, as_json: bool, quiet: bool) -> None:
    """Your allocations, oldest request first."""
    quiet = ids_alone(quiet, as_json)
    found = list_rows("/v1/allocations", "allocations", {"state": state} if state else {}, limit)
    if as_json:
        click.echo(json.dumps(found))
    elif quiet:
        click.echo("".join(f"{a['id']}\n" for a in found), nl=False)
    else:
        out.print(_table(found))


@alloc.command()
@click.argument("alloc_id", type=ALLOC_ID)
@JSON
def show(alloc_id: str, as_json: bool) -> None:
    """One allocation with its event history."""
    allocation = call_api("GET", f"/v1/allocations/{segment(alloc_id)}")
    history = call_api("GET", f"/v1/allocations/{segment(alloc_id)}/events")["events"]
    if as_json:
        click.echo(json.dumps({**allocation, "events": history}))
        return
    _show(allocation, False)
    table = Table(box=None, header_style="bold", title="history", title_justify="left")
    for column in ("#", "WHEN", "EVENT", "DETAIL"):
        table.add_column(column)
    for entry in history:
        table.add_row(
            str(entry["version"]),
            entry["recorded_at"][:23],
            foreign(entry["type"]),
            foreign(event_facts(entry["data"], 120)),  # hostd's failure details among the facts
        )
    out.print(table)


@alloc.command()
@click.argument("alloc_ids", metavar="ALLOC_ID...", nargs=-1, required=True, type=ALLOC_ID)
@JSON
def rm(alloc_ids: tuple[str, ...], as_json: bool) -> None:
    """Release allocations: their containers are stopped and removed.

    Each is released even if another is not yours; the exit code is then the first failure's.

    \b
    potluck alloc rm $(potluck alloc ls -q)    every one of yours
    """
    if len(alloc_ids) == 1:
        _show(call_api("DELETE", f"/v1/allocations/{segment(alloc_ids[0])}"), as_json)
        return
    delete_each([f"/v1/allocations/{segment(alloc_id)}" for alloc_id in alloc_ids], as_json, _table)


@alloc.command()
@click.argument("alloc_id", type=ALLOC_ID)
@click.option("--by", default="1h", show_default=True, help="How much longer, e.g. 30m or 2h.")
@JSON
def extend(alloc_id: str, by: str, as_json: bool) -> None:
    """Let an allocation run longer."""
    path = f"/v1/allocations/{segment(alloc_id)}/extend"
    # Keyed, so that sending it again through an outage extends once (as create makes one).
    _show(call_api("POST", path, {"by": by}, idempotency_key=str(uuid.uuid4())), as_json)


def _ssh_help() -> str:
    from potluck.user.ssh_options import PASSED

    passed = "\n".join(f"  -{letter}  {what}" for letter, what in PASSED.items())
    return (
        "Open a shell (or run COMMAND) in an allocation's container through the gateway.\n\n"
        "ssh's own options go after the id, as with ssh; the command follows them, after `--` "
        "if it starts with a dash. Only these are passed on to ssh; any other is refused, saying "
        "why (the gateway forwards no ports, agent or X11 connections: -L, -R, -D, -A, -X are "
        "refused):\n\n"
        f"\b\n{passed}\n\n"
        "\b\n"
        "potluck ssh ALLOC                      a shell\n"
        "potluck ssh ALLOC -v -i ~/.ssh/work    a shell, with ssh's messages and that key\n"
        "potluck ssh ALLOC make -j4             a command (its options are its own)\n"
        "potluck ssh ALLOC -t -- top -d 1       a command with a terminal\n"
    )


@click.command(
    # The arguments after the id are read by split_ssh_args, not click: `potluck ssh ALLOC grep -i
    # x` must not take `-i x` as the key file, and `--` must reach it to end ssh's options.
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    help=_ssh_help(),
)
@IDENTITY
@click.argument("alloc_id", type=ALLOC_ID)
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[SSH_OPTIONS]... [--] [COMMAND]...")
def ssh(alloc_id: str, identity: str | None, args: tuple[str, ...]) -> None:
    from potluck.user.ssh_options import SshOptionError, split_ssh_args

    try:
        given = split_ssh_args(args)
    except SshOptionError as exc:
        bail(ClientError(str(exc), ExitCode.USAGE))
    if given.identity is not None:
        if not Path(given.identity).is_file():
            bail(ClientError(f"-i {given.identity}: no such key file", ExitCode.USAGE))
        identity = given.identity
    try:
        login_data = Login.load()
        # Asked first: for an id that is not one of the user's allocations the gateway answers
        # only "Permission denied (publickey)", as it must, which sends people after their keys.
        found = allocation(alloc_id)
    except ClientError as exc:
        bail(exc)
    if found["state"] in ("pending", "placed", "pulling"):
        bail(
            ClientError(
                f"allocation {alloc_id} is {found['state']}: its container has not started yet; "
                f"`potluck alloc create --wait` waits for it, or try again in a moment",
                ExitCode.REFUSED,
            )
        )
    if found["state"] != "running":
        # Ended: the gateway refuses it too, but only past the key check, so without the right
        # key the user read that their key was refused and went after keys, for an allocation
        # where no key would open anything (as `potluck cp` into it says).
        kept = found.get("kept_until")
        why = (
            f"its stopped container is kept until {kept} for its results, read-only: "
            f"`potluck cp {alloc_id}:PATH .` and `potluck logs {alloc_id}` read them"
            if kept
            else "its container was removed; `potluck alloc create` asks for a new one"
        )
        bail(
            ClientError(
                f"allocation {alloc_id} is {found['state']}: no shell or command runs in it; {why}",
                ExitCode.REFUSED,
            )
        )
    host, _, port = login_data.gateway.rpartition(":")
    from potluck.sshgateway.client import ssh_argv

    try:
        argv = ssh_argv(
            alloc_id,
            host or "127.0.0.1",
            int(port or 2222),
            identity,
            known_hosts_file=config_path().with_name("known_hosts"),
        )
    except ValueError as exc:
        bail(
            ClientError(
                f"{exc}; check the id (`potluck alloc ls`) and the gateway given to `potluck login`",
                ExitCode.USAGE,
            )
        )
    # The user's options after Potluck's own (ssh keeps the first value it is given for an
    # option: the pinned known_hosts and forwarding off stay), before the destination.
    argv[-1:-1] = given.options
    if given.command:
        # After `--`: ssh reads options after the destination too, and would take a
        # command's own (`-c` of `sh -c`) as its own.
        argv += ["--", *given.command]
    # Trust the gateway's key on first use, then hold it to that key. The file is Potluck's
    # own, so a gateway's key never mixes with the user's other hosts in ~/.ssh/known_hosts.
    argv[1:1] = ["-o", "StrictHostKeyChecking=accept-new"]
    from potluck.user.refused_key import exit_as, explain_refusal, run_ssh

    # A child, not an exec: a refused key is explained once ssh has said "Permission denied".
    ran = run_ssh(argv)
    if ran.refused_key:
        why = explain_refusal(alloc_id, identity, found.get("ssh_keys"), ran.stderr_tail)
        err.print(f"[red]error:[/red] {foreign(why)}", highlight=False, soft_wrap=True)
    exit_as(ran)
