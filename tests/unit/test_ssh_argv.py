"""`ssh_argv`: the `ssh` command line that reaches an allocation through the gateway.

The shape is checked the way OpenSSH reads it: options (with their arguments)
first, then the destination `ALLOC@GATEWAY`, then `--` and the command, so
nothing a user passes as the command is taken for an option. `-o` values are
split the way ssh's config parser splits them (whitespace separates, quotes
group), which `shlex` matches for the paths used here.
"""

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.sshgateway.client import ssh_argv

#: What an allocation id may be, written out again from the function's contract.
ALLOC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}")
#: ssh's options that take an argument, among those ssh_argv may write.
WITH_ARGUMENT = frozenset({"-p", "-i", "-o"})
FLAGS = frozenset({"-tt", "-T"})


def split(argv: Sequence[str]) -> tuple[list[tuple[str, str | None]], str, list[str]]:
    """(options, destination, what follows it), reading argv as ssh's getopt would."""
    options: list[tuple[str, str | None]] = []
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in WITH_ARGUMENT:
            options.append((argv[i], argv[i + 1]))
            i += 2
        else:
            assert argv[i] in FLAGS, argv[i]
            options.append((argv[i], None))
            i += 1
    assert i < len(argv), f"no destination in {argv}"
    return options, argv[i], list(argv[i + 1 :])


def o_values(argv: Sequence[str]) -> dict[str, str]:
    """The `-o Name=value` settings, by name."""
    options, _, _ = split(argv)
    values: dict[str, str] = {}
    for flag, arg in options:
        if flag == "-o":
            assert arg is not None
            name, sep, value = arg.partition("=")
            assert sep, arg
            assert name not in values, f"{name} given twice"
            values[name] = value
    return values


def flags(argv: Sequence[str]) -> list[str]:
    return [flag for flag, arg in split(argv)[0] if arg is None]


# --- the shape ------------------------------------------------------------------------------------------


def test_the_simplest_invocation() -> None:
    argv = ssh_argv("a1b2", "gw.example.org", 2222)
    assert argv[0] == "ssh"
    options, destination, rest = split(argv)
    assert ("-p", "2222") in options
    assert destination == "a1b2@gw.example.org"
    assert rest == []
    assert argv[-1] == destination


def test_another_client_binary() -> None:
    assert ssh_argv("a1", "gw", 22, ssh="/opt/openssh/bin/ssh")[0] == "/opt/openssh/bin/ssh"


def test_forwarding_and_compression_are_switched_off() -> None:
    values = o_values(ssh_argv("a1", "gw", 2222))
    assert values["ForwardAgent"] == "no"
    assert values["ForwardX11"] == "no"
    assert values["ClearAllForwardings"] == "yes"
    assert values["Compression"] == "no"


def test_nothing_switches_forwarding_or_compression_back_on() -> None:
    argv = ssh_argv("a1", "gw", 2222, "/k", command=["ls"], tty=True, known_hosts_file="/kh")
    options, _, _ = split(argv)
    assert not {"-A", "-X", "-Y", "-C", "-L", "-R", "-D"} & {flag for flag, _ in options}


def test_a_dead_gateway_is_noticed() -> None:
    values = o_values(ssh_argv("a1", "gw", 2222))
    assert int(values["ServerAliveInterval"]) > 0
    assert int(values["ServerAliveCountMax"]) > 0


@pytest.mark.parametrize(("tty", "expected"), [(None, []), (True, ["-tt"]), (False, ["-T"])])
def test_tty_forces_refuses_or_leaves_the_choice_to_ssh(tty: bool | None, expected: list[str]) -> None:
    argv = ssh_argv("a1", "gw", 2222, tty=tty, command=["top"])
    assert flags(argv) == expected
    assert split(argv)[2] == ["--", "top"]  # the flag is ssh's, not the command's


@pytest.mark.parametrize("identity", ["/home/ann/.ssh/id_ed25519", Path("/home/ann/.ssh/id_ed25519")])
def test_an_identity_is_the_only_key_offered(identity: str | Path) -> None:
    argv = ssh_argv("a1", "gw", 2222, identity)
    options, _, _ = split(argv)
    assert ("-i", "/home/ann/.ssh/id_ed25519") in options
    assert o_values(argv)["IdentitiesOnly"] == "yes"
    # IdentitiesOnly comes with -i, right after it.
    i = argv.index("-i")
    assert argv[i + 2 : i + 4] == ["-o", "IdentitiesOnly=yes"]


def test_without_an_identity_ssh_chooses_its_keys() -> None:
    argv = ssh_argv("a1", "gw", 2222)
    assert "-i" not in argv
    assert "IdentitiesOnly" not in o_values(argv)


def test_a_known_hosts_file_is_the_one_ssh_uses() -> None:
    argv = ssh_argv("a1", "gw", 2222, known_hosts_file=Path("/home/ann/.potluck/known_hosts"))
    value = o_values(argv)["UserKnownHostsFile"]
    assert shlex.split(value) == ["/home/ann/.potluck/known_hosts"]
    assert "UserKnownHostsFile" not in o_values(ssh_argv("a1", "gw", 2222))


def test_a_known_hosts_path_with_a_space_reaches_ssh_as_one_file() -> None:
    path = "/home/ann/Library/Application Support/potluck/known_hosts"
    value = o_values(ssh_argv("a1", "gw", 2222, known_hosts_file=path))["UserKnownHostsFile"]
    assert shlex.split(value) == [path]


def test_the_command_follows_the_destination_after_a_double_dash() -> None:
    command = ["tar", "x", "-C", "/data"]
    argv = ssh_argv("a1", "gw", 2222, command=command)
    _, destination, rest = split(argv)
    assert destination == "a1@gw"
    assert rest == ["--", *command]


def test_no_command_means_no_double_dash() -> None:
    assert "--" not in ssh_argv("a1", "gw", 2222, command=())


# --- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alloc_id",
    [
        "",
        "-oProxyCommand=sh",
        "_leading-underscore",
        ".hidden",
        "a b",
        "a@b",
        "a/b",
        "a:b",
        "a;b",
        "ä1",
        "a" * 122,
        "\na1",
    ],
)
def test_what_is_not_an_allocation_id_is_refused(alloc_id: str) -> None:
    with pytest.raises(ValueError, match="is not an allocation id"):
        ssh_argv(alloc_id, "gw", 2222)


def test_an_allocation_id_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="is not an allocation id"):
        ssh_argv("a1\n", "gw", 2222)


def test_the_longest_allocation_id_is_accepted() -> None:
    alloc_id = "a" * 121
    assert split(ssh_argv(alloc_id, "gw", 2222))[1] == f"{alloc_id}@gw"


@pytest.mark.parametrize(
    "host", ["", "-oProxyCommand=sh", "-gw", "gw host", "gw\n", "\tgw", "gw\r", "g\u00a0w"]
)
def test_what_is_not_a_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="is not a host name or address"):
        ssh_argv("a1", host, 2222)


@pytest.mark.parametrize("port", [0, -1, -2222, 65536, 100_000])
def test_ports_out_of_range_are_refused(port: int) -> None:
    with pytest.raises(ValueError, match=f"port {port} is out of range"):
        ssh_argv("a1", "gw", port)


# --- properties -----------------------------------------------------------------------------------------

alloc_ids = st.from_regex(ALLOC_ID, fullmatch=True)
hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True),
)
ports = st.integers(min_value=1, max_value=65535)
words = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
paths = st.from_regex(r"/[A-Za-z0-9_./-]{1,40}", fullmatch=True)


@given(
    alloc_id=alloc_ids,
    host=hosts,
    port=ports,
    identity=st.none() | paths,
    command=st.lists(words, max_size=5),
    tty=st.sampled_from([None, True, False]),
    known_hosts=st.none() | paths,
)
def test_options_then_destination_then_the_command_untouched(
    alloc_id: str,
    host: str,
    port: int,
    identity: str | None,
    command: list[str],
    tty: bool | None,
    known_hosts: str | None,
) -> None:
    argv = ssh_argv(alloc_id, host, port, identity, command=command, tty=tty, known_hosts_file=known_hosts)
    options, destination, rest = split(argv)
    assert destination == f"{alloc_id}@{host}"
    assert rest == (["--", *command] if command else [])
    assert ("-p", str(port)) in options
    assert [o for o in options if o[0] == "-p"] == [("-p", str(port))]
    values = o_values(argv)
    assert values["ForwardAgent"] == "no"
    assert values["ClearAllForwardings"] == "yes"
    assert values["Compression"] == "no"
    assert (values.get("IdentitiesOnly") == "yes") == (identity is not None)
    assert (("-i", identity) in options) == (identity is not None)
    if known_hosts is not None:
        assert shlex.split(values["UserKnownHostsFile"]) == [known_hosts]


@given(st.text(max_size=130).filter(lambda s: ALLOC_ID.fullmatch(s) is None))
def test_anything_but_an_allocation_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not an allocation id"):
        ssh_argv(text, "gw", 2222)


@given(
    host=hosts,
    where=st.integers(min_value=0, max_value=40),
    space=st.sampled_from([" ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u2003"]),
)
def test_a_host_with_whitespace_anywhere_is_refused(host: str, where: int, space: str) -> None:
    bad = host[:where] + space + host[where:]
    with pytest.raises(ValueError, match="is not a host name or address"):
        ssh_argv("a1", bad, 2222)


@given(host=hosts)
def test_a_host_that_could_be_read_as_an_option_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="is not a host name or address"):
        ssh_argv("a1", "-" + host, 2222)


@given(st.integers().filter(lambda p: not 0 < p < 65536))
def test_any_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        ssh_argv("a1", "gw", port)
