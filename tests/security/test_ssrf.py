"""A tenant pointing a source at what it must not reach: private addresses in disguise, an S3 endpoint
inside the cluster, and the node's own cloud credentials."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.model import S3Source
from headrace.worker.errors import DocumentError
from headrace.worker.sources.addresses import embedded_ipv4, forbidden_address
from headrace.worker.sources.s3 import BucketObjects
from tests.sources.webserver import Site, serve


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052) of 169.254.169.254, the cloud metadata endpoint
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (RFC 8215)
        "::169.254.169.254",  # IPv4-compatible
        "::a00:1",  # IPv4-compatible 10.0.0.1
        "::8.8.8.8",  # IPv4-compatible, deprecated: refused whatever it carries
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:10.1.2.3",
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45 (documentation range)
        "fe80::1%eth0",
        "fd00:ec2::254",  # the EC2 IPv6 metadata endpoint (unique-local)
    ],
)
def test_private_addresses_in_disguise_are_refused(address: str) -> None:
    assert forbidden_address(address)


@pytest.mark.parametrize(
    "address", ["64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1", "2606:4700:4700::1111", "93.184.216.34"]
)
def test_public_addresses_pass(address: str) -> None:
    assert not forbidden_address(address)


def test_the_ipv4_inside_is_what_is_judged() -> None:
    from ipaddress import IPv4Address, IPv6Address

    assert IPv4Address("169.254.169.254") in embedded_ipv4(IPv6Address("64:ff9b::a9fe:a9fe"))


def s3(endpoint: str, **fields: object) -> S3Source:
    return S3Source.model_validate({"bucket": "tenant-docs", "endpoint": endpoint, "pathStyle": True, **fields})


@pytest.fixture
def endpoint() -> Iterator[Site]:
    """A server on loopback standing for S3; it logs each request's headers and answers 404."""
    with serve(Site()) as site:
        yield site


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_an_s3_endpoint_on_a_private_address_is_refused(endpoint: Site, host: str, tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="non-public address"):
        BucketObjects(s3(endpoint.url("", host=host)), secrets_dir=tmp_path)
    assert not endpoint.log


async def list_once(source: BucketObjects) -> None:
    try:
        async for _ in source.pages():
            break
    except Exception:  # the fake endpoint answers 404; its log is what the test reads
        pass
    finally:
        await source.close()


async def test_without_a_secret_requests_are_anonymous_even_where_the_node_has_credentials(
    endpoint: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Standing for the node's instance role at the end of the default chain.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANODEROLE0000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "node-role-secret")
    await list_once(BucketObjects(s3(endpoint.url(""), allowPrivateNetworks=True), secrets_dir=tmp_path))
    assert endpoint.log, "the request was not sent"
    assert all("Authorization" not in headers for _, _, headers in endpoint.log)


async def test_ambient_credentials_are_an_explicit_opt_in(
    endpoint: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPODIDENTITY00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "pod-identity-secret")
    source = BucketObjects(
        s3(endpoint.url(""), allowPrivateNetworks=True, ambientCredentials=True), secrets_dir=tmp_path
    )
    await list_once(source)
    assert any("AKIAPODIDENTITY00000" in headers.get("Authorization", "") for _, _, headers in endpoint.log)
