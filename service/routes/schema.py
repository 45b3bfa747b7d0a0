"""The JSON schemas of the qconfig and of the report, so clients can build and check a qconfig
before submitting and read a report with a schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.problems import problem_responses
from worker.qconfig import qconfig_schema
from worker.report.schema import report_schema

router = APIRouter(tags=["schemas"], responses=problem_responses(401, 429))


@router.get("/qconfig/schema", summary="JSON schema of the qconfig form field (Relay's names and defaults)")
def get_qconfig_schema() -> dict[str, Any]:
    return qconfig_schema()


@router.get("/report/schema", summary="JSON schema of report.json (GET /jobs/{id}/report)")
def get_report_schema() -> dict[str, Any]:
    return report_schema()
