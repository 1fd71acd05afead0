"""Operator-side attempts: the reconcile functions on real Postgres and kmock's Kubernetes emulator."""

from typing import Any

import kmock
import pytest

from tests.operator.conftest import emulator, namespaces, op

__all__ = ["emulator", "namespaces", "op"]


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": kmock.KubernetesEmulator}
