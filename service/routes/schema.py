"""The qconfig JSON schema, so clients can build and check a qconfig before submitting."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from worker.qconfig import qconfig_schema

router = APIRouter(tags=["qconfig"])


@router.get("/qconfig/schema", summary="JSON schema of the qconfig form field (Relay's names and defaults)")
def get_schema() -> dict[str, Any]:
    return qconfig_schema()
