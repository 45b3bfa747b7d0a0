"""JSON problem bodies ({"code", "message", "detail"}) for every error the API returns.

Pipeline errors (QuantizeError) carry a code and detail, and STATUS_OF_CODE gives their HTTP status;
`ApiError` covers what only HTTP has (404, 409, 413, 401, 503). Handlers turn FastAPI's own errors
into the same shape so a client parses one format.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import KombuError
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.errors import QuantizeError

UNAVAILABLE_RETRY_AFTER = 5  # seconds a client should wait when Redis is unreachable


class Problem(BaseModel):
    """The body of every error response."""

    code: str = Field(description="stable error code, e.g. E_CALIBRATION")
    message: str = Field(description="what is wrong and what to change")
    detail: dict[str, Any] = Field(description="the failing field, input or op, and limits")


_DESCRIPTIONS = {
    401: "no or a wrong bearer token",
    404: "no such job (or not yours)",
    409: "the job is not finished",
    413: "an upload is over its size limit",
    422: "bad input: the field, input or op is named in detail",
    429: "rate limited: retry after Retry-After seconds",
    503: "Redis or the job queue is unreachable, or no worker answers",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each with the Problem body."""
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


#: HTTP status of every pipeline error code: what the user sent is wrong (422) or we failed (500).
STATUS_OF_CODE: dict[str, int] = {
    "E_QCONFIG": 422,
    "E_MODEL_INVALID": 422,
    "E_EXTERNAL_DATA": 422,
    "E_CALIBRATION": 422,
    "E_IMPORT": 422,
    "E_UNSUPPORTED_OP": 422,
    "E_NOT_FULLY_INTEGRAL": 422,
    "E_BUILD": 500,
    "E_INTERNAL": 500,
}


class ApiError(StarletteHTTPException):
    """An HTTPException with a stable code, so FastAPI passes it through untouched even when it is
    raised while the request body is being read (BodyLimit) instead of turning it into a 400."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **detail: Any
    ) -> None:
        super().__init__(status, message, headers)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.detail = detail


def problem(
    status: int, code: str, message: str, detail: dict[str, Any] | None = None, **kw: Any
) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "detail": detail or {}}, status_code=status, **kw)


def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, "E_NOT_FOUND", f"no job with id {job_id!r} (it may have expired)", job_id=job_id)


def too_large(field: str, limit: int) -> ApiError:
    return ApiError(
        413, "E_TOO_LARGE", f"{field!r} is larger than the limit of {limit} bytes", field=field, limit=limit
    )


async def _on_api_error(_: Request, exc: ApiError) -> JSONResponse:
    return problem(exc.status, exc.code, exc.message, exc.detail, headers=exc.headers)


async def _on_quantize_error(_: Request, exc: QuantizeError) -> JSONResponse:
    return problem(STATUS_OF_CODE.get(exc.code, 500), exc.code, exc.message, exc.detail)


async def _on_request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header"))
    return problem(422, "E_REQUEST", f"{field or 'request'}: {first.get('msg')}", {"field": field})


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "E_NOT_FOUND", 405: "E_METHOD", 401: "E_UNAUTHORIZED"}.get(exc.status_code, "E_HTTP")
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route matching the path only (GET of
        # /jobs/{id}, not its DELETE): list every route's.
        headers["Allow"] = ", ".join(sorted(_methods_of(request.app.routes, request.url.path)))
    return problem(exc.status_code, code, str(exc.detail), headers=headers or None)


def _methods_of(routes: list[Any], path: str) -> set[str]:
    """Every method some route (included routers walked into) serves at `path`."""
    methods: set[str] = set()
    for route in routes:
        inner = getattr(route, "original_router", None) or getattr(route, "app", None)
        if hasattr(inner, "routes") and not hasattr(route, "path_regex"):
            methods |= _methods_of(inner.routes, path)
        elif getattr(route, "methods", None) and route.path_regex.match(path):
            methods |= set(route.methods)
    return methods


async def _on_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return problem(
        503,
        "E_UNAVAILABLE",
        f"the job store or queue is unreachable ({type(exc).__name__}); try again shortly",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(QuantizeError, _on_quantize_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RedisError, _on_unavailable)
    app.add_exception_handler(KombuError, _on_unavailable)
