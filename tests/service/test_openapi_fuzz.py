"""A bounded schemathesis run against /openapi.json: whatever a client sends within (or against)
the documented API, the answer is never a 500 and always matches the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.app import create_app

pytestmark = pytest.mark.redis

EXAMPLES = 25  # per operation: a bounded run
TOKEN = "fuzz-token"


def test_the_api_answers_as_documented(make_settings) -> None:
    limits = {"rate_limit": 0, "max_model_bytes": 64 * 1024, "max_calibration_bytes": 64 * 1024}
    app = create_app(make_settings(api_token=TOKEN, **limits))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # /readyz is 503 by design here (no worker): it takes no input to fuzz anyway
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path != "/readyz"]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def answers_as_documented(case) -> None:
            # A schema-valid model need not be a valid ONNX file: 422 is the right answer to it.
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=[positive_data_acceptance]
            )

        answers_as_documented()
