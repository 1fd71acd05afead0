"""The operator's typed view of the Kubernetes API: the kinds it owns (`Resource`) and the verbs it uses on
them, with 404 and 409 as answers, not errors. Calls go through Headrace's one Kubernetes client
(`headrace.kubeapi.KubeApi`, httpx), on kopf's credentials.

kopf logs in (service account in a pod, kubeconfig elsewhere; `credentials`) and we reuse the same
ConnectionInfo, so the operator never has two ideas of which cluster it talks to. Manifests travel as
plain dicts.
"""

from dataclasses import dataclass
from typing import Any

import kopf

from headrace.kubeapi import JSON, KubeApi, KubeError, KubeUnavailable
from headrace.operator.metrics import KUBE_REQUESTS, VERBS

MERGE_PATCH = "application/merge-patch+json"
# Merges lists by their key (ownerReferences by uid) on the server: adding an owner needs no read first.
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

REQUEST_TIMEOUT = 30.0
"""Seconds one API call may take before it counts as failed."""

RETRY_DELAY = 5.0
"""Seconds before kopf calls a handler again after the API server timed out or was briefly unavailable.

Without it, such a failure is an arbitrary exception to kopf, which retries after its default backoff
of 60 s: a job created while the API server is busy would get its worker Job a minute late.
"""


def credentials(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The credentials kopf logs in with (kopf's `settings` and `logger` as keywords): in a pod, its
    service account; elsewhere $KUBECONFIG or ~/.kube/config, read at each login (kopf's reader handles
    tokens and certificates; the official client's, when installed, also exec plugins)."""
    return (
        kopf.login_with_service_account(**kwargs)
        or kopf.login_with_kubeconfig(**kwargs)
        or kopf.login_via_client(**kwargs)
    )


def _count(method: str, code: str) -> None:
    KUBE_REQUESTS.labels(VERBS.get(method, method.lower()), code).inc()


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: `/apis/batch/v1/namespaces/<ns>/jobs` (`/api/v1/namespaces/<name>` for
    a cluster-scoped kind, whose namespace argument is ignored)."""

    group_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str, name: str | None = None) -> str:
        prefix = "/api" if "/" not in self.group_version else "/apis"
        scope = f"/namespaces/{namespace}" if self.namespaced else ""
        path = f"{prefix}/{self.group_version}{scope}/{self.plural}"
        return f"{path}/{name}" if name else path


JOBS = Resource("batch/v1", "jobs")
HPAS = Resource("autoscaling/v2", "horizontalpodautoscalers")
SECRETS = Resource("v1", "secrets")
NAMESPACES = Resource("v1", "namespaces", namespaced=False)
LEASES = Resource("coordination.k8s.io/v1", "leases")
EVENTS = Resource("v1", "events")


class KubeClient:
    """get, create, merge-patch and delete of namespaced objects, with 404 and 409 as answers, not errors.

    Each call is counted in `headrace_operator_kubernetes_requests_total`. The client opens its
    `KubeApi` at the first call, in that call's event loop."""

    def __init__(self, connection: kopf.ConnectionInfo | None = None, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.connection = connection
        self.timeout = timeout
        self._api: KubeApi | None = None
        self._retired: list[KubeApi] = []

    def connect(self, connection: kopf.ConnectionInfo) -> None:
        """Use these credentials from now on (kopf logs in again when the old ones expire)."""
        self.connection = connection
        if self._api is not None:
            self._retired.append(self._api)  # closed at close(): requests may still be using it
        self._api = None  # the next request opens a client with the new credentials

    def _open(self, connection: kopf.ConnectionInfo) -> KubeApi:
        return KubeApi.open(
            connection.server,
            verify=connection.as_ssl_context(),
            headers=connection.as_http_headers(),
            timeout=self.timeout,
            answered=_count,
            trust_env=connection.trust_env,
            proxy=connection.proxy_url,
        )

    async def request(self, method: str, path: str, body: object = None, content_type: str = JSON) -> Any:
        """One API call: the decoded answer; KubeError when the server refused it, kopf.TemporaryError (retry
        in RETRY_DELAY seconds) when it timed out, could not be reached or answered a transient status."""
        if self.connection is None:
            raise kopf.TemporaryError("not logged in to Kubernetes yet", delay=1)
        if self._api is None:
            self._api = self._open(self.connection)
        try:
            return await self._api.request(method, path, body, content_type=content_type)
        except KubeUnavailable as exc:
            raise kopf.TemporaryError(f"{method} {path}: {exc}", delay=RETRY_DELAY) from exc

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        try:
            result: dict[str, Any] = await self.request("GET", resource.path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list(self, resource: Resource, namespace: str, *, name: str) -> list[dict[str, Any]]:
        """The objects of this name (a field selector: `list` is the verb kopf already needs on namespaces,
        where a `get` would be one more grant)."""
        path = f"{resource.path(namespace)}?fieldSelector=metadata.name%3D{name}"
        found: dict[str, Any] = await self.request("GET", path)
        # Filtered here as well: not every server (nor every test double) honours field selectors.
        return [item for item in found.get("items") or [] if item.get("metadata", {}).get("name") == name]

    async def ensure(
        self, resource: Resource, manifest: dict[str, Any], *, read_first: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Create the object unless it exists: (the object as the server has it, whether it was created now).

        `read_first` for an object that most likely exists: one read, where a create would be refused and
        followed by a read."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        if read_first:
            found = await self.get(resource, namespace, name)
            if found is not None:
                return found, False
        try:
            created: dict[str, Any] = await self.request("POST", resource.path(namespace), manifest)
            return created, True
        except KubeError as exc:
            if exc.status != 409:
                raise
        existing = await self.get(resource, namespace, name)
        if existing is None:  # deleted between our create and get: the next reconcile creates it again
            raise kopf.TemporaryError(f"{name} was deleted while being created", delay=1)
        return existing, False

    async def create(self, resource: Resource, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create the object; None when one of that name exists already (409)."""
        try:
            result: dict[str, Any] = await self.request(
                "POST", resource.path(manifest["metadata"]["namespace"]), manifest
            )
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise
        return result

    async def replace(self, resource: Resource, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Replace the object as a whole (PUT), on condition that its `metadata.resourceVersion` is still the
        server's; None when it is not (409: someone else wrote it in between)."""
        metadata = manifest["metadata"]
        try:
            result: dict[str, Any] = await self.request(
                "PUT", resource.path(metadata["namespace"], metadata["name"]), manifest
            )
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise
        return result

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any] | None:
        """Merge-patch the object (or strategic-merge-patch it, for built-in kinds); None when it does not exist."""
        try:
            result: dict[str, Any] = await self.request("PATCH", resource.path(namespace, name), patch, content_type)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def delete(self, resource: Resource, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete the object (its dependents in the background); False when there was none. With `uid`, only
        the object with that uid: the server answers 409 when the name now belongs to another."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", resource.path(namespace, name), body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def close(self) -> None:
        for api in [*self._retired, self._api]:
            if api is not None:
                await api.aclose()
        self._retired, self._api = [], None
