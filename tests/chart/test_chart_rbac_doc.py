"""docs/security.md's RBAC table is the chart's RBAC: every rule, name and verb, under each condition.

The chart is rendered by the real helm with its default values (every condition on) and with each
condition off; the rules of every rendered Role and ClusterRole must be exactly the table's rows whose
condition holds.
"""

import re

import pytest

from tests.chart.conftest import RELEASE, ROOT, Manifest, Render

SECURITY = ROOT / "docs" / "security.md"

Rule = tuple[str, str, frozenset[str], frozenset[str], frozenset[str]]
"""(role, API group, resources, resource names, verbs)."""

CONDITIONS = {
    "always": (),
    "`api.auth.mode: kubernetes`": ("api.auth.mode=token", "api.auth.tokenSecret.name=api-token"),
    "`rbac.aggregateClusterRoles: true`": ("rbac.aggregateClusterRoles=false",),
}
"""Each condition the table names, and the --set items that turn it off."""


def _names(cell: str) -> frozenset[str]:
    return frozenset(re.findall(r"`([^`]+)`", cell))


def documented() -> list[tuple[Rule, str]]:
    """The table's rows, each with its condition."""
    text = SECURITY.read_text()
    section = text[text.index("## RBAC\n") : text.index("\n## ", text.index("## RBAC\n") + 1)]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in {"role", ""} or set(cells[0]) <= {"-"}:
            continue
        role, group, resources, names, verbs, when = cells
        assert when in CONDITIONS, f"docs/security.md RBAC row with an unknown condition: {line}"
        group_name = "" if group == "core" else group.strip("`")
        rows.append(((role, group_name, _names(resources), _names(names), _names(verbs)), when))
    assert rows, "docs/security.md has no RBAC table"
    return rows


def rendered_rules(objects: list[Manifest]) -> set[Rule]:
    prefix = f"{RELEASE}-headrace-"
    rules = set()
    for role in objects:
        if role["kind"] not in {"Role", "ClusterRole"}:
            continue
        name = role["metadata"]["name"]
        assert name.startswith(prefix), name
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                rules.add(
                    (
                        name.removeprefix(prefix),
                        group,
                        frozenset(rule["resources"]),
                        # A name the chart derives from the release (the Lease) is written `<release>-headrace-...`.
                        frozenset(n.replace(prefix, "<release>-headrace-", 1) for n in rule.get("resourceNames", [])),
                        frozenset(rule["verbs"]),
                    )
                )
    return rules


@pytest.mark.parametrize("off", list(CONDITIONS), ids=["defaults", "token", "no-aggregate"])
def test_the_rbac_table_is_what_the_chart_grants(render: Render, off: str) -> None:
    rows = documented()
    want = {rule for rule, when in rows if when == "always" or when != off}
    got = rendered_rules(render(sets=CONDITIONS[off]))
    assert got == want, (
        f"in the chart, not in docs/security.md: {sorted(got - want)}\n"
        f"in docs/security.md, not in the chart: {sorted(want - got)}"
    )
