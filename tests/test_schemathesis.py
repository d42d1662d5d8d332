"""Property-based run of the whole API against its own OpenAPI schema (schemathesis), in process.

An authenticated project admin (token auth) sends generated requests to every operation: no answer
may be a server error, and every answer must match what the schema documents (status code,
content type and body). Bounded and derandomized, so the run is the same every time."""
import io

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from labeling import actions
from labeling.importer import import_items

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# Loaded once at collection, in process: the schema view needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# Valid requests only: a malformed path parameter never reaches the API (Django's URL resolver
# answers it), and the API's own 400s for bad bodies are pinned by the API tests.
schema.config.generation.update(modes=[GenerationMode.POSITIVE], deterministic=True, max_examples=15)


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    # Like Django's test client: a request must not close the test's connection (and with it the
    # transaction the test runs in, or the whole in-memory SQLite database).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def admin_token(project, make_user):
    admin = make_user("api-admin")
    actions.add_member(project, admin, "admin")
    rows = "title,description,tag\n" + "".join(f"Item {i},Text about models {i},mlops\n" for i in range(5))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    return Token.objects.create(user=admin).key


@schema.parametrize()
@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_it_answers_every_generated_request_as_its_schema_says(case, admin_token, project):
    if "slug" in (case.path_parameters or {}):
        # A random slug only ever reaches the 404 of the access check; aim at the real project.
        case.path_parameters["slug"] = project.slug
    case.call_and_validate(headers={"Authorization": f"Token {admin_token}"}, checks=CHECKS)
