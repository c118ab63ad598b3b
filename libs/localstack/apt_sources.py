"""Where this machine's apt gets its packages: the archive the default image is built from.

No archive's host name is written into Potluck: the default image comes from
the same package archive (or local mirror, or caching proxy) this machine's
apt already uses, as its sources lists say. Both formats are read: one-line
(`/etc/apt/sources.list`, `sources.list.d/*.list`) and deb822
(`sources.list.d/*.sources`). The first `deb` entry that serves the machine's
suite itself (not `-updates` or `-security`) wins, with its `Signed-By`
keyring when it names one. apt's proxy (`Acquire::http::Proxy`, from
`apt-config dump`) is passed on to debootstrap, which fetches with wget.

The parsing is pure (`parse_one_line`, `parse_deb822`, `first_archive`,
`proxies_from_apt_config`); `machine_archive` and `apt_proxies` read the files.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Archive",
    "apt_proxies",
    "first_archive",
    "machine_archive",
    "machine_suite",
    "parse_deb822",
    "parse_one_line",
    "proxies_from_apt_config",
]

APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class Archive:
    """One `deb` source: its URI, suites and the keyring that signs it (None: apt's default)."""

    uri: str
    suites: tuple[str, ...]
    keyring: str | None = None


def parse_one_line(text: str) -> list[Archive]:
    """`deb [options] URI SUITE [COMPONENT...]` lines; deb-src, comments and blanks skipped."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for option in inside.split():
                key, _, value = option.partition("=")
                options[key.lower()] = value
        words = rest.split()
        if len(words) >= 2:
            found.append(Archive(words[0], (words[1],), options.get("signed-by")))
    return found


def parse_deb822(text: str) -> list[Archive]:
    """Stanzas of `Types: deb`, `URIs:`, `Suites:`; `Enabled: no` skipped; the first URI of each."""
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:  # a continuation line (a multi-line Signed-By key)
                fields[key] += "\n" + raw.strip()
                continue
            key, sep, value = raw.partition(":")
            if not sep:
                key = ""
                continue
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        uris, suites = fields.get("uris", "").split(), tuple(fields.get("suites", "").split())
        if uris and suites:
            signed_by = fields.get("signed-by")
            keyring = signed_by if signed_by and "\n" not in signed_by else None
            found.append(Archive(uris[0], suites, keyring))
    return found


def first_archive(archives: list[Archive], suite: str) -> Archive | None:
    """The first archive serving `suite` itself, over http(s) or from a local path."""
    for archive in archives:
        if suite in archive.suites and archive.uri.split(":", 1)[0] in ("http", "https", "file"):
            return archive
    return None


def proxies_from_apt_config(dump: str) -> dict[str, str]:
    """http_proxy/https_proxy for wget from `apt-config dump` (`Acquire::http::Proxy "URL";`)."""
    proxies = {}
    for scheme in ("http", "https"):
        match = re.search(rf'^Acquire::{scheme}::Proxy "([^"]+)";$', dump, re.MULTILINE | re.IGNORECASE)
        if match and match.group(1).upper() != "DIRECT" and "://" in match.group(1):
            proxies[f"{scheme}_proxy"] = match.group(1)
    return proxies


def machine_suite(os_release: Path = Path("/etc/os-release")) -> str | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    match = re.search(r'^VERSION_CODENAME="?([a-z0-9-]+)"?$', text, re.MULTILINE)
    return match.group(1) if match else None


def machine_archive(suite: str, apt_dir: Path = APT_DIR) -> Archive | None:
    """The archive this machine's apt uses for `suite`, from its sources lists (None if none)."""
    archives: list[Archive] = []
    one_line = apt_dir / "sources.list"
    if one_line.is_file():
        archives += parse_one_line(one_line.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                archives += parse_one_line(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                archives += parse_deb822(path.read_text(errors="replace"))
    return first_archive(archives, suite)


def apt_proxies() -> dict[str, str]:
    """apt's proxy settings as wget's variables; empty without apt-config or a proxy."""
    apt_config = shutil.which("apt-config")
    if apt_config is None:
        return {}
    dumped = subprocess.run([apt_config, "dump"], capture_output=True, text=True, check=False, timeout=30)
    return proxies_from_apt_config(dumped.stdout)
