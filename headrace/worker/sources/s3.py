"""Objects in an S3-compatible bucket, listed page by page with their ETags as change markers.

boto3 (in a thread) rather than aiobotocore: the worker fetches one object at a time, so threads
cost nothing here, and boto3 is the client every S3-compatible store tests against. aiobotocore
pins botocore to a narrow range and would bring aiohttp beside httpx.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from headrace.model import S3Source
from headrace.worker.errors import DocumentError
from headrace.worker.secrets import read_secret
from headrace.worker.sources.addresses import BlockedAddress, check_host
from headrace.worker.sources.base import DocumentRef, Fetched
from headrace.worker.sources.globs import matches

PAGE_SIZE = 1000
_GONE = {"NoSuchKey", "404", "NotFound"}
_REFUSED = {"AccessDenied", "403", "InvalidObjectState", "InvalidRange"}


def _refuse_private(request: Any, **_: Any) -> None:
    parts = urlsplit(request.url)
    try:
        check_host(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except BlockedAddress as exc:
        raise DocumentError(f"refused: {exc} (set source.s3.allowPrivateNetworks to allow)") from None


class BucketObjects:
    """The objects under `spec.source.s3.prefix` that the include/exclude globs select."""

    def __init__(self, spec: S3Source, *, secrets_dir: Path) -> None:
        self.spec = spec
        credentials: dict[str, Any] = {}
        if spec.credentials_secret_ref:
            secret = read_secret(
                secrets_dir,
                spec.credentials_secret_ref.name,
                required=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            )
            credentials = {
                "aws_access_key_id": secret["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": secret["AWS_SECRET_ACCESS_KEY"],
            }
            if "AWS_SESSION_TOKEN" in secret:
                credentials["aws_session_token"] = secret["AWS_SESSION_TOKEN"]
        elif not spec.ambient_credentials:
            # Anonymous: boto3's default chain would end at the node's instance role, not the tenant's.
            credentials["config"] = Config(signature_version=UNSIGNED)
        config = Config(
            region_name=spec.region,
            s3={"addressing_style": "path" if spec.path_style else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
        )
        if "config" in credentials:
            config = config.merge(credentials.pop("config"))
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=spec.endpoint, config=config, **credentials
        )
        if not spec.allow_private_networks:
            # Checked on every request's resolved host, so a redirect or a rebinding endpoint is caught too.
            self.client.meta.events.register("before-send.s3", _refuse_private)
            if spec.endpoint:
                parts = urlsplit(spec.endpoint)
                try:
                    check_host(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
                except BlockedAddress as exc:
                    raise DocumentError(f"source.s3.endpoint refused: {exc} (see allowPrivateNetworks)") from None
        self.prefix_uri = f"s3://{spec.bucket}/"

    def _listing(self) -> Iterator[list[DocumentRef]]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.spec.bucket, Prefix=self.spec.prefix, PaginationConfig={"PageSize": PAGE_SIZE}
        )
        for page in pages:
            refs = []
            for item in page.get("Contents", []):
                key = item["Key"]
                relative = key[len(self.spec.prefix) :].lstrip("/")
                if key.endswith("/") or not matches(relative, self.spec.include, self.spec.exclude):
                    continue
                refs.append(DocumentRef(uri=self.prefix_uri + key, size=item["Size"], version=item["ETag"].strip('"')))
            yield refs

    async def pages(self) -> AsyncIterator[list[DocumentRef]]:
        listing = self._listing()
        while True:
            page = await asyncio.to_thread(next, listing, None)
            if page is None:
                return
            if page:
                yield page

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    async def fetch(self, ref: DocumentRef, *, max_bytes: int, known_version: str | None = None) -> Fetched:
        return await asyncio.to_thread(self._get, ref, max_bytes)

    def _get(self, ref: DocumentRef, max_bytes: int) -> Fetched:
        key = ref.uri.removeprefix(self.prefix_uri)
        try:
            response = self.client.get_object(Bucket=self.spec.bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _GONE:
                raise DocumentError(f"{ref.uri} no longer exists") from None
            if code in _REFUSED:
                raise DocumentError(f"cannot read {ref.uri}: {code}") from None
            raise
        body = response["Body"]
        try:
            if response.get("ContentLength", 0) > max_bytes:
                raise DocumentError(
                    f"document is {response['ContentLength']} bytes, over limits.maxDocumentBytes ({max_bytes})"
                )
            data = body.read(max_bytes + 1)
        except BotoCoreError as exc:
            raise ConnectionError(f"reading {ref.uri} failed: {exc}") from exc
        finally:
            body.close()
        if len(data) > max_bytes:
            raise DocumentError(f"document is over limits.maxDocumentBytes ({max_bytes})")
        etag = str(response.get("ETag", "")).strip('"') or None
        meta = {
            "modified": response.get("LastModified"),
            "declaredLanguage": response.get("ContentLanguage"),
            "objectMetadata": response.get("Metadata") or {},
            "tags": self._tags(key),
        }
        return Fetched(data, version=etag, media_type=response.get("ContentType"), metadata=meta)

    def _tags(self, key: str) -> dict[str, str]:
        """The object's tags; none when the store does not keep tags or the worker may not read them."""
        try:
            response = self.client.get_object_tagging(Bucket=self.spec.bucket, Key=key)
        except ClientError:
            return {}
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}
