"""Who may name a Secret in an IngestionJob: the cluster's own answer, on the real control plane.

A Secret reference in an IngestionJob is mounted into its workers, so whoever may create IngestionJobs
in a namespace reaches that namespace's Secrets (Headrace's own excepted, refused by the operator:
tests/security/cluster/test_secret_refs.py). docs/security.md ("Secrets") holds that this gives no one
more than they had, because the chart grants IngestionJob writes through the built-in `edit` and
`admin` roles, which read Secrets themselves. The chart's aggregated roles are rendered by the real
helm, applied, aggregated by the real controller, and the apiserver answers `kubectl auth can-i`.
"""

import asyncio
import time
import uuid

import pytest
import yaml

from tests.chart.conftest import CHART, helm
from tests.kube.controlplane import ControlPlane

pytestmark = pytest.mark.timeout(180)

AGGREGATION_DEADLINE_SECONDS = 60
"""How long the clusterrole-aggregation controller may take (it acts within a second when idle)."""


def can(control_plane: ControlPlane, user: str, verb: str, resource: str, namespace: str) -> bool:
    done = control_plane.kubectl("auth", "can-i", verb, resource, "--namespace", namespace, "--as", user, check=False)
    assert done.stdout.strip() in {"yes", "no"}, done.stderr
    return done.stdout.strip() == "yes"


async def test_whoever_the_chart_lets_write_ingestionjobs_reads_the_namespaces_secrets_anyway(
    control_plane: ControlPlane,
) -> None:
    control_plane.require_controllers()
    control_plane.install_crd()  # kubectl auth can-i resolves the resource by discovery
    release = f"hr{uuid.uuid4().hex[:8]}"
    namespace = await control_plane.create_namespace(prefix="secrets")
    rendered = helm("template", release, str(CHART), "--namespace", namespace)
    assert rendered.returncode == 0, rendered.stderr
    roles = [
        doc
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc["kind"] == "ClusterRole" and any("aggregate-to" in label for label in doc["metadata"]["labels"])
    ]
    assert len(roles) == 2  # <release>-headrace-edit and -view
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(roles))
    users = {"edit": "ed", "admin": "ada", "view": "vic", roles[0]["metadata"]["name"]: "jo"}
    try:
        for role, user in users.items():
            control_plane.kubectl(
                "create", "rolebinding", f"{user}-{role}"[:63], "--namespace", namespace,
                "--clusterrole", role, "--user", user,
            )  # fmt: skip
        deadline = time.monotonic() + AGGREGATION_DEADLINE_SECONDS
        while not (
            can(control_plane, "ed", "create", "ingestionjobs.headrace.io", namespace)
            and can(control_plane, "ada", "create", "ingestionjobs.headrace.io", namespace)
            and can(control_plane, "vic", "get", "ingestionjobs.headrace.io", namespace)
        ):
            assert time.monotonic() < deadline, "the chart's rules were not aggregated into edit, admin and view"
            await asyncio.sleep(0.2)

        for user in ("ed", "ada"):  # IngestionJob writers through the built-in roles: they read Secrets anyway
            assert can(control_plane, user, "get", "secrets", namespace)
        assert not can(control_plane, "vic", "create", "ingestionjobs.headrace.io", namespace)
        assert not can(control_plane, "vic", "get", "secrets", namespace)
        # The chart's own edit role, bound alone, writes IngestionJobs without reading Secrets: the
        # exception docs/security.md warns of (bind it only to those who may read the namespace's Secrets).
        assert roles[0]["metadata"]["name"].endswith("-edit")
        assert can(control_plane, "jo", "create", "ingestionjobs.headrace.io", namespace)
        assert not can(control_plane, "jo", "get", "secrets", namespace)
    finally:
        for role in roles:
            control_plane.kubectl("delete", "clusterrole", role["metadata"]["name"], check=False)
