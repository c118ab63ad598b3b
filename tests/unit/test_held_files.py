"""Which files a container deleted and holds open count against its disk bound."""

from potluck.hostd.held_files import HeldFile, held_bytes


def _held(target: str, ino: int, *, links: int = 0, regular: bool = True, blocks: int = 8) -> HeldFile:
    return HeldFile(target=target, dev=42, ino=ino, links=links, regular=regular, blocks=blocks)


def test_deleted_files_held_open_count_once_each_and_memory_ones_not_at_all() -> None:
    """Tried: descriptors of a deleted file (two of them, as after a fork), of another deleted
    file, of a file still linked, of a pipe, and of deleted files on the container's memory file
    systems (/dev/shm, /dev, a memfd). Must hold: only the two deleted files on the disk count,
    each once, by their blocks (512 bytes each)."""
    files = [
        _held("/big (deleted)", 1, blocks=81920),
        _held("/big (deleted)", 1, blocks=81920),
        _held("/tmp/other (deleted)", 2, blocks=16),
        _held("/kept", 3, links=1),
        _held("pipe:[77]", 4, regular=False),
        _held("/dev/shm/x (deleted)", 5),
        _held("/dev/y (deleted)", 6),
        _held("/memfd:z (deleted)", 7),
    ]
    assert held_bytes(files) == (81920 + 16) * 512
    assert held_bytes([]) == 0
