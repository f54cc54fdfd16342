"""Fuzz the gateway from its own OpenAPI schema: no 500s, answers as documented.

Schema-valid bodies may still be rejected (422): the contract has rules JSON Schema
cannot state (a real calendar date, a currency with an exchange rate), so the check that
every schema-valid request is accepted is left out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from shoplake.gateway.app import create_app
from shoplake.settings import Settings
from shoplake.transport import open_transport


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else b""


_home = Path(tempfile.mkdtemp(prefix="shoplake-fuzz-"))
_settings = Settings(home=_home, gateway={"auth": False})
app = create_app(_settings, open_transport(_settings))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_gateway_answers_every_generated_request_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
