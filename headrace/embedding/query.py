"""The query embedder of search, for the API and `headrace search` alike: a query's vector in the
vector space of the jobs it searches.

A space embedded by the built-in model gets the query embedded in-process. A space embedded by an
endpoint model needs the caller's own vector: neither the API nor the CLI calls a tenant's endpoint
(its credentials are the tenant's, and a search must not spend them).
"""

from collections.abc import Sequence
from typing import Protocol

from headrace.embedding.builtin import embed_query
from headrace.model.spec import BUILTIN_EMBEDDING_MODEL


class Space(Protocol):
    """A vector space: the model its vectors come from, and their dimensions."""

    @property
    def model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...


class EndpointModel(ValueError):
    """The searched jobs are embedded by an endpoint model: the caller must embed the query with it."""

    def __init__(self, model: str) -> None:
        super().__init__(f"the searched jobs are embedded by the endpoint model {model}")
        self.model = model


class WrongDimensions(ValueError):
    """The caller's vector does not have the dimensions of the searched jobs' model."""

    def __init__(self, given: int, space: Space) -> None:
        super().__init__(
            f"vector has {given} dimensions; the searched jobs' model {space.model} has {space.dimensions}"
        )


class NoDirection(ValueError):
    """The caller's vector is all zeros: it has no direction, so its cosine similarity to anything is
    undefined (pgvector answers NaN)."""

    def __init__(self) -> None:
        super().__init__("vector is all zeros: it has no direction to compare passages by")


async def query_vector(space: Space, text: str, *, given: Sequence[float] | None = None) -> Sequence[float]:
    """The query's vector in `space`: the one the caller gave, else the built-in model's. Raises
    WrongDimensions for a given vector that does not fit, NoDirection for a given zero vector,
    EndpointModel when only the caller can embed the query."""
    if given is not None:
        if len(given) != space.dimensions:
            raise WrongDimensions(len(given), space)
        if not any(given):
            raise NoDirection()
        return given
    if space.model != BUILTIN_EMBEDDING_MODEL:
        raise EndpointModel(space.model)
    return await embed_query(text)  # a query is short: cheap enough for the event loop
