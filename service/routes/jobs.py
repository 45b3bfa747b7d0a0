"""Job status, listing, results and cancellation, all read from our own Redis records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from service.context import Caller, Context, get_context
from service.problems import ApiError, job_not_found, problem_responses
from worker.runtime.jobs import Job, State
from worker.runtime.storage import is_job_id
from worker.runtime.watch import STOP_SIGNAL

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(401, 429, 503))
MAX_OFFSET = 1_000_000  # far past any retention; keeps Redis's range arithmetic in range


class JobError(BaseModel):
    code: str
    message: str


class JobLinks(BaseModel):
    self: str
    artifact: str | None
    report: str | None
    report_html: str | None


class JobView(BaseModel):
    id: str
    state: State
    stage: str | None
    progress: int
    attempts: int = Field(description="runs started (more than one: a run was lost and the job re-run)")
    worker: str | None = Field(description="host:pid of the process that runs (or last ran) the job")
    model_name: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    links: JobLinks
    trial: dict[str, Any] | None = Field(
        None,
        description="a search's latest trial: trial, of, phase, metric, meets, best (the best metric so far)",
    )


class JobPage(BaseModel):
    items: list[JobView]
    total: int
    offset: int
    limit: int
    next: str | None


def _file(media_type: str, string_format: str | None) -> dict:
    """The OpenAPI 200 of a route that answers a file (its errors stay JSON problems)."""
    schema = {"type": "string", **({"format": string_format} if string_format else {})}
    return {"description": "the file", "content": {media_type: {"schema": schema}}}


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _view(request: Request, job: Job) -> JobView:
    done = job.state == "succeeded"

    def link(name: str) -> str | None:
        return str(request.url_for(name, job_id=job.id)) if done else None

    return JobView(
        id=job.id,
        state=job.state,
        stage=job.stage,
        progress=job.progress,
        attempts=job.attempt,
        worker=job.run_by or None,
        model_name=job.model_name,
        created_at=_time(job.created_at),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
        trial=job.trial,
        links=JobLinks(
            self=str(request.url_for("get_job", job_id=job.id)),
            artifact=link("get_artifact"),
            report=link("get_report"),
            report_html=link("get_report_html"),
        ),
    )


def _job(ctx: Context, job_id: str, owner: str | None) -> Job:
    """The caller's job; another owner's job is as unknown as a job that does not exist."""
    job = ctx.jobs.get(job_id) if is_job_id(job_id) else None
    if job is None or job.owner != owner:
        raise job_not_found(job_id)
    return job


def _result_file(ctx: Context, job_id: str, owner: str | None, path_of: str) -> Path:
    """The file of a succeeded job; 409 while the job is not finished, 404 when it has none."""
    job = _job(ctx, job_id, owner)
    if not job.finished:
        raise ApiError(
            409, "E_NOT_FINISHED", f"job {job_id} is {job.state}; poll GET /jobs/{job_id}", state=job.state
        )
    path = getattr(ctx.blobs, path_of)(job_id)
    if job.state != "succeeded" or not path.is_file():
        reason = f" ({job.error_code}: {job.error_message})" if job.error_code else ""
        raise ApiError(
            404, "E_NO_RESULT", f"job {job_id} is {job.state}{reason}: it has no {path.name}", state=job.state
        )
    return path


@router.get(
    "", response_model=JobPage, summary="Your recent jobs, newest first", responses=problem_responses(422)
)
def list_jobs(
    request: Request,
    ctx: Annotated[Context, Depends(get_context)],
    owner: Caller,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobPage:
    jobs, total = ctx.jobs.recent(offset, limit, owner=owner or "")
    following = offset + limit
    next_url = (
        str(request.url.include_query_params(offset=following, limit=limit)) if following < total else None
    )
    return JobPage(
        items=[_view(request, j) for j in jobs], total=total, offset=offset, limit=limit, next=next_url
    )


@router.get(
    "/{job_id}",
    response_model=JobView,
    name="get_job",
    summary="A job's state and progress",
    responses=problem_responses(404),
)
def get_job(
    job_id: str, request: Request, ctx: Annotated[Context, Depends(get_context)], owner: Caller
) -> JobView:
    return _view(request, _job(ctx, job_id, owner))


@router.get(
    "/{job_id}/artifact",
    name="get_artifact",
    response_model=None,
    summary="The compiled shared library (load with tvm.runtime.load_module)",
    responses={200: _file("application/octet-stream", "binary"), **problem_responses(404, 409)},
)
def get_artifact(job_id: str, ctx: Annotated[Context, Depends(get_context)], owner: Caller) -> FileResponse:
    path = _result_file(ctx, job_id, owner, "artifact_path")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{job_id}.so")


@router.get(
    "/{job_id}/report",
    name="get_report",
    response_model=None,
    summary="The verification report (JSON; schema at GET /report/schema)",
    responses=problem_responses(404, 409),
)
def get_report(job_id: str, ctx: Annotated[Context, Depends(get_context)], owner: Caller) -> FileResponse:
    return FileResponse(_result_file(ctx, job_id, owner, "report_path"), media_type="application/json")


@router.get(
    "/{job_id}/report.html",
    name="get_report_html",
    response_model=None,
    summary="The verification report as a readable page",
    responses={200: _file("text/html", None), **problem_responses(404, 409)},
)
def get_report_html(
    job_id: str, ctx: Annotated[Context, Depends(get_context)], owner: Caller
) -> HTMLResponse:
    from worker.report.html import render_report_html

    report = json.loads(_result_file(ctx, job_id, owner, "report_path").read_text())
    return HTMLResponse(render_report_html(report))


@router.delete(
    "/{job_id}",
    name="delete_job",
    response_model=JobView,
    responses={204: {"description": "a finished job and its files were deleted"}, **problem_responses(404)},
    summary="Cancel a queued or running job, or delete a finished one; its files go either way",
)
def delete_job(
    job_id: str, request: Request, ctx: Annotated[Context, Depends(get_context)], owner: Caller
) -> JobView | Response:
    _job(ctx, job_id, owner)
    if ctx.jobs.cancel(job_id):
        # The stop signal raises JobCancelled in the job's process (worker/runtime/watch.py), which
        # cleans up and takes the next job; a worker that misses it stops at its next heartbeat.
        ctx.celery.control.revoke(job_id, terminate=True, signal=STOP_SIGNAL.name)
        ctx.blobs.delete(job_id)
        return _view(request, _job(ctx, job_id, owner))
    ctx.jobs.delete(job_id)
    ctx.blobs.delete(job_id)
    return Response(status_code=204)
