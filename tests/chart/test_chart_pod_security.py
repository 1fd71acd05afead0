"""Every pod the chart renders meets Pod Security "restricted"; the checker itself catches each breach."""

import copy
from typing import Any

import pytest

from tests.chart.conftest import Manifest, pod_specs
from tests.chart.podsecurity import restricted_violations


def test_every_chart_pod_is_restricted(rendered: list[Manifest]) -> None:
    pods = pod_specs(rendered)
    assert pods, "the chart renders no pods"
    problems = {name: restricted_violations(spec) for name, spec in pods}
    assert {name: p for name, p in problems.items() if p} == {}


COMPLIANT: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "image": "x",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def test_the_reference_pod_complies() -> None:
    assert restricted_violations(COMPLIANT) == []


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if value is None:
        del node[last]
    else:
        node[last] = value


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("hostNetwork", True, "hostNetwork"),
        ("securityContext.runAsNonRoot", None, "runAsNonRoot must be true"),
        ("securityContext.seccompProfile", None, "seccompProfile must be RuntimeDefault"),
        ("securityContext.seccompProfile.type", "Unconfined", "seccompProfile Unconfined"),
        ("containers.0.securityContext.privileged", True, "privileged"),
        ("containers.0.securityContext.allowPrivilegeEscalation", None, "allowPrivilegeEscalation"),
        ("containers.0.securityContext.capabilities.drop", ["NET_RAW"], "drop ALL"),
        ("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"], "only NET_BIND_SERVICE"),
        ("containers.0.securityContext.runAsUser", 0, "runAsUser must not be 0"),
        ("containers.0.securityContext.readOnlyRootFilesystem", False, "readOnlyRootFilesystem"),
        ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        ("volumes", [{"name": "root", "hostPath": {"path": "/"}}], "hostPath"),
        ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "kernel.msgmax"),
    ],
)
def test_each_breach_is_reported(path: str, value: Any, expected: str) -> None:
    spec = copy.deepcopy(COMPLIANT)
    _set(spec, path, value)
    problems = restricted_violations(spec)
    assert any(expected in p for p in problems), problems
