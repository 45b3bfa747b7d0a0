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
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.errors import QuantizeError

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


async def _on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "E_NOT_FOUND", 405: "E_METHOD", 401: "E_UNAUTHORIZED"}.get(exc.status_code, "E_HTTP")
    return problem(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(QuantizeError, _on_quantize_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
