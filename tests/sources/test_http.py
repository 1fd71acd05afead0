"""The HTTP source against a real server on loopback: sitemaps, conditional requests, mirror, and guards."""

import asyncio
import gzip
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from headrace.model import IngestionJobSpec
from headrace.store.db import Pool
from headrace.worker.sources.http import forbidden_address, parse_sitemap
from tests.conftest import JobFactory
from tests.sources.helpers import counts, documents, run_once, write_secret
from tests.sources.webserver import Site, dribble, endless, redirect, require_header, serve
from tests.worker.samples import pdf

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(site: Site, paths: list[str]) -> bytes:
    return f"<urlset {NS}>{''.join(f'<url><loc>{site.url(p)}</loc></url>' for p in paths)}</urlset>".encode()


def http_spec(limits: dict[str, object] | None = None, **http: object) -> IngestionJobSpec:
    """A mirror job over HTTP that may reach loopback (where the test server is) unless told otherwise."""
    return IngestionJobSpec.model_validate(
        {
            "source": {"http": {"allowPrivateNetworks": True, **http}},
            "sync": "mirror",
            "workers": {"batchSize": 3},
            "limits": limits or {},
        }
    )


async def test_sitemaps_conditional_requests_and_mirror(pool: Pool, make_job: JobFactory, tmp_path: Path) -> None:
    write_secret(tmp_path, "web-headers", {"X-Token": "s3cret"})
    with serve(Site()) as site:
        site.bodies.update(
            {
                "/a.html": (b"<html><body><p>Anchors hold in sand.</p></body></html>", "text/html"),
                "/b": (b"# Buoys\n\nRed to port.", "text/markdown; charset=utf-8"),
                "/c": (b"<p>Currents turn with the tide.</p>", "text/html"),
                "/report.pdf": (pdf(["Harbour report, page one."]), "application/pdf"),
                "/sitemap-1.xml": (urlset(site, ["/a.html", "/b"]), "application/xml"),
                "/sitemap-2.xml.gz": (gzip.compress(urlset(site, ["/c", "/report.pdf"])), "application/gzip"),
            }
        )
        index = f"<sitemapindex {NS}><sitemap><loc>/sitemap-1.xml</loc></sitemap>"
        index += f"<sitemap><loc>{site.url('/sitemap-2.xml.gz')}</loc></sitemap></sitemapindex>"
        site.bodies["/index.xml"] = (index.encode(), "application/xml")
        site.handlers["/private"] = require_header("X-Token", "s3cret", b"Members only: the lamp room.")
        spec = http_spec(
            sitemaps=[site.url("/index.xml")], urls=[site.url("/private")], headersSecretRef={"name": "web-headers"}
        )
        job = await make_job(spec)

        first = await run_once(pool, job, secrets_dir=tmp_path)
        assert counts(first) == (5, 0, 0, 0, 0)
        docs = await documents(pool, job)
        assert docs[site.url("/b")]["format"] == "markdown"  # from the Content-Type: the URL has no suffix
        assert docs[site.url("/report.pdf")]["format"] == "pdf"
        assert str(docs[site.url("/a.html")]["source_version"]).startswith('etag:"')

        second = await run_once(pool, job, secrets_dir=tmp_path)
        assert counts(second) == (0, 0, 5, 0, 0)
        assert site.statuses("/a.html") == [200, 304]  # asked conditionally, never downloaded twice

        site.bodies["/b"] = (b"# Buoys\n\nGreen to starboard.", "text/markdown")
        site.bodies["/sitemap-2.xml.gz"] = (gzip.compress(urlset(site, ["/report.pdf"])), "application/gzip")
        third = await run_once(pool, job, secrets_dir=tmp_path)
        assert counts(third) == (0, 1, 3, 1, 0)
        assert site.url("/c") not in await documents(pool, job)


async def test_hostile_servers_fail_documents_with_reasons(pool: Pool, make_job: JobFactory, tmp_path: Path) -> None:
    write_secret(tmp_path, "web-headers", {"X-Token": "s3cret"})
    with serve(Site()) as site:
        site.handlers.update(
            {
                "/slow": dribble(0.2, 1000),
                "/endless": endless,
                "/loop": redirect("/loop"),
                "/to-file": redirect("file:///etc/passwd"),
                "/elsewhere": redirect(site.url("/echo", host="localhost")),
                "/echo": require_header("X-Token", "s3cret", b"leaked"),
            }
        )
        site.bodies["/fine.txt"] = (b"A fine page about lighthouses.", "text/plain")
        paths = ["/slow", "/endless", "/loop", "/to-file", "/missing", "/elsewhere", "/fine.txt"]
        spec = http_spec(
            urls=[site.url(p) for p in paths],
            headersSecretRef={"name": "web-headers"},
            timeoutSeconds=1,
            maxRedirects=3,
            limits={"maxDocumentBytes": 100_000},
        )
        job = await make_job(spec)
        state = await run_once(pool, job, secrets_dir=tmp_path)

    docs = await documents(pool, job)
    errors = {uri.removeprefix(site.url("")): d["error"] for uri, d in docs.items()}
    assert errors["/fine.txt"] is None
    assert "source.http.timeoutSeconds (1s)" in errors["/slow"]
    assert "limits.maxDocumentBytes (100000)" in errors["/endless"]
    assert "source.http.maxRedirects (3)" in errors["/loop"]
    assert "not http or https" in errors["/to-file"]
    assert errors["/missing"] == "HTTP 404 Not Found"
    # The secret header went to 127.0.0.1 only: the redirect to another host arrived without it.
    assert errors["/elsewhere"] == "HTTP 403 Forbidden"
    assert counts(state) == (1, 0, 0, 0, 6)


async def test_private_addresses_are_refused_by_default(pool: Pool, make_job: JobFactory, tmp_path: Path) -> None:
    with serve(Site()) as site:
        site.bodies["/inside.txt"] = (b"cluster-internal", "text/plain")
        urls = [site.url("/inside.txt"), site.url("/inside.txt", host="localhost")]
        spec = http_spec(urls=urls, allowPrivateNetworks=False)
        job = await make_job(spec)
        state = await run_once(pool, job, secrets_dir=tmp_path)
        assert site.log == []  # not one request reached the server
    assert counts(state) == (0, 0, 0, 0, 2)
    for doc in (await documents(pool, job)).values():
        assert "non-public address" in str(doc["error"]) and "allowPrivateNetworks" in str(doc["error"])


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("224.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_non_public_addresses(address: str, forbidden: bool) -> None:
    assert forbidden_address(address) is forbidden


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><urlset/>', "DTDs and entities"),
        (b"<urlset", "invalid XML"),
        (b"<feed/>", "not <urlset> or <sitemapindex>"),
        (b"\x1f\x8b\x08\x00broken", "corrupt gzip"),
    ],
)
def test_bad_sitemaps_are_refused(body: bytes, reason: str) -> None:
    from headrace.worker.errors import DocumentError

    with pytest.raises(DocumentError, match=reason):
        parse_sitemap(body, "http://example.com/sitemap.xml")


async def test_headrace_run_hands_local_secrets_to_its_workers(pool: Pool, dsn: str, tmp_path: Path) -> None:
    write_secret(tmp_path / "secrets", "web-headers", {"X-Token": "s3cret"})
    with serve(Site()) as site:
        site.handlers["/members"] = require_header("X-Token", "s3cret", b"Members only: the lamp room.")
        manifest = tmp_path / "job.yaml"
        manifest.write_text(
            "apiVersion: headrace.io/v1alpha1\nkind: IngestionJob\nmetadata: {name: web, namespace: qa}\n"
            "spec:\n  source:\n    http:\n"
            f"      urls: [{site.url('/members')}]\n"
            "      allowPrivateNetworks: true\n      headersSecretRef: {name: web-headers}\n"
        )
        command = [sys.executable, "-m", "headrace", "run", "-f", str(manifest), "-w", "1"]
        command += ["--secrets-dir", str(tmp_path / "secrets"), "--database-url", dsn]
        done = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL)
        assert await done.wait() == 0
    errors = await pool.fetch("SELECT state, error FROM headrace.documents")
    assert [(r["state"], r["error"]) for r in errors] == [("ingested", None)]


async def test_last_modified_and_content_language_become_metadata(
    pool: Pool, make_job: JobFactory, tmp_path: Path
) -> None:
    body = b"Het loodsschip begeleidt de schepen door het smalle kanaal bij hoog water."

    def dated(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        for name, value in {
            "Content-Type": "text/plain",
            "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
            "Content-Language": "nl-BE",
            "Content-Length": str(len(body)),
        }.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)

    with serve(Site()) as site:
        site.handlers["/pilot"] = dated
        job = await make_job(http_spec(urls=[site.url("/pilot")]))
        await run_once(pool, job, secrets_dir=tmp_path)
    meta = await pool.fetchval("SELECT metadata FROM headrace.documents WHERE job_uid = $1", job.uid)
    assert meta["modified"] == "2015-10-21T07:28:00Z"
    assert meta["language"] == "nl" and meta["contentType"] == "text/plain" and meta["size"] == len(body)
