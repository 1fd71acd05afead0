"""How Headrace's HTTP clients of a service keep their connections: one definition for them all.

A client of one service (the Kubernetes API server, the reranker, an embedding endpoint, the Headrace
API itself for the SDK) asks it again and again, in bursts. httpx keeps only 20 idle connections by
default, so after a burst wider than that most connections were closed, and the next burst's requests
paid a new TCP (and TLS) handshake each, on the service's CPU as much as ours.
"""

import httpx

CONNECTIONS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
"""At most 100 requests in flight to the service, and every connection kept for the next request: the
operator's TLS handshakes for 100 new IngestionJobs went 214 -> 74 when the Kubernetes client kept them
all (docs/benchmarks.md, issue 26 item 1). It now speaks HTTP/2 (`KubeApi.open`): one connection carries its calls."""
