"""The chart's RBAC grants exactly the API calls the operator and the API make: all of them, nothing more."""

import re
from pathlib import Path

import pytest
import yaml

from tests.chart.apicalls import Call, api_calls, operator_application_calls
from tests.chart.conftest import CHART, ROOT, Manifest, Render, by_kind

GROUP = "headrace.io"


def granted(role: Manifest) -> set[Call]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def role_named(objects: list[Manifest], suffix: str) -> Manifest:
    (role,) = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith(suffix)]
    return role


def kopf_framework_calls() -> set[Call]:
    """What kopf itself does for our handlers (see tests/chart/apicalls.py for where each comes from)."""
    from headrace.model import PLURAL
    from headrace.operator import handlers

    assert handlers.RESOURCE[0] == GROUP and handlers.RESOURCE[2] == PLURAL
    crd = yaml.safe_load((ROOT / "crds" / f"{PLURAL}.{GROUP}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    calls: set[Call] = {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("", "events", "create"),  # handler progress and failures, and our kopf.event() calls
        (GROUP, PLURAL, "list"),
        (GROUP, PLURAL, "watch"),
        (GROUP, PLURAL, "patch"),  # finalizer, progress and diff-base annotations
    }
    if "status" in version.get("subresources", {}):
        calls.add((GROUP, f"{PLURAL}/status", "patch"))  # kopf patches status through the subresource
    return calls


def operator_calls() -> set[Call]:
    from headrace.model import PLURAL, IngestionJob
    from headrace.operator.resources.labels import owner_reference

    calls = kopf_framework_calls() | operator_application_calls(ROOT / "headrace" / "operator")
    job = IngestionJob.model_validate(
        {"metadata": {"name": "x", "uid": "0"}, "spec": {"source": {"volume": {"claimName": "c"}}}}
    )
    if owner_reference(job).get("blockOwnerDeletion"):
        # The OwnerReferencesPermissionEnforcement admission plugin lets a client set blockOwnerDeletion
        # only with update on the owner's finalizers subresource.
        calls.add((GROUP, f"{PLURAL}/finalizers", "update"))
    if ("", "secrets", "patch") in calls:
        # The same plugin lets a client set ownerReferences (the IngestionJobs owning the worker credential
        # Secret) only on an object it may delete, as the garbage collector will on its behalf.
        calls.add(("", "secrets", "delete"))
    return calls


def test_operator_role_is_exactly_what_the_operator_calls(render: Render) -> None:
    objects = render()
    # The ClusterRole, and the Role of leader election in the release namespace (its Lease).
    (election,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-operator-leader")]
    grants = granted(role_named(objects, "-operator")) | granted(election)
    needed = operator_calls()
    assert sorted(needed - grants) == [], "calls the chart does not allow"
    assert sorted(grants - needed) == [], "grants no code uses"


def test_the_operator_may_write_only_its_own_lease(render: Render) -> None:
    objects = render()
    (election,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-operator-leader")]
    (deployment,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    by_verb = {verb: rule.get("resourceNames") for rule in election["rules"] for verb in rule["verbs"]}
    assert by_verb == {"create": None, "get": [env["HEADRACE_LEADER_ELECTION_LEASE_NAME"]], "update": by_verb["get"]}
    assert election["metadata"]["namespace"] == env["HEADRACE_LEADER_ELECTION_NAMESPACE"]


def test_api_role_is_exactly_what_the_api_calls(render: Render) -> None:
    needed = api_calls(ROOT / "headrace" / "api")
    assert needed, "the API makes TokenReviews and SubjectAccessReviews in auth mode kubernetes"
    assert granted(role_named(render(), "-api")) == needed


def test_api_without_kubernetes_auth_gets_no_role(render: Render) -> None:
    objects = render(sets=("api.auth.mode=token", "api.auth.tokenSecret.name=t"))
    names = [r["metadata"]["name"] for r in by_kind(objects, "ClusterRole") + by_kind(objects, "ClusterRoleBinding")]
    assert not [n for n in names if n.endswith("-api")]


def test_the_analysis_sees_a_new_call(tmp_path: Path) -> None:
    """Bad input for the analyzer: an operator that starts listing Secrets shows up as a new call."""
    source = ROOT / "headrace" / "operator"
    copy = tmp_path / "operator"
    copy.mkdir()
    for path in source.rglob("*.py"):
        target = copy / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (copy / "extra.py").write_text(
        "from headrace.operator.kube import SECRETS\n\nasync def snoop(op, ns):\n    await op.kube.list(SECRETS, ns)\n"
    )
    assert ("", "secrets", "list") in operator_application_calls(copy) - operator_application_calls(source)


@pytest.mark.parametrize("template", ["operator/rbac.yaml", "api/rbac.yaml", "ingest/rbac.yaml"])
def test_every_rule_is_commented_as_framework_or_application(template: str) -> None:
    """The comment block right above each rule starts with "framework" or "application"."""
    lines = (CHART / "templates" / template).read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*- apiGroups:", line):
            above = number
            while above > 0 and lines[above - 1].strip().startswith("#"):
                above -= 1
            first = lines[above].strip() if above < number else ""
            assert re.match(r"# (framework|application)\b", first), f"{template}:{number + 1} has no group comment"
