"""A LangChain retriever over Headrace's search API, for RAG apps built on LangChain.

Optional: needs the `langchain` extra (`pip install 'headrace[langchain]'`, which brings langchain-core).
Each hit becomes a `Document` whose `page_content` is the whole passage and whose metadata names where
it came from (namespace, job, uri, title, chunkId, score) beside the document's own metadata.

    retriever = HeadraceRetriever(base_url="http://headrace-api.headrace", namespaces=["docs-team"], k=5)
    docs = retriever.invoke("how do I roll back a release")
"""

from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from headrace.api.schemas import SearchHit
from headrace.client import AsyncClient, Client


class HeadraceRetriever(BaseRetriever):
    """The `k` best passages for a query, from `POST /v1/search` with the given filters."""

    base_url: str
    """The API, e.g. `http://headrace-api.headrace` in the cluster."""
    token: str | None = None
    """A bearer token; by default the pod's ServiceAccount token (or `token_file`)."""
    token_file: Path | None = None
    k: int = 4
    namespaces: list[str] | None = None
    job: str | None = None
    uri_prefix: str | None = None
    filter: dict[str, Any] | None = None
    """Only documents whose metadata holds all these key-value pairs."""
    mode: str | None = None
    """keyword, semantic or hybrid; by default the API's choice."""

    def _options(self) -> dict[str, Any]:
        return {"token": self.token, "token_file": self.token_file}

    def _search(self) -> dict[str, Any]:
        filters = {"namespaces": self.namespaces, "job": self.job, "uri_prefix": self.uri_prefix}
        return {**filters, "metadata": self.filter, "mode": self.mode, "limit": self.k}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        with Client(self.base_url, **self._options()) as client:
            return [as_document(hit) for hit in client.search(query, **self._search()).items]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        async with AsyncClient(self.base_url, **self._options()) as client:
            return [as_document(hit) for hit in (await client.search(query, **self._search())).items]


def as_document(hit: SearchHit) -> Document:
    source = {"namespace": hit.namespace, "job": hit.job, "uri": hit.uri, "title": hit.title}
    where: dict[str, Any] = {"chunkId": hit.chunk_id, "chunk": hit.chunk, "page": hit.page, "score": hit.score}
    where |= {"headingPath": hit.heading_path} if hit.heading_path else {}
    return Document(page_content=hit.text, metadata={**hit.metadata, **source, **where})
