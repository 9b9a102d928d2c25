"""PackedDocuments keeps documents by value: what a caller does with a copy changes nothing."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from tsunagu.controller.packed import PackedDocuments


def test_a_document_round_trips_and_reads_are_copies() -> None:
    store: PackedDocuments[tuple[str, str]] = PackedDocuments()
    spec = {"replicas": 4, "template": {"containers": [{"name": "t"}]}}
    document: dict[str, Any] = {"spec": spec, "n": 1.5}
    store[("team", "a")] = document
    document["spec"]["replicas"] = 99  # the stored value is not the caller's object
    read = store[("team", "a")]
    assert read == {"spec": {"replicas": 4, "template": {"containers": [{"name": "t"}]}}, "n": 1.5}
    read["spec"]["template"]["containers"].append({"name": "sidecar"})
    assert store[("team", "a")]["spec"]["template"]["containers"] == [{"name": "t"}]


def test_mapping_operations() -> None:
    store: PackedDocuments[str] = PackedDocuments()
    store["a"] = {"x": 1}
    store["b"] = {"x": 2}
    assert "a" in store
    assert "c" not in store
    assert sorted(store) == ["a", "b"]
    assert len(store) == 2
    assert store.get("c") is None
    assert dict(store.items()) == {"a": {"x": 1}, "b": {"x": 2}}
    assert store.pop("a") == {"x": 1}
    del store["b"]
    assert len(store) == 0
    with pytest.raises(KeyError):
        store["a"]


def test_a_str_valued_enum_is_stored_as_its_value() -> None:
    class Verdict(enum.StrEnum):
        Rejected = "Rejected"

    store: PackedDocuments[str] = PackedDocuments()
    store["a"] = {"alternatives": [{"verdict": Verdict.Rejected}], "pair": ("x", 1)}
    assert store["a"] == {"alternatives": [{"verdict": "Rejected"}], "pair": ["x", 1]}
