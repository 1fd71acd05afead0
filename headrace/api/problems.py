"""Errors as RFC 9457 problem details: every 4xx and 5xx answer is `application/problem+json`."""

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from headrace.store.cursors import InvalidCursor
from headrace.store.db import PoolExhausted

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldProblem(BaseModel):
    """One invalid part of a request."""

    field: str
    """Where: `query.limit`, `body.namespaces[0]`, `header.last-event-id`."""
    message: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Forbidden",
                    "status": 403,
                    "detail": "not allowed to get ingestionjobs.headrace.io in namespace 'team-b'",
                    "instance": "/v1/namespaces/team-b/ingestionjobs",
                }
            ]
        }
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    """For 422: each invalid field with its message."""


class ProblemError(Exception):
    """Raise to answer with a problem; `headers` go on the response (Retry-After, WWW-Authenticate)."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem_response(
    status: int,
    detail: str | None,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: list[FieldProblem] | None = None,
) -> JSONResponse:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, instance=instance, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def _location(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, exc.detail, instance=request.url.path, headers=exc.headers)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else None
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and detail is None:
        detail = f"no route {request.url.path}"
    if exc.status_code == 405:
        # Starlette names the methods of the first route matching the path; a path can have several.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI schema lists for the request's path (its templates, matched segment-wise)."""
    allowed: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            allowed |= {method.upper() for method in operations}
    return sorted(allowed)


async def _on_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldProblem(
            field=_location(tuple(e.get("loc", ()))), message=str(e.get("msg", "")).removeprefix("Value error, ")
        )
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return problem_response(422, detail, instance=request.url.path, errors=errors)


async def _on_invalid_cursor(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(400, str(exc), instance=request.url.path)


async def _on_exhausted(request: Request, exc: Exception) -> JSONResponse:
    log.warning("Refused request", extra={"path": request.url.path, "reason": str(exc)})
    return problem_response(
        503, "the database is busy; retry shortly", instance=request.url.path, headers={"Retry-After": "2"}
    )


async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
    log.error("Failed request", exc_info=exc, extra={"path": request.url.path, "method": request.method})
    return problem_response(500, "the server failed to answer; the error is in its log", instance=request.url.path)


def install(app: FastAPI) -> None:
    """Answer every error the app or its routes raise with problem details."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(InvalidCursor, _on_invalid_cursor)
    app.add_exception_handler(PoolExhausted, _on_exhausted)
    app.add_exception_handler(Exception, _on_crash)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting these problem statuses."""
    return {
        status: {"model": Problem, "description": HTTPStatus(status).phrase, "content": {PROBLEM_JSON: {}}}
        for status in statuses
    }
