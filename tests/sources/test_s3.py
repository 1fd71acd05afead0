"""The S3 source against a real S3-protocol server (moto's) on loopback: listing, ETags, archives, mirror."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from headrace.model import IngestionJobSpec
from headrace.store import runs
from headrace.store.db import Pool
from headrace.worker.loop import EXIT_BAD_SOURCE, Worker
from headrace.worker.secrets import MissingSecret, read_secret
from headrace.worker.store import DirectStore
from tests.conftest import JobFactory
from tests.sources.helpers import counts, documents, run_once, write_secret
from tests.worker.samples import pdf, zip_file

BUCKET = "harbour-docs"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> Iterator[Any]:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    )
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def object_reads(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Keys the moto server logged a GET for (its werkzeug access log)."""
    prefix = f'"GET /{BUCKET}/'
    return [
        r.getMessage().split(prefix, 1)[1].split(" ", 1)[0]
        for r in caplog.records
        if r.name == "werkzeug" and prefix in r.getMessage() and "?tagging" not in r.getMessage()
    ]


def s3_spec(endpoint: str, **s3: object) -> IngestionJobSpec:
    return IngestionJobSpec.model_validate(
        {
            "source": {
                "s3": {
                    "bucket": BUCKET,
                    "prefix": "docs/",
                    "region": "eu-west-1",
                    "endpoint": endpoint,
                    "pathStyle": True,
                    "credentialsSecretRef": {"name": "s3-creds"},
                    "allowPrivateNetworks": True,  # moto listens on loopback
                    **s3,
                }
            },
            "sync": "mirror",
            "workers": {"batchSize": 2},
        }
    )


async def test_listing_etag_skips_archives_and_mirror(
    pool: Pool, make_job: JobFactory, tmp_path: Path, bucket: Any, s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_secret(tmp_path, "s3-creds", {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"})
    objects: dict[str, bytes] = {
        "docs/a.txt": b"Anchors hold in sand.",
        "docs/guides/b.md": b"# Buoys\n\nRed to port.",
        "docs/report.pdf": pdf(["Harbour report, page one.", "Page two: the breakwater."]),
        "docs/bundle.zip": zip_file(
            {"one.txt": "First entry.", "two/three.md": "# Three\n\nNested entry.", "../evil.txt": "escape"}
        ),
        "docs/noise.log": b"excluded by the glob",
        "other/outside.txt": b"outside the prefix",
    }
    for key, body in objects.items():
        bucket.put_object(Bucket=BUCKET, Key=key, Body=body)
    for i in range(5):  # enough keys for several listing pages and ingest batches
        bucket.put_object(Bucket=BUCKET, Key=f"docs/many/{i}.txt", Body=f"Note {i} on tides.".encode())
    job = await make_job(s3_spec(s3_endpoint, exclude=["**/*.log"]))

    first = await run_once(pool, job, secrets_dir=tmp_path)
    docs = await documents(pool, job)
    uri = f"s3://{BUCKET}/docs/"
    assert counts(first) == (11, 0, 0, 0, 1)
    assert {u.removeprefix(uri) for u in docs} == {
        "a.txt",
        "guides/b.md",
        "report.pdf",
        "bundle.zip",
        "bundle.zip!/one.txt",
        "bundle.zip!/two/three.md",
        "bundle.zip!/../evil.txt",
        *(f"many/{i}.txt" for i in range(5)),
    }
    etag = bucket.head_object(Bucket=BUCKET, Key="docs/a.txt")["ETag"].strip('"')
    assert docs[uri + "a.txt"]["source_version"] == etag
    assert docs[uri + "bundle.zip"]["format"] == "zip"

    caplog.clear()
    second = await run_once(pool, job, secrets_dir=tmp_path)
    assert counts(second) == (0, 0, 11, 0, 1)  # the unchanged archive's failed entry stays failed
    assert object_reads(caplog) == []  # the listing's ETags sufficed: no object was downloaded

    bucket.put_object(Bucket=BUCKET, Key="docs/guides/b.md", Body=b"# Buoys\n\nGreen to starboard.")
    bucket.delete_object(Bucket=BUCKET, Key="docs/a.txt")
    bucket.put_object(Bucket=BUCKET, Key="docs/c.txt", Body=b"Currents turn with the tide.")
    bucket.put_object(
        Bucket=BUCKET,
        Key="docs/bundle.zip",
        Body=zip_file({"one.txt": "First entry.", "four.txt": "Fourth entry.", "../evil.txt": "escape"}),
    )
    caplog.clear()
    third = await run_once(pool, job, secrets_dir=tmp_path)
    assert sorted(object_reads(caplog)) == ["docs/bundle.zip", "docs/c.txt", "docs/guides/b.md"]
    # added c.txt and bundle!/four.txt; updated b.md and bundle.zip; unchanged report, one.txt and
    # the five notes; deleted a.txt and bundle!/two/three.md
    assert counts(third) == (2, 2, 7, 2, 1)
    assert uri + "bundle.zip!/two/three.md" not in await documents(pool, job)


async def test_a_missing_secret_stops_the_worker_with_a_reason(
    pool: Pool, make_job: JobFactory, tmp_path: Path, s3_endpoint: str
) -> None:
    write_secret(tmp_path, "s3-creds", {"AWS_ACCESS_KEY_ID": "only-half"})
    job = await make_job(s3_spec(s3_endpoint))
    await runs.start_run(pool, job, reason="test")
    worker = Worker(DirectStore(pool, job.uid), volume_root=Path("/"), secrets_dir=tmp_path)
    assert await worker.run() == EXIT_BAD_SOURCE


def test_credentials_come_from_the_secret_folder(tmp_path: Path) -> None:
    write_secret(tmp_path, "s3-creds", {"AWS_ACCESS_KEY_ID": "id"})
    with pytest.raises(MissingSecret, match="has no key AWS_SECRET_ACCESS_KEY"):
        read_secret(tmp_path, "s3-creds", required=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    with pytest.raises(MissingSecret, match="is not mounted"):
        read_secret(tmp_path, "absent")


async def test_object_metadata_and_tags_are_recorded(
    pool: Pool, make_job: JobFactory, tmp_path: Path, bucket: Any, s3_endpoint: str
) -> None:
    write_secret(tmp_path, "s3-creds", {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"})
    bucket.put_object(
        Bucket=BUCKET,
        Key="docs/tagged.txt",
        Body=b"The pilot boat guides ships through the narrow channel at high tide.",
        ContentLanguage="en-GB",
        Metadata={"department": "harbour"},
        Tagging="team=pilots&tier=gold",
    )
    job = await make_job(s3_spec(s3_endpoint))
    await run_once(pool, job, secrets_dir=tmp_path)
    meta = await pool.fetchval("SELECT metadata FROM headrace.documents WHERE job_uid = $1", job.uid)
    assert meta["objectMetadata"] == {"department": "harbour"}
    assert meta["tags"] == {"team": "pilots", "tier": "gold"}
    assert meta["language"] == "en" and meta["modified"].endswith("Z")
