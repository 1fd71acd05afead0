"""Leader election on a coordination.k8s.io/v1 Lease, the way controller-runtime's managers do it.

The chart runs two operator replicas. Each one tries to hold one Lease in the release namespace; the one
that holds it runs kopf (every handler), the other stands by without watching anything, and takes the
Lease over once the leader stops renewing it: after a clean exit at once (the leader gives the Lease up),
after a crash or a lost node when the Lease runs out.

Why not kopf's peering (kopf/_core/engines/peering.py): it pauses operators in favour of a peer with a
*higher priority*, and pauses *all* operators of the same priority, so two identical replicas of one
Deployment would both stop. It needs kopf's own peering CRDs and notices a dead peer only after its
60-second lifetime. A Lease is the cluster's own primitive for this, which kubectl shows
(`kubectl get lease`), with the timings client-go made the norm.

The rules, as client-go's `leaderelection` package has them:

- a candidate takes the Lease when it is free, given up, or not renewed for `leaseDurationSeconds` *as this
  candidate observed it* (its own clock from the moment it saw the record change, so clocks need not
  agree); every write carries the resourceVersion it read, so two candidates cannot both win;
- the leader renews every `retry_period`, and stops leading when it could not renew for `renew_deadline`,
  which is shorter than the lease: it has stopped before anyone may take over;
- the leader exits on a lost Lease (the kubelet restarts it as a standby) rather than trying to unwind
  kopf's state in place.

The leader renews from a thread of its own, with its own event loop: kopf's loop can be busy for
seconds (a burst of new jobs, a resume of every object after a takeover), and a renewal that waits for
it would let the Lease run out under a healthy leader.
"""

import asyncio
import copy
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import kopf
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from headrace.kubeapi import KubeError
from headrace.operator.kube import EVENTS, LEASES, KubeClient
from headrace.operator.metrics import LEADER
from headrace.settings import ENV_PREFIX

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _default_identity() -> str:
    # As controller-runtime: the host name (the pod's name) and a random part, so a restarted container
    # in the same pod is a new candidate, not the old leader back from the dead.
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class ElectionSettings(BaseSettings):
    """How the operator elects a leader. Field `x_y` is read from `HEADRACE_LEADER_ELECTION_X_Y`: a part of the
    operator's settings with a prefix of its own (`OperatorSettings` holds the rest)."""

    model_config = SettingsConfigDict(
        env_prefix=f"{ENV_PREFIX}LEADER_ELECTION_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    enabled: bool = False
    """Run only while holding the Lease (the chart turns this on); off, the operator runs at once and alone."""

    namespace: str | None = None
    """Namespace of the Lease; by default the pod's own (its service account's namespace)."""

    lease_name: str = "headrace-operator"
    """Name of the Lease (the chart names it after the release)."""

    identity: str = Field(default_factory=_default_identity)
    """This candidate's name in the Lease's holderIdentity (the chart passes the pod's name)."""

    lease_duration: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds a standby waits, after it last saw the Lease renewed, before taking it over."""

    renew_deadline: Annotated[float, Field(gt=0, le=300)] = 7.0
    """Seconds the leader keeps trying to renew before it stops leading."""

    retry_period: Annotated[float, Field(gt=0, le=60)] = 2.0
    """Seconds between two attempts to take or renew the Lease."""

    @model_validator(mode="after")
    def _ordered(self) -> "ElectionSettings":
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs retry_period < renew_deadline < lease_duration "
                f"(got {self.retry_period}, {self.renew_deadline}, {self.lease_duration}): the leader must stop "
                "before a standby may take over"
            )
        return self

    def lease_namespace(self) -> str:
        """The namespace of the Lease: the configured one, or the pod's."""
        if self.namespace:
            return self.namespace
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE) as file:
                return file.read().strip()
        except OSError:
            raise ValueError(
                "leader election needs the Lease's namespace (HEADRACE_LEADER_ELECTION_NAMESPACE) outside a pod"
            ) from None


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Observed:
    """The Lease record as this candidate last saw it, and when (its monotonic clock)."""

    version: str
    holder: str
    duration: float
    at: float


class Elector:
    """Takes, keeps and gives up one Lease for `settings.identity`.

    `login` gives fresh credentials: a service account's token is rotated, so a 401 logs in again."""

    def __init__(
        self,
        settings: ElectionSettings,
        namespace: str,
        login: Callable[[], kopf.ConnectionInfo],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.namespace = namespace
        self.identity = settings.identity
        self._login = login
        self._clock = clock
        self.kube = KubeClient()
        self._observed: Observed | None = None
        self._renewed_at: float | None = None
        self._lease: dict[str, Any] | None = None  # as the server last answered this candidate's write
        LEADER.labels(self.identity).set(0)

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[None]:
        """A client of this event loop's own (an httpx client belongs to one loop); a call may take up to
        the renew deadline, and the renewal bounds the whole attempt by what is left of it."""
        self.kube = KubeClient(self._login(), timeout=self.settings.renew_deadline)
        try:
            yield
        finally:
            await self.kube.close()

    async def acquire(self) -> None:
        """Return once this candidate holds the Lease, trying again every retry period (and right when the
        current holder's Lease runs out, as observed here)."""
        log.info("Standing by for the Lease", extra={"lease": self._name(), "identity": self.identity})
        async with self._connected():
            while not await self._attempt():
                wait = self.settings.retry_period
                if self._observed is not None and self._observed.holder:
                    expires_in = self._observed.at + self._observed.duration - self._clock()
                    wait = min(wait, max(expires_in, 0.0) + 0.05)
                await asyncio.sleep(wait)
            LEADER.labels(self.identity).set(1)
            log.info("Became the leader", extra={"lease": self._name(), "identity": self.identity})
            await self._event(f"{self.identity} became leader")

    def hold(self, stopping: threading.Event) -> bool:
        """Renew the Lease every retry period, in this thread's own event loop, until `stopping` is set
        (True) or the Lease could not be renewed for the renew deadline (False): from then on this
        candidate must not act as the leader."""
        return asyncio.run(self._hold(stopping))

    async def _hold(self, stopping: threading.Event) -> bool:
        async with self._connected():
            while True:
                due = self._clock() + self.settings.retry_period
                while self._clock() < due:
                    if stopping.is_set():
                        return True
                    await asyncio.sleep(min(0.1, max(due - self._clock(), 0.0)))
                renewed_at = self._renewed_at or self._clock()
                while not await self._attempt(within=renewed_at + self.settings.renew_deadline - self._clock()):
                    if self._clock() - renewed_at >= self.settings.renew_deadline:
                        LEADER.labels(self.identity).set(0)
                        log.error("Lost the Lease", extra={"lease": self._name(), "identity": self.identity})
                        return False
                    await asyncio.sleep(min(self.settings.retry_period, 0.5))

    async def release(self) -> None:
        """Give the Lease up (a clean exit), so a standby takes over at once instead of when it runs out."""
        LEADER.labels(self.identity).set(0)
        async with self._connected():
            await self._release()

    async def _release(self) -> None:
        try:
            lease = await self.kube.get(LEASES, self.namespace, self.settings.lease_name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = lease["spec"]
            # As client-go's ReleaseOnCancel: no holder, and a lease of one second that has already passed.
            spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=micro_time(datetime.now(UTC)))
            if await self.kube.replace(LEASES, lease) is not None:
                log.info("Gave up the Lease", extra={"lease": self._name(), "identity": self.identity})
        except (KubeError, kopf.TemporaryError) as exc:
            log.warning("Could not give up the Lease", extra={"lease": self._name(), "error": str(exc)})

    async def _attempt(self, *, within: float | None = None) -> bool:
        """One try to take or renew the Lease (in at most `within` seconds): whether this candidate holds it."""
        try:
            async with asyncio.timeout(max(within, 0.0) if within is not None else None):
                return await self._try_once()
        except KubeError as exc:
            if exc.status == 401:  # the token was rotated
                self.kube.connect(self._login())
            log.warning("Could not take or renew the Lease", extra={"lease": self._name(), "error": str(exc)})
        except (kopf.TemporaryError, TimeoutError) as exc:
            log.warning("Could not take or renew the Lease", extra={"lease": self._name(), "error": str(exc)})
        return False

    async def _try_once(self) -> bool:
        now = datetime.now(UTC)
        if self._lease is not None:
            # Renewing: one write on the version this candidate wrote last, no read (409 if anyone else wrote).
            renewal = copy.deepcopy(self._lease)
            renewal["spec"]["renewTime"] = micro_time(now)
            replaced = await self.kube.replace(LEASES, renewal)
            if replaced is not None:
                self._held(replaced)
                return True
            self._lease = None
        lease = await self.kube.get(LEASES, self.namespace, self.settings.lease_name)
        if lease is None:
            created = await self.kube.create(LEASES, self._new_lease(now))
            if created is not None:
                self._held(created)
            return created is not None
        spec: dict[str, Any] = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        version = lease["metadata"]["resourceVersion"]
        if self._observed is None or self._observed.version != version:
            self._observed = Observed(
                version=version,
                holder=holder,
                duration=float(spec.get("leaseDurationSeconds") or self.settings.lease_duration),
                at=self._clock(),
            )
        if holder and holder != self.identity and self._clock() < self._observed.at + self._observed.duration:
            return False  # someone else leads, and was seen renewing within its lease
        taking_over = holder != self.identity
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = round(self.settings.lease_duration)
        spec["renewTime"] = micro_time(now)
        if taking_over:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = spec
        replaced = await self.kube.replace(LEASES, lease)
        if replaced is not None:
            self._held(replaced)
        return replaced is not None

    def _held(self, lease: dict[str, Any]) -> None:
        self._lease = lease
        self._renewed_at = self._clock()
        self._observed = Observed(
            version=lease["metadata"]["resourceVersion"],
            holder=self.identity,
            duration=self.settings.lease_duration,
            at=self._renewed_at,
        )

    def _new_lease(self, now: datetime) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.settings.lease_name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": round(self.settings.lease_duration),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 0,
            },
        }

    async def _event(self, message: str) -> None:
        """A Normal `LeaderElection` Event on the Lease, as client-go records one: `kubectl describe lease`
        (and `kubectl get events`) tell who became the leader and when."""
        now = micro_time(datetime.now(UTC))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{self.settings.lease_name}.{uuid.uuid4().hex[:16]}", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "name": self.settings.lease_name,
                "namespace": self.namespace,
            },
            "reason": "LeaderElection",
            "message": message,
            "type": "Normal",
            "source": {"component": "headrace-operator"},
            "firstTimestamp": now.split(".")[0] + "Z",
            "lastTimestamp": now.split(".")[0] + "Z",
            "count": 1,
        }
        try:
            await self.kube.create(EVENTS, event)
        except (KubeError, kopf.TemporaryError) as exc:  # an Event is a courtesy: leading goes on without it
            log.warning("Could not post the leader Event", extra={"error": str(exc)})

    def _name(self) -> str:
        return f"{self.namespace}/{self.settings.lease_name}"
