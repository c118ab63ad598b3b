"""Which session commands hostd takes for the sink of scp's legacy protocol (scp_sink.py): those
it holds to the allocation's disk bound file by file. What is tried: the commands OpenSSH's
`scp -O` sends for an upload (with each of its flags, combined or not, `--` before a path
starting with `-`), and commands that are not one. What must hold: each upload is one; no
download (`-f`), no other program and no path argument named `-t` is."""

import pytest

from potluck.hostd.scp_sink import is_scp_sink


@pytest.mark.parametrize(
    "command",
    [
        "scp -t /root/x",
        "scp -r -d -p -t -- /root/dir",
        "scp -v -t -- -odd-name",
        "scp -pt /root",
        "/usr/bin/scp -t '/root/with space'",
    ],
)
def test_uploads_by_scp_are_its_sink(command: str) -> None:
    assert is_scp_sink(command)


@pytest.mark.parametrize(
    "command",
    [
        None,
        "",
        "scp -f /root/x",
        "scp /root/a /root/b",
        "scp -- -t",
        "sh -c 'scp -t /x'",
        "rsync --server -t . /x",
        "scp -f 'unclosed",
    ],
)
def test_other_commands_are_not(command: str | None) -> None:
    assert not is_scp_sink(command)
