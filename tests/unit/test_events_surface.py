"""potluck.events' public names, loaded from their module on first use (issue 20).

The package keeps its surface in three places: the imports type checkers read, the table
`__getattr__` loads from, and `__all__`. These tests hold them equal, and check that a process
taking only the bus's names loads neither the store (asyncpg) nor the relay.
"""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import potluck.events as events


def _type_checking_imports() -> dict[str, str]:
    """Each name the package imports under `if TYPE_CHECKING:`, and its module's last part."""
    tree = ast.parse(Path(events.__file__).read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                assert statement.module is not None
                for alias in statement.names:
                    found[alias.name] = statement.module.removeprefix("potluck.events.")
    return found


def test_the_table_the_typed_imports_and_all_agree() -> None:
    homes: dict[str, str] = events._HOME
    assert homes == _type_checking_imports()
    assert sorted(events.__all__) == sorted(homes)
    assert len(set(events.__all__)) == len(events.__all__)


@pytest.mark.parametrize("name", events.__all__)
def test_each_name_is_the_object_its_module_holds(name: str) -> None:
    home = importlib.import_module(f"potluck.events.{events._HOME[name]}")
    assert getattr(events, name) is getattr(home, name)
    assert name in dir(events)


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = events.no_such_name
    from potluck.events import bus, store

    assert bus.EVENTS_STREAM == events.EVENTS_STREAM
    assert store.EventStore is events.EventStore


def _fresh(code: str) -> dict[str, object]:
    """Run `code` (it sets `result`) in a fresh interpreter; returns `result`."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, json\n{code}\nprint(json.dumps(result))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_the_bus_names_load_neither_the_store_nor_the_relay() -> None:
    answer = _fresh(
        "from potluck.events import EVENTS_STREAM, Event, LoggedEvent, Subscriber, event_type\n"
        "from potluck.events.bus import TRANSIENT_BUS_ERRORS\n"
        "heavy = ('asyncpg', 'potluck.events.store', 'potluck.events.relay', 'potluck.events.follower')\n"
        "result = {'loaded': [m for m in heavy if m in sys.modules]}"
    )
    assert answer == {"loaded": []}


def test_a_handler_meeting_the_database_away_is_retried_once_asyncpg_is_loaded() -> None:
    """The subscriber keeps a message and retries it when its handler meets a dependency away:
    the bus's errors and OSError always, asyncpg's (the database's) in a process that loaded
    asyncpg, without loading it into one that did not (hostd)."""
    answer = _fresh(
        "from potluck.events.subscriber import _dependency_away\n"
        "from potluck.events.bus import TRANSIENT_BUS_ERRORS\n"
        "before = _dependency_away()\n"
        "result = {\n"
        "    'asyncpg_after_asking': 'asyncpg' in sys.modules,\n"
        "    'bus_and_os': set(TRANSIENT_BUS_ERRORS) | {OSError} <= set(before),\n"
        "}\n"
        "import asyncpg\n"
        "from potluck.events import TRANSIENT_DB_ERRORS\n"
        "after = _dependency_away()\n"
        "result['db_too'] = set(TRANSIENT_DB_ERRORS) | set(TRANSIENT_BUS_ERRORS) == set(after)\n"
        "result['postgres_away'] = issubclass(asyncpg.PostgresConnectionError, after)\n"
    )
    assert answer == {
        "asyncpg_after_asking": False,
        "bus_and_os": True,
        "db_too": True,
        "postgres_away": True,
    }
