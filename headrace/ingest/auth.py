"""Which IngestionJob a worker pod works for, from the projected ServiceAccount token it presents.

A worker pod's token is bound to the pod and issued for our audience (`headrace-ingest`). A TokenReview
says whose it is, and, in `user.extra`, which pod it is bound to. From there we follow the chain the
operator built, one controller ownerReference at a time, and check each link against the object the
API server holds (name *and* uid, in the ServiceAccount's own namespace):

    Pod (uid from the token) --controller--> batch/v1 Job --controller--> headrace.io IngestionJob

The IngestionJob's uid is the only job the worker may read or write. Owner references are checked
against the live owner because a tenant can write any uid into its own objects' ownerReferences; it
cannot make another namespace's IngestionJob answer to it.

Answers are cached briefly (never past the token's own expiry), keyed by a hash of the token.
"""

import base64
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from headrace.api.auth import Admit, AuthUnavailable, Unauthenticated
from headrace.api.problems import ProblemError
from headrace.kubeapi import KubeApi, KubeConnection, KubeUnavailable, Singleflight, TtlCache
from headrace.model import GROUP, KIND

log = logging.getLogger(__name__)

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class WorkerIdentity:
    """A worker pod of one IngestionJob, as its token and the API server vouch for it."""

    namespace: str
    job_name: str
    job_uid: uuid.UUID
    pod_name: str
    pod_uid: str


class NotAWorker(ProblemError):
    """A valid token of this cluster, but not one of a Headrace worker pod (403)."""

    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


class WorkerAuthenticator(Protocol):
    async def identify(self, token: str | None, *, admit: Admit = ...) -> WorkerIdentity:
        """The worker this bearer token belongs to.

        Raises Unauthenticated (401: no token, or one the cluster does not accept for our audience:
        invalid, expired, another audience, bound to a pod that is gone), NotAWorker (403: a valid token
        that is not a Headrace worker pod's) or AuthUnavailable (503 with Retry-After: the API server
        could not be asked). `admit` is called before a token not yet known costs a review; it may raise.
        """

    async def aclose(self) -> None: ...


class WorkerAuthSettings(KubeConnection, Protocol):
    """What `KubernetesWorkerAuthenticator.from_settings` reads: the worker API's settings, which extend
    `KubeSettings` (where the API server is) with these two."""

    @property
    def ingest_audience(self) -> str: ...

    @property
    def auth_cache_seconds(self) -> float: ...


def _admit_all() -> None:
    pass


def seconds_left(token: str, now: float) -> float | None:
    """Seconds until the token's `exp` claim, or None when it has none.

    Read only after the API server accepted the token, so its payload is the issuer's; never used
    to accept anything, only to forget an acceptance in time.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) - now
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference marked `controller: true`, if any (at most one by the API server's rules)."""
    for reference in obj.get("metadata", {}).get("ownerReferences") or ():
        if reference.get("controller"):
            return dict(reference)
    return None


class KubernetesWorkerAuthenticator:
    """TokenReview for our audience, then pod → Job → IngestionJob on the API server."""

    def __init__(self, kube: KubeApi, *, audience: str, cache_seconds: float, cache_size: int = 4096) -> None:
        if not audience:
            raise ValueError("the worker API needs a token audience of its own (HEADRACE_INGEST_AUDIENCE)")
        self._kube = kube
        self.audience = audience
        self._identities: TtlCache[str, WorkerIdentity] = TtlCache(cache_seconds, size=cache_size)
        # Refusals apart, so a flood of bad tokens only evicts other refusals, never a worker's identity.
        self._refused: TtlCache[str, Unauthenticated | NotAWorker] = TtlCache(cache_seconds, size=cache_size)
        self._once = Singleflight()

    @classmethod
    def from_settings(cls, settings: WorkerAuthSettings) -> "KubernetesWorkerAuthenticator":
        return cls(
            KubeApi.from_settings(settings),
            audience=settings.ingest_audience,
            cache_seconds=settings.auth_cache_seconds,
        )

    async def aclose(self) -> None:
        await self._kube.aclose()

    async def identify(self, token: str | None, *, admit: Admit = _admit_all) -> WorkerIdentity:
        if not token:
            raise Unauthenticated(f"a bearer token is required: the worker pod's projected token for {self.audience!r}")
        key = hashlib.sha256(token.encode()).hexdigest()
        identity = self._identities.get(key)
        if identity is not None:
            return identity
        refused = self._refused.get(key)
        if refused is None:
            admit()  # an unknown token costs the caller's budget before it costs the API server anything
            try:
                identity = await self._once.run(key, lambda: self._decide(token))
            except (Unauthenticated, NotAWorker) as exc:
                self._refused.put(key, exc)
                raise
            left = seconds_left(token, time.time())
            self._identities.put(key, identity, ttl=left)
            return identity
        raise type(refused)(refused.detail)  # a new exception: a raised one carries its first traceback

    async def _decide(self, token: str) -> WorkerIdentity:
        try:
            return await self._follow(token)
        except KubeUnavailable as exc:
            raise AuthUnavailable(f"{exc}; retry shortly") from exc

    async def _follow(self, token: str) -> WorkerIdentity:
        review = await self._kube.create(
            TOKEN_REVIEWS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]},
            },
        )
        status = review.get("status") or {}
        if not status.get("authenticated") or self.audience not in (status.get("audiences") or ()):
            # Invalid, expired, issued for another audience, or bound to an object that is gone.
            raise Unauthenticated(f"the bearer token was not accepted by the cluster for audience {self.audience!r}")
        user = status.get("user") or {}
        username = str(user.get("username", ""))
        if not username.startswith(SERVICE_ACCOUNT_PREFIX) or username.count(":") != 3:
            raise NotAWorker(f"{username!r} is not a ServiceAccount; the worker API serves worker pods only")
        namespace, account = username.removeprefix(SERVICE_ACCOUNT_PREFIX).split(":")
        extra = user.get("extra") or {}
        pod_name, pod_uid = (extra.get(POD_NAME) or [""])[0], (extra.get(POD_UID) or [""])[0]
        if not (pod_name and pod_uid):
            raise NotAWorker(f"the token of {username!r} is not bound to a pod; a worker presents its pod's token")
        # The ServiceAccount's namespace is the pod's: a bound token names no namespace of its own.
        pod = await self._kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
        if pod is None or pod["metadata"].get("uid") != pod_uid:
            raise Unauthenticated(f"pod {namespace}/{pod_name}, which the token is bound to, is gone")
        if (pod.get("spec") or {}).get("serviceAccountName", "default") != account:
            raise NotAWorker(f"pod {namespace}/{pod_name} does not run as ServiceAccount {account!r}")
        job = await self._owner(pod, "batch", "Job", f"/apis/batch/v1/namespaces/{namespace}/jobs")
        if job is None:
            raise NotAWorker(f"pod {namespace}/{pod_name} is not a Headrace worker: no Job controls it")
        ingestion_job = await self._owner(
            job, GROUP, KIND, f"/apis/{GROUP}/{{version}}/namespaces/{namespace}/ingestionjobs"
        )
        if ingestion_job is None:
            raise NotAWorker(
                f"pod {namespace}/{pod_name} is not a Headrace worker: Job {job['metadata']['name']} "
                f"is not controlled by an {KIND}"
            )
        identity = WorkerIdentity(
            namespace=namespace,
            job_name=ingestion_job["metadata"]["name"],
            job_uid=uuid.UUID(ingestion_job["metadata"]["uid"]),
            pod_name=pod_name,
            pod_uid=pod_uid,
        )
        # DEBUG: asked again whenever the cache lets a decision go (every few seconds per worker pod).
        log.debug(
            "Identified worker",
            extra={
                "namespace": namespace,
                "pod": pod_name,
                "ingestionjob": identity.job_name,
                "uid": str(identity.job_uid),
            },
        )
        return identity

    async def _owner(self, child: dict[str, Any], group: str, kind: str, collection: str) -> dict[str, Any] | None:
        """The child's controller if it is a `group` `kind` that exists with the uid the reference names."""
        reference = _controller(child)
        if reference is None or reference.get("kind") != kind:
            return None
        api_version = str(reference.get("apiVersion", ""))
        reference_group, _, version = api_version.rpartition("/")
        if reference_group != group or not version or not reference.get("name") or "/" in str(reference["name"]):
            return None
        owner = await self._kube.get(f"{collection.format(version=version)}/{reference['name']}")
        if owner is None or owner["metadata"].get("uid") != reference.get("uid"):
            return None  # gone, or a reference with a uid the tenant wrote itself
        return owner
