"""A LlamaIndex retriever over Headrace's search API, for RAG apps built on LlamaIndex.

Optional: needs the `llamaindex` extra (`pip install 'headrace[llamaindex]'`, which brings
llama-index-core). Each hit becomes a `NodeWithScore`: a `TextNode` holding the whole passage, whose id
is `headrace:<chunkId>` and whose metadata names where it came from, and the hit's score.

    retriever = HeadraceRetriever("http://headrace-api.headrace", namespaces=["docs-team"], k=5)
    nodes = retriever.retrieve("how do I roll back a release")
"""

from pathlib import Path
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from headrace.api.schemas import SearchHit
from headrace.client import AsyncClient, Client


class HeadraceRetriever(BaseRetriever):
    """The `k` best passages for a query, from `POST /v1/search` with the given filters."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        k: int = 4,
        namespaces: list[str] | None = None,
        job: str | None = None,
        uri_prefix: str | None = None,
        filter: dict[str, Any] | None = None,
        mode: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.base_url = base_url
        self.credentials: dict[str, Any] = {"token": token, "token_file": token_file}
        self.search_options: dict[str, Any] = {
            "namespaces": namespaces,
            "job": job,
            "uri_prefix": uri_prefix,
            "metadata": filter,
            "mode": mode,
            "limit": k,
        }

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        with Client(self.base_url, **self.credentials) as client:
            return [as_node(hit) for hit in client.search(query_bundle.query_str, **self.search_options).items]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        async with AsyncClient(self.base_url, **self.credentials) as client:
            page = await client.search(query_bundle.query_str, **self.search_options)
            return [as_node(hit) for hit in page.items]


def as_node(hit: SearchHit) -> NodeWithScore:
    source = {"namespace": hit.namespace, "job": hit.job, "uri": hit.uri, "title": hit.title}
    where: dict[str, Any] = {"chunkId": hit.chunk_id, "chunk": hit.chunk, "page": hit.page}
    where |= {"headingPath": hit.heading_path} if hit.heading_path else {}
    node = TextNode(id_=f"headrace:{hit.chunk_id}", text=hit.text, metadata={**hit.metadata, **source, **where})
    return NodeWithScore(node=node, score=hit.score)
