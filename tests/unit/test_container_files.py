"""The pure part of hostd's file operations in a container (services/hostd/container_files.py)."""

from potluck.hostd.container_files import parse_stat


def test_stat_lines_parse_the_raw_mode_in_hex() -> None:
    """busybox `stat -c '%f %s %u %g %X %Y'`: a directory and a regular file."""
    directory = parse_stat("41ed 4096 0 0 1700000000 1700000001")
    regular = parse_stat("81a4 12 1000 100 1 2")

    assert directory.is_dir
    assert directory.mode == 0o40755
    assert not regular.is_dir
    assert (regular.size, regular.uid, regular.gid, regular.atime, regular.mtime) == (12, 1000, 100, 1, 2)
