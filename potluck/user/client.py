"""A small client of the allocator's HTTP API, with errors that say what to do.

Exit codes scripts can rely on (see `ExitCode`): 0 done, 1 the API refused (a removed user too),
2 wrong usage or local configuration, 3 the allocator cannot be reached,
4 a wait timed out before the allocation (or job) got where it was asked to go,
5 a job ended with a task that failed, or was cancelled (`potluck job wait`).
"""

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import tomli_w
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay

#: Rows asked for per page of a list: the API's most, so a long list takes few requests.
PAGE_ROWS = 1000


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1
    USAGE = 2
    UNREACHABLE = 3
    TIMEOUT = 4
    JOB_FAILED = 5


class ClientError(Exception):
    def __init__(self, message: str, code: ExitCode, *, api_code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.api_code = api_code


def segment(value: str) -> str:
    """`value`, an id the user typed, as one segment of an API path: percent-encoded. Raw,
    its `/`, `?` and `#` made it another endpoint or query: `potluck job rm
    ../allocations/a-1` released that allocation, `potluck job show J/tasks` failed with a
    traceback. (`.` and `..`, which URL libraries resolve away however they are spelled, are
    refused by the commands' ApiId first.)"""
    return quote(value, safe="")


def config_path() -> Path:
    explicit = os.environ.get("POTLUCK_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "potluck" / "client.toml"


def allocator_url(given: str) -> str:
    """`given` as the allocator's base URL (no trailing slash); a ClientError saying what to give
    when it is not an http(s) address of a host, or names the API's own /v1 path."""
    url = given.strip().rstrip("/")
    parts = urlsplit(url)
    example = "e.g. http://127.0.0.1:8080 (the `allocator API` line `potluck up` prints)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(
            f"{given!r} is not an http:// or https:// address: give the allocator's, {example}",
            ExitCode.USAGE,
        )
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
    except ValueError:
        raise ClientError(
            f"{given!r} has no valid port: give the allocator's address, {example}", ExitCode.USAGE
        ) from None
    if parts.path.endswith("/v1"):
        raise ClientError(
            f"{given!r} names the API's /v1 path: give the allocator's address without it, {example}",
            ExitCode.USAGE,
        )
    return url


def gateway_address(given: str) -> str:
    """`given` as the SSH gateway's HOST:PORT; a ClientError saying what to give otherwise."""
    host, _, port = given.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(
            f"{given!r} is not HOST:PORT: give the SSH gateway's address, e.g. 127.0.0.1:2222 "
            "(the `SSH gateway` line `potluck up` prints)",
            ExitCode.USAGE,
        )
    return given.strip()


@dataclass(frozen=True)
class Login:
    url: str
    token: str
    gateway: str = "127.0.0.1:2222"

    def save(self, path: Path | None = None) -> Path:
        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(tomli_w.dumps({"url": self.url, "token": self.token, "gateway": self.gateway}))
        return path

    @classmethod
    def load(cls) -> "Login":
        url = os.environ.get("POTLUCK_URL")
        token = os.environ.get("POTLUCK_TOKEN")
        gateway = os.environ.get("POTLUCK_GATEWAY")
        path = config_path()
        if path.exists():
            try:
                saved = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ClientError(
                    f"{path} is not valid TOML ({exc}); run `potluck login` again", ExitCode.USAGE
                ) from None
            url = url or saved.get("url")
            token = token or saved.get("token")
            gateway = gateway or saved.get("gateway")
        if not url or not token:
            raise ClientError(
                f"not logged in (no URL and token in {path}): run `potluck login --url URL` (it asks "
                "for the token your operator gave you), or set POTLUCK_URL and POTLUCK_TOKEN",
                ExitCode.USAGE,
            )
        try:
            checked = allocator_url(str(url))
        except ClientError as exc:
            where = "POTLUCK_URL" if os.environ.get("POTLUCK_URL") else str(path)
            raise ClientError(f"{where}: {exc}", exc.code) from None
        return cls(checked, str(token), str(gateway or "127.0.0.1:2222"))


#: Refusals after which nothing was done, so the same request may be sent again once the
#: allocator's Retry-After has passed: the user's rate of changes (`RATE_LIMITED`) and of
#: waiting requests (`TOO_MANY_WAITS`).
RETRIED_REFUSALS = frozenset({"RATE_LIMITED", "TOO_MANY_WAITS"})
#: How long one call waits out such refusals in all before it says so (exit 1).
RETRY_FOR_S = 120.0
#: Answers after which a request sent with an Idempotency-Key may be sent again as it is (the
#: allocator answers it with what the first made, never a second: services/allocator's
#: idempotency.py): the log's database away, a change whose outcome is unknown, a pool too
#: busy to decide, the key's first request still being decided.
RETRIED_WITH_A_KEY = frozenset({"LOG_UNAVAILABLE", "OUTCOME_UNKNOWN", "BUSY", "IDEMPOTENCY_KEY_IN_USE"})


class _Refused(ClientError):
    """A refusal the allocator says to try again after `retry_after_s` (nothing was done)."""

    def __init__(self, message: str, *, api_code: str, retry_after_s: float) -> None:
        super().__init__(message, ExitCode.REFUSED, api_code=api_code)
        self.retry_after_s = retry_after_s


def _unauthenticated(error: Mapping[str, Any]) -> tuple[ExitCode, str]:
    """A 401's exit code and what to do. A token that is not valid (a typo, a rotated one) is a
    login to make again: wrong usage, as not being logged in is. A removed user's is refused by
    the pool, which no login mends: only its operator can let them back in."""
    if error.get("code") == "USER_REMOVED":
        return ExitCode.REFUSED, "; ask the pool's operator if you should still have access"
    return ExitCode.USAGE, "; run `potluck login` with a valid token"


def _retry_after(response: aiohttp.ClientResponse) -> float:
    raw = response.headers.get("Retry-After", "")
    return float(raw) if raw.isdigit() else 1.0


def _waits_as_told(state: RetryCallState) -> float:
    failure = state.outcome.exception() if state.outcome is not None else None
    return failure.retry_after_s if isinstance(failure, _Refused) else 1.0


class Api:
    def __init__(self, login: Login, timeout: float = 30.0, *, retry_for_s: float = RETRY_FOR_S) -> None:
        self.login = login
        self.timeout = timeout
        self.retry_for_s = retry_for_s

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """The API's answer to one request; a ClientError saying what to do when there is none.

        A refusal that did nothing and names when to try again (RETRIED_REFUSALS) is waited
        out, as the allocator's Retry-After says, for up to `retry_for_s` in all: `potluck
        alloc rm` of a hundred ids, or a script's loop, goes through at the user's rate rather
        than stopping halfway. With `idempotency_key` (sent as Idempotency-Key), and for a
        DELETE, so are the answers in RETRIED_WITH_A_KEY and a connection the allocator closed
        before answering (killed or restarted under it): sent again, the request cannot make a
        second one, or release twice."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Refused),
            wait=_waits_as_told,
            stop=stop_after_delay(self.retry_for_s),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._call_once(
                    method, path, body, timeout=timeout, idempotency_key=idempotency_key
                )
        raise AssertionError("unreachable: tenacity reraises the last refusal")

    async def _call_once(
        self, method: str, path: str, body: Any, *, timeout: float | None, idempotency_key: str | None = None
    ) -> Any:
        url = self.login.url + path
        headers = {"Authorization": f"Bearer {self.login.token}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        # A DELETE is idempotent as it is (releasing a released allocation, removing a removed
        # job, changes nothing and answers as the first did): sent again, as a keyed request is.
        sent_again = idempotency_key is not None or method.upper() == "DELETE"
        retried = RETRIED_REFUSALS | RETRIED_WITH_A_KEY if sent_again else RETRIED_REFUSALS
        client_timeout = aiohttp.ClientTimeout(total=(timeout or self.timeout) + 5)
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as http,
                http.request(method, url, json=body, headers=headers) as response,
            ):
                try:
                    answer = await response.json(content_type=None)
                except json.JSONDecodeError:
                    answer = None
                if response.status >= 400:
                    error = (answer or {}).get("error") if isinstance(answer, dict) else None
                    if error is None:
                        raise ClientError(f"{method} {url} answered {response.status}", ExitCode.REFUSED)
                    where = f" ({error['field']})" if error.get("field") else ""
                    code, hint = _unauthenticated(error) if response.status == 401 else (ExitCode.REFUSED, "")
                    message = f"{error['message']}{where}{hint}"
                    if response.status in (409, 429, 503) and error.get("code") in retried:
                        raise _Refused(message, api_code=error["code"], retry_after_s=_retry_after(response))
                    raise ClientError(message, code, api_code=error.get("code"))
                return answer
        except aiohttp.ServerDisconnectedError:
            if not sent_again:
                raise ClientError(
                    f"the allocator at {self.login.url} closed the connection before answering; "
                    "look (`potluck alloc ls`) before sending it again",
                    ExitCode.UNREACHABLE,
                ) from None
            raise _Refused(
                f"the allocator at {self.login.url} closed the connection before answering",
                api_code="DISCONNECTED",
                retry_after_s=1.0,
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(
                f"cannot reach the allocator at {self.login.url} ({exc}); is the pool up? "
                "(`potluck up`, or check the URL given to `potluck login`)",
                ExitCode.UNREACHABLE,
            ) from None
        except TimeoutError:
            raise ClientError(
                f"the allocator at {self.login.url} did not answer in time", ExitCode.UNREACHABLE
            ) from None
        except aiohttp.ClientError as exc:
            # Something answered, but not as an HTTP server does (the SSH gateway's port, say),
            # or the URL is not one aiohttp can ask (saved by hand, or in POTLUCK_URL).
            raise ClientError(
                f"{self.login.url} does not answer as the allocator's HTTP API does ({type(exc).__name__}); "
                f"give `potluck login --url` the `allocator API` address `potluck up` prints, "
                "e.g. http://127.0.0.1:8080",
                ExitCode.UNREACHABLE,
            ) from None

    async def rows(
        self,
        path: str,
        key: str,
        query: Mapping[str, str] | None = None,
        most: int | None = None,
        page_rows: int = PAGE_ROWS,
        *,
        after: str | int | None = None,
    ) -> list[Any]:
        """Every row of a paged list (`GET /v1/allocations`, `/v1/jobs`, a job's tasks: each
        page's `key`), following each page's `next`, `page_rows` at a time, from the first row
        or the one after `after`; only the first `most` when given."""
        found: list[Any] = []
        while True:
            wanted = page_rows if most is None else min(page_rows, most - len(found))
            # A task's index is a cursor too, and 0 is one.
            cursor = {"after": str(after)} if after is not None else {}
            params = {**(query or {}), "limit": str(wanted), **cursor}
            page = await self.call("GET", f"{path}?{urlencode(params)}")
            found += page[key]
            after = page.get("next")
            if after is None or (most is not None and len(found) >= most):
                return found
