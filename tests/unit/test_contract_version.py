"""The contract version (potluck.contracts.compatibility) follows the contracts' shapes.

Every message, report and event in potluck.contracts is read strictly, so any change to one
that hostd and the services exchange is one an older peer cannot read. The fingerprint below
is the shapes' (their JSON schemas, descriptions and titles left out, and each event's
schema_version); a change to any of them fails the first test until the fingerprint is
recorded again, and the test says when CONTRACT_VERSION must go up with it.
"""

import hashlib
import importlib
import inspect
import json
import pkgutil
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import potluck.contracts
from potluck.contracts.compatibility import CONTRACT_VERSION, FIRST_CONTRACT, mismatch, unknown_fields
from potluck.contracts.messages import DesiredState, RegisterHost

#: (CONTRACT_VERSION, the fingerprint of the shapes it names).
RECORDED = (4, "9101953023b53e92c5bc8cb94c9ae5f5cf0fb4c426858c5cea121773d7899563")


def _models() -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for info in pkgutil.iter_modules(potluck.contracts.__path__):
        module = importlib.import_module(f"potluck.contracts.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseModel) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


def _shape(value: Any) -> Any:
    """A schema without the words: descriptions and titles change nothing a reader refuses."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items()) if k not in ("description", "title")}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return value


def fingerprint() -> str:
    shapes = {
        f"{cls.__module__}.{cls.__qualname__}": {
            "schema": _shape(cls.model_json_schema()),
            "schema_version": getattr(cls, "schema_version", None),
        }
        for cls in _models()
    }
    return hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()


def test_the_contract_version_names_the_contracts_shapes() -> None:
    """Changed a message, report or event? If hostd or the services could meet the new shape from
    the other side (hostd's messages, reports and the events on its consumer, which is most of
    them), raise CONTRACT_VERSION; in any case record the fingerprint below with the version."""
    now = fingerprint()
    assert (CONTRACT_VERSION, now) == RECORDED, (
        "the contracts' shapes changed: raise CONTRACT_VERSION in libs/contracts/compatibility.py "
        "if an older hostd or older services could meet the new shape (README: Upgrading), then "
        f"set RECORDED = ({CONTRACT_VERSION}, {now!r}) in this file"
    )


def test_the_models_fingerprinted_are_the_wire_ones() -> None:
    names = {cls.__name__ for cls in _models()}
    assert {"RegisterHost", "DesiredState", "AllocationPlaced", "HostRegistered", "UsageSampled"} <= names


def test_a_registration_from_before_the_number_spoke_the_first_contract() -> None:
    """A hostd that names no contract (older than the field) is taken as the first one's."""
    old = RegisterHost.model_validate_json(
        '{"donated": {"cpus": 1, "memory_bytes": 1, "disk_bytes": 1}, "hostd_version": "0.1.0",'
        ' "engine": {"version": "27", "cgroup_version": "2", "storage_driver": "overlay2",'
        ' "disk_quota_supported": false}}'
    )
    assert old.contract == FIRST_CONTRACT


def test_a_newer_writers_fields_are_named() -> None:
    """A desired state with a field this reader does not know: the field is named, not a generic error."""
    with pytest.raises(ValidationError) as newer:
        DesiredState.model_validate({"position": 3, "allocations": [], "kept": [], "gpu_quota": 2})
    assert unknown_fields(newer.value) == ["gpu_quota"]
    with pytest.raises(ValidationError) as malformed:
        DesiredState.model_validate({"position": "three", "allocations": []})
    assert unknown_fields(malformed.value) == []  # malformed, not newer


def test_the_refusal_says_which_side_to_upgrade() -> None:
    assert "upgrade Potluck on this machine" in mismatch(hostd=1, pool=2)
    assert "the pool's services are older" in mismatch(hostd=3, pool=2)
