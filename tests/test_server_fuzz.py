"""Property-based fuzz of the server's own OpenAPI schema (schemathesis): whatever a client
sends, valid or not, the server answers without a 5xx and with the documented shapes.

Bounded: a few examples per operation, and the server caps generation at 8 tokens.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from llamapy.server import ServerLauncher


@pytest.fixture(scope="module")
def server(model_path):
    with ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=2, n_ctx=2048, n_threads=1,
                        extra_args=["--max-tokens-limit", "8", "--log-level", "warning"]) as s:
        yield s


@pytest.fixture(scope="module")
def api(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case, server):
    response = case.call_and_validate(base_url=server.url, checks=[not_a_server_error, response_schema_conformance],
                                      timeout=120)
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}, response.text
