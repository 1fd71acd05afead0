"""The base every IngestionJob model derives from: camelCase on the wire, unknown fields rejected."""

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    """A model that reads and writes Kubernetes-style camelCase and refuses fields it does not know."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, object]:
        """The object as it appears in a manifest or in the Kubernetes API."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def field_errors(exc: ValidationError, *, prefix: str = "") -> list[str]:
    """One line per problem, each naming the field the way a manifest spells it (`spec.chunking.overlap`)."""
    lines = []
    for error in exc.errors():
        path = prefix
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path else str(part)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{path or '<root>'}: {message}")
    return lines
