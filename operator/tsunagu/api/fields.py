"""Reading fields of an untyped Kubernetes object with errors that name the object and the field.

Objects arrive as plain dicts (from YAML or the API server); nothing about their shape is
trusted, so every read checks the type and says exactly which field is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import TypeGuard, TypeVar

EnumT = TypeVar("EnumT", bound=StrEnum)

UNNAMED = "<unnamed>"


class SpecError(ValueError):
    """An object that cannot be understood: `"TrainingJob team-a/x: spec.replicas: must be …"`."""

    def __init__(self, kind: str, name: str, field: str, problem: str) -> None:
        self.kind = kind
        self.name = name
        self.field = field
        self.problem = problem
        super().__init__(f"{kind} {name}: {field}: {problem}")


def is_integer(value: object) -> TypeGuard[int | float]:
    # bool is an int subclass in Python but never a valid count in a manifest.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )


def is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _bound_text(minimum: float | None, maximum: float | None) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"≥ {minimum:g}")
    if maximum is not None:
        parts.append(f"≤ {maximum:g}")
    return (" " + " and ".join(parts)) if parts else ""


class Fields:
    """A mapping inside an object, with the dotted path that leads to it."""

    __slots__ = ("_data", "kind", "name", "path")

    def __init__(self, data: Mapping[str, object], kind: str, name: str, path: str) -> None:
        self._data = data
        self.kind = kind
        self.name = name
        self.path = path

    @classmethod
    def root(cls, obj: object, kind: str, name: str = UNNAMED) -> Fields:
        if not isinstance(obj, Mapping):
            raise SpecError(kind, name, "(object)", "must be a map")
        return cls(obj, kind, name, "")

    def renamed(self, name: str) -> Fields:
        return Fields(self._data, self.kind, name, self.path)

    def field_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> SpecError:
        return SpecError(self.kind, self.name, self.field_path(key), problem)

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def field_names(self) -> tuple[str, ...]:
        """The map's keys; a key that is not a string is an error naming it."""
        for key in self._data:
            if not isinstance(key, str):
                raise self.error(str(key), "must be a string key")
        return tuple(self._data)

    def raw(self, key: str) -> object:
        return self._data.get(key)

    def child(self, key: str) -> Fields | None:
        """The map at `key`, or None when the field is absent."""
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a map")
        return Fields(value, self.kind, self.name, self.field_path(key))

    def required_child(self, key: str) -> Fields:
        found = self.child(key)
        if found is None:
            raise self.error(key, "is required")
        return found

    def child_or_empty(self, key: str) -> Fields:
        found = self.child(key)
        if found is None:
            return Fields({}, self.kind, self.name, self.field_path(key))
        return found

    def text(self, key: str, *, allow_empty: bool = False) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, "must be a string")
        if not value and not allow_empty:
            raise self.error(key, "must not be empty")
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self.error(key, "is required")
        return value

    def number(
        self, key: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        value = self._data.get(key)
        if value is None:
            return None
        problem = f"must be a number{_bound_text(minimum, maximum)}"
        if not is_number(value):
            raise self.error(key, problem)
        number = float(value)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.error(key, problem)
        return number

    def required_number(
        self, key: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        value = self.number(key, minimum=minimum, maximum=maximum)
        if value is None:
            raise self.error(key, "is required")
        return value

    def positive_number(self, key: str) -> float | None:
        value = self.number(key, minimum=0.0)
        if value is not None and value <= 0:
            raise self.error(key, "must be a number > 0")
        return value

    def integer(
        self, key: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        problem = f"must be an integer{_bound_text(minimum, maximum)}"
        if not is_integer(value):
            raise self.error(key, problem)
        number = int(value)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.error(key, problem)
        return number

    def required_integer(
        self, key: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.integer(key, minimum=minimum, maximum=maximum)
        if value is None:
            raise self.error(key, "is required")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def enum(self, key: str, enum_type: type[EnumT], default: EnumT) -> EnumT:
        value = self._data.get(key)
        if value is None:
            return default
        allowed = ", ".join(dict.fromkeys(member.value for member in enum_type))
        if not isinstance(value, str):
            raise self.error(key, f"must be one of {allowed}")
        try:
            return enum_type(value)
        except ValueError:
            raise self.error(key, f"must be one of {allowed} (got {value!r})") from None

    def string_list(self, key: str) -> tuple[str, ...]:
        value = self._data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, "must be a list of strings")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{key}[{index}]", "must be a non-empty string")
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str] | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a map of strings")
        result: dict[str, str] = {}
        for item_key, item_value in value.items():
            if not isinstance(item_key, str) or not isinstance(item_value, str):
                raise self.error(f"{key}.{item_key}", "must be a string")
            result[item_key] = item_value
        return result

    def maps(self, key: str) -> tuple[Fields, ...]:
        """The entries of a list of maps, each with its `key[i]` path."""
        value = self._data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, "must be a list")
        entries = []
        for index, item in enumerate(value):
            item_path = f"{key}[{index}]"
            if not isinstance(item, Mapping):
                raise self.error(item_path, "must be a map")
            entries.append(Fields(item, self.kind, self.name, self.field_path(item_path)))
        return tuple(entries)
