"""The tests' Kubernetes emulator (`bench.common.list_then_watch_emulator`) keeps the promise the operator
scenarios rely on: a watch from the resourceVersion a list answered begins where that list ended, however
kopf's lists and watches of different kinds interleave as it starts."""

import asyncio
import json
from typing import Any

import httpx
import kmock
import pytest

from bench.common import list_then_watch_emulator
from tests.operator.conftest import Namespaces, declare_resources, ij, parse_cluster_namespaces

IJS = "/apis/headrace.io/v1alpha1/namespaces/default/ingestionjobs"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
NAMESPACES = "/api/v1/namespaces"
BURST = 200


async def listed(http: httpx.AsyncClient, path: str) -> str:
    """The resourceVersion a list of `path` answers."""
    response = await http.get(path)
    response.raise_for_status()
    return response.json()["metadata"]["resourceVersion"]  # type: ignore[no-any-return]


async def first_event(http: httpx.AsyncClient, path: str, version: str) -> dict[str, Any]:
    """The first event of a watch of `path` from `version`."""
    params = {"watch": "true", "resourceVersion": version}
    async with asyncio.timeout(10), http.stream("GET", path, params=params) as watch:
        assert watch.status_code == 200
        async for line in watch.aiter_lines():
            if line.strip():
                return json.loads(line)  # type: ignore[no-any-return]
    raise AssertionError(f"the watch of {path} from {version} ended without an event")


async def test_a_watch_from_a_lists_version_begins_where_that_list_ended(
    emulator: kmock.KubernetesEmulator, namespaces: Namespaces
) -> None:
    # kopf's start, as it happened: lists of several kinds, and a watch taking one list's version before
    # the next list is made. Each list is named apart, and each watch gets its own kind's events.
    async with httpx.AsyncClient(base_url=str(emulator.url).rstrip("/")) as http:
        (await http.post(IJS, json=ij("before"))).raise_for_status()
        namespaces_version = await listed(http, NAMESPACES)
        ijs_version = await listed(http, IJS)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-c"}}
        (await http.post(NAMESPACES, json=namespace)).raise_for_status()
        assert (await first_event(http, NAMESPACES, namespaces_version))["object"]["metadata"]["name"] == "team-c"
        later_version = await listed(http, JOBS)
        assert len({namespaces_version, ijs_version, later_version}) == 3
        (await http.post(IJS, json=ij("after"))).raise_for_status()
        event = await first_event(http, IJS, ijs_version)
        # Not "before", which existed when the list was made: a watch that replayed it would make kopf
        # handle that job a second time.
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "after")


async def test_an_emulator_that_forgets_its_requests_still_answers_each(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reconcile benchmark's bursts: kmock routes each request by filtering every request it kept, so
    # a burst of 100 IngestionJobs never finished on an emulator that keeps them all.
    parse_cluster_namespaces(monkeypatch)
    async with list_then_watch_emulator(keep_requests=False)() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        async with httpx.AsyncClient(base_url=str(emulator.url).rstrip("/")) as http:
            created = await asyncio.gather(*(http.post(IJS, json=ij(f"job-{i}")) for i in range(BURST)))
            assert {response.status_code for response in created} == {200}
            found = (await http.get(IJS)).json()["items"]
        assert sorted(item["metadata"]["name"] for item in found) == sorted(f"job-{i}" for i in range(BURST))
        assert list(emulator) == []  # none of the requests is kept once answered
