"""The metric names a PromQL expression reads, and the names Headrace's code registers."""

import re

from prometheus_client import REGISTRY

# Series other programs export that the dashboard reads beside ours: Prometheus' own `up`, and
# kube-state-metrics' HPA series (for worker count against HPA desired).
FOREIGN = frozenset(
    {"up", "kube_horizontalpodautoscaler_status_desired_replicas", "kube_horizontalpodautoscaler_labels"}
)

_FUNCTIONS = frozenset(
    [
        "sum",
        "count",
        "max",
        "min",
        "avg",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "absent",
        "time",
        "label_values",
        "humanize",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "by",
        "without",
        "group_left",
        "group_right",
        "bool",
        "offset",
    ]
)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def metric_names(expr: str) -> set[str]:
    """Identifiers of `expr` that name series: label matchers, grouping labels, ranges and strings dropped."""
    expr = re.sub(r"label_values\(([^,)]+),[^)]*\)", r"\1", expr)  # Grafana's variable query
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in _FUNCTIONS and not re.fullmatch(r"\d+[smhd]?", w)}


def registered() -> set[str]:
    """Every series name Headrace's processes can export, from the registries of all three."""
    import headrace.api.metrics
    import headrace.metrics
    import headrace.operator.metrics  # noqa: F401 - importing registers them

    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("headrace_"):
            continue
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names
