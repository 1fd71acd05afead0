"""What a cluster and this installation permit of an IngestionJob beyond its schema; InvalidSpec names the field.

The schema already rejects most bad specs; these are the rules it cannot say (or that an API server
without CEL support let through), checked when the operator reads a job, so a bad spec becomes a
condition instead of a crash loop.
"""

from headrace.model import IngestionJob
from headrace.operator.resources.job import InvalidSpec, check_cluster_spec
from headrace.operator.settings import OperatorSettings


def admit(job: IngestionJob, config: OperatorSettings) -> None:
    """Raise InvalidSpec naming every bad field when the job cannot run in this cluster and installation."""
    check_cluster_spec(job)
    check_installation(job, config)


def check_installation(job: IngestionJob, config: OperatorSettings) -> None:
    """What this installation permits: `allowPrivateNetworks` only when the operator was told to honour it,
    and Secret references only to Secrets that are not Headrace's own."""
    source = job.spec.source
    for kind, settings in (("http", source.http), ("s3", source.s3)):
        if settings is not None and settings.allow_private_networks and not config.allow_private_networks:
            raise InvalidSpec(
                f"spec.source.{kind}.allowPrivateNetworks: this installation does not permit private networks "
                "(the chart value operator.allowPrivateNetworks is false)"
            )
    check_secret_refs(job, config)


def check_secret_refs(job: IngestionJob, config: OperatorSettings) -> None:
    """Refuse a Secret reference that names one of Headrace's own Secrets in the namespace.

    A referenced Secret is mounted into the workers and its values are sent to an endpoint the spec
    chooses, so naming the image pull Secrets would hand them to whoever runs that endpoint. Any other
    Secret of the namespace may be named: whoever may create an IngestionJob may read the namespace's
    Secrets anyway (docs/security.md, "Secrets")."""
    own = {name: "a Secret the worker image is pulled with" for name in config.worker_image_pull_secrets}
    spec = job.spec
    refs = (
        ("spec.source.http.headersSecretRef.name", spec.source.http.headers_secret_ref if spec.source.http else None),
        ("spec.source.s3.credentialsSecretRef.name", spec.source.s3.credentials_secret_ref if spec.source.s3 else None),
        (
            "spec.embedding.endpoint.apiKeySecretRef.name",
            spec.embedding.endpoint.api_key_secret_ref if spec.embedding.endpoint else None,
        ),
    )
    for field_path, ref in refs:
        if ref is not None and ref.name in own:
            raise InvalidSpec(
                f"{field_path}: {ref.name} is Headrace's own Secret ({own[ref.name]}), whose values would be sent "
                "to the endpoint this spec names; reference a Secret of your own"
            )
