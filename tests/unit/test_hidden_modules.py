"""potluck.kernel.hidden_modules: an import fails inside the block only."""

import importlib
import json
import sys
from pathlib import Path

import pytest

from potluck.kernel.hidden_modules import hidden


def test_a_hidden_module_fails_to_import_inside_and_imports_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "potluck_probe_pkg").mkdir()
    (tmp_path / "potluck_probe_pkg" / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "potluck_probe_pkg" / "part.py").write_text("PART = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "potluck_probe_pkg", raising=False)
    with hidden("potluck_probe_pkg"):
        for name in ("potluck_probe_pkg", "potluck_probe_pkg.part"):
            with pytest.raises(ModuleNotFoundError):
                importlib.import_module(name)
    assert "potluck_probe_pkg" not in sys.modules
    assert importlib.import_module("potluck_probe_pkg.part").PART == 2
    monkeypatch.delitem(sys.modules, "potluck_probe_pkg")
    monkeypatch.delitem(sys.modules, "potluck_probe_pkg.part")


def test_a_module_already_loaded_is_left_alone() -> None:
    with hidden("json"):
        assert importlib.import_module("json") is json
    assert sys.modules["json"] is json


def _fail_while_hidden(name: str) -> None:
    with hidden(name):
        assert sys.modules[name] is None
        raise RuntimeError("inside")


def test_the_block_raising_still_unhides() -> None:
    name = "potluck_never_installed_module"
    with pytest.raises(RuntimeError, match="inside"):
        _fail_while_hidden(name)
    assert name not in sys.modules
