"""Reading apt's sources lists for the archive the default image is built from (apt_sources.py)."""

from pathlib import Path

from potluck.localstack.apt_sources import (
    Archive,
    first_archive,
    machine_archive,
    parse_deb822,
    parse_one_line,
    proxies_from_apt_config,
)
from potluck.localstack.default_image import PACKAGES, image_key

DEB822 = """\
Types: deb
# a comment
URIs: http://registry.example.org/debian http://second.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example.org/debian
Suites: bookworm

Types: deb
URIs: http://off.example.org/debian
Suites: bookworm
Enabled: no

Types: deb
URIs: http://registry.example.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_stanzas_give_the_first_uri_suites_and_keyring() -> None:
    """deb stanzas only, disabled ones skipped, the first URI each, Signed-By as the keyring."""
    assert parse_deb822(DEB822) == [
        Archive(
            "http://registry.example.org/debian",
            ("bookworm", "bookworm-updates"),
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ),
        Archive("http://registry.example.org/debian-security", ("bookworm-security",), None),
    ]


def test_one_line_entries_with_options_comments_and_deb_src() -> None:
    """`deb [signed-by=...] URI SUITE COMPONENTS` is read; deb-src, comments and blanks are not."""
    text = (
        "# deb http://commented.example.org/debian bookworm main\n"
        "deb-src http://src.example.org/debian bookworm main\n"
        "\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://registry.example.org/debian bookworm main # why\n"
        "deb http://registry.example.org/debian bookworm-updates main\n"
    )

    assert parse_one_line(text) == [
        Archive("http://registry.example.org/debian", ("bookworm",), "/k.gpg"),
        Archive("http://registry.example.org/debian", ("bookworm-updates",), None),
    ]


def test_the_first_archive_of_the_suite_itself_wins() -> None:
    """-updates and -security are not the suite; other schemes (cdrom:) are skipped."""
    archives = [
        Archive("cdrom:[Debian]/", ("bookworm",)),
        Archive("http://a.example.org/debian-security", ("bookworm-security",)),
        Archive("http://b.example.org/debian", ("bookworm-updates", "bookworm")),
        Archive("http://c.example.org/debian", ("bookworm",)),
    ]

    found = first_archive(archives, "bookworm")

    assert found is not None
    assert found.uri == "http://b.example.org/debian"
    assert first_archive(archives, "trixie") is None


def test_the_machine_archive_reads_both_formats_in_order(tmp_path: Path) -> None:
    """sources.list first, then sources.list.d/ in name order; other suffixes ignored."""
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "b.list.disabled").write_text("deb http://x.example.org/d bookworm main\n")
    (tmp_path / "sources.list").write_text("deb http://first.example.org/debian bookworm-updates main\n")

    found = machine_archive("bookworm", tmp_path)

    assert found is not None
    assert found.uri == "http://registry.example.org/debian"
    assert machine_archive("sid", tmp_path) is None


def test_apt_proxy_settings_become_wget_variables() -> None:
    """Acquire::http(s)::Proxy become http_proxy/https_proxy; DIRECT and absent give nothing."""
    dump = 'APT "";\nAcquire::http::Proxy "http://127.0.0.1:3142/";\nAcquire::https::Proxy "DIRECT";\n'

    assert proxies_from_apt_config(dump) == {"http_proxy": "http://127.0.0.1:3142/"}
    assert proxies_from_apt_config('APT "";\n') == {}


def test_the_cache_key_changes_with_the_package_list_and_suite() -> None:
    """A package more, or another suite, is another tarball; the order of the list is not."""
    key = image_key("bookworm")

    assert image_key("bookworm", (*PACKAGES, "vim")) != key
    assert image_key("trixie") != key
    assert image_key("bookworm", tuple(reversed(PACKAGES))) == key
    assert key.startswith("bookworm-")
