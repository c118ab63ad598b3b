"""The NATS users file as the registry and `potluck ops hosts enroll` write it
(nats_auth.write_authorization), on the real filesystem.

Both render it when a host is enrolled, and in the tests' pools (the `laptop` fixture enrolls
while the registry runs) they did so at the same moment: each wrote the same temporary file
`auth.tmp`, and one writer's replace took it from under the other's chmod (FileNotFoundError in
a full run: the enrollment failed).
"""

import os
import stat
import threading
from pathlib import Path

from potluck.registry.nats_auth import write_authorization

WRITERS = 8
ROUNDS = 200


def test_writers_at_the_same_moment_each_replace_the_file_whole(tmp_path: Path) -> None:
    """Tried: eight threads each writing their own users file over the same path, 200 times,
    released together. Must hold: no writer fails; the file is always one writer's text whole
    (never empty, never mixed), owner-only; no temporary file is left in the directory."""
    path = tmp_path / "auth.conf"
    texts = [f"authorization {{ users = [ {{ nkey: U{i:055d} }} ] }}\n" * 50 for i in range(WRITERS)]
    start = threading.Barrier(WRITERS + 1)
    failures: list[BaseException] = []
    seen: set[str] = set()

    def writer(text: str) -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                write_authorization(path, text)
                seen.add(path.read_text())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()

    assert failures == [], failures[:3]
    assert seen <= set(texts)
    assert path.read_text() in texts
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["auth.conf"]
