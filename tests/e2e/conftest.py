"""Fixtures of the end-to-end suites."""

from __future__ import annotations

import pytest

from tests.support.cluster import tool_path
from tests.support.helm import Helm


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm(tool_path("helm"))
