"""An upload into a container, as `potluck cp` and hostd both count and run it.

`potluck cp LOCAL ALLOC:DST` sends `potluck-archive put NEED DST NAME` (hostd's
reserved_commands.py, container_upload.py) and a tar stream whose top entry is NAME. NEED is
what the copy takes of the allocation's disk as hostd's disk guard counts it: the files'
bytes, and ENTRY_BYTES for each file, directory and link (disk_bound.py says why). Both sides
take these from here: a client that counted otherwise would be refused what fits, or cut off
mid-stream.

RECEIVE is the script that unpacks the stream in the container, with the container's own
`sh` and `tar`, as the container's user: hostd runs it for a `put`, and `potluck cp` runs it
as a plain exec on a hostd older than `put`. $1 is DST, $2 NAME, and $3 (hostd's, optional) the
name's end of the temporary directory. A copy is unpacked into that directory beside its place
and moved there whole; the trap removes what a copy ended by a signal (its session lost, its
stream cut) left, and hostd, which names the directory, removes it again once the copy's
processes have ended: a trap still removing when their grace ran out was killed too.
"""

from potluck.contracts.session_commands import ARCHIVE

__all__ = ["ENTRY_BYTES", "RECEIVE", "TMP_PREFIX", "put_command"]

#: What each file, directory, link or whiteout of the layer counts, besides its bytes: one block
#: of the usual filesystems (a directory's least, an inode's share on ext4's default of one
#: inode for each 16 KiB).
ENTRY_BYTES = 4096

#: The start of the name of a copy's temporary directory, beside its place.
TMP_PREFIX = ".potluck-cp."

RECEIVE = (
    f"TMP_PREFIX={TMP_PREFIX}\n"
    + r"""
dst=$1; name=$2
if [ -d "$dst" ]; then
  if [ -d "$dst/$name" ] && [ ! -L "$dst/$name" ]; then cd "$dst" && exec tar -x -f -; exit 1; fi
  parent=${dst%/}; [ -n "$parent" ] || parent=/; dst=$parent/$name
else
  case $dst in */) echo "potluck: $dst: no such directory in the allocation" >&2; exit 2;; esac
  parent=$(dirname -- "$dst")
  if [ ! -d "$parent" ]; then echo "potluck: $parent: no such directory in the allocation" >&2; exit 2; fi
fi
if [ -n "${3-}" ]; then tmp=$parent/$TMP_PREFIX$3; mkdir -- "$tmp" || exit 1
else tmp=$(mktemp -d "$parent/${TMP_PREFIX}XXXXXX") || exit 1; fi
trap 'rm -rf "$tmp"; exit 1' HUP INT TERM PIPE
if (cd "$tmp" && tar -x -f -) && mv -f "$tmp/$name" "$dst"; then rmdir "$tmp"; exit 0; fi
rm -rf "$tmp"; exit 1
"""
)


def put_command(need: int, dst: str, name: str) -> list[str]:
    """The session command of an upload of NAME to DST that takes `need` bytes of disk."""
    return [ARCHIVE, "put", str(need), dst, name]
