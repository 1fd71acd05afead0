"""The chart's `api.rerank` values become the API's HEADRACE_RERANK_* settings, the key from a Secret only."""

import pytest

from headrace.api.settings import ApiSettings
from tests.chart.conftest import ROOT, Render, by_kind

EXAMPLE = ROOT / "examples" / "chart" / "rerank-values.yaml"


def api_env(render: Render, *values: object, sets: tuple[str, ...] = ()) -> list[dict[str, object]]:
    (api,) = [d for d in by_kind(render(*values, sets=sets), "Deployment") if d["metadata"]["name"].endswith("-api")]
    env: list[dict[str, object]] = api["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_no_reranker_by_default(render: Render) -> None:
    assert not [e for e in api_env(render) if str(e["name"]).startswith("HEADRACE_RERANK_")]


def test_rerank_values_render_into_the_api_settings(render: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    env = api_env(render, EXAMPLE, sets=("api.rerank.default=true",))
    rerank = {e["name"]: e for e in env if str(e["name"]).startswith("HEADRACE_RERANK_")}
    assert {name: e.get("value") for name, e in rerank.items()} == {
        "HEADRACE_RERANK_URL": "http://reranker.models.svc.cluster.local:8080",
        "HEADRACE_RERANK_API": "tei",
        "HEADRACE_RERANK_MODEL": "BAAI/bge-reranker-v2-m3",
        "HEADRACE_RERANK_API_KEY": None,
        "HEADRACE_RERANK_CANDIDATES": "30",
        "HEADRACE_RERANK_TIMEOUT_MS": "1000",
        "HEADRACE_RERANK_DEFAULT": "true",
    }
    assert rerank["HEADRACE_RERANK_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "headrace-reranker", "key": "api-key"}
    }
    # The API reads them as rendered (the key as the kubelet would resolve it).
    for name, e in rerank.items():
        monkeypatch.setenv(name, str(e.get("value") or "the-key"))
    settings = ApiSettings(database_url="postgresql://x@localhost/x", listen_host="127.0.0.1")
    assert (settings.rerank_url, settings.rerank_api, settings.rerank_model) == (
        "http://reranker.models.svc.cluster.local:8080",
        "tei",
        "BAAI/bge-reranker-v2-m3",
    )
    assert settings.rerank_api_key is not None and settings.rerank_api_key.get_secret_value() == "the-key"
    assert (settings.rerank_candidates, settings.rerank_timeout_ms, settings.rerank_default) == (30, 1000, True)


def test_no_key_and_no_model_render_none(render: Render) -> None:
    env = api_env(render, sets=("api.rerank.url=http://reranker:8080",))
    names = {e["name"] for e in env}
    assert "HEADRACE_RERANK_URL" in names
    assert not names & {"HEADRACE_RERANK_API_KEY", "HEADRACE_RERANK_MODEL"}
