"""The OpenAPI schema and the Swagger UI: generated cleanly, served to anyone, and working offline
(every asset the docs page loads comes from this server)."""
import re
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client

from labeling.urls import api_urlpatterns

pytestmark = pytest.mark.django_db


def test_it_generates_the_schema_without_warnings_or_errors(tmp_path):
    # --fail-on-warn turns every generator warning (an untyped field, a guessed path parameter,
    # a view it cannot introspect) into an error; --validate checks the result against OpenAPI 3.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/projects/{slug}/claim/" in (tmp_path / "schema.yaml").read_text()


def openapi_path(route: str) -> str:
    return "/api/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_it_serves_a_schema_that_lists_every_api_endpoint():
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {openapi_path(str(p.pattern)) for p in api_urlpatterns} <= set(paths)
    submit = paths["/api/projects/{slug}/annotations/"]["post"]
    assert {"201", "200", "400", "401", "404", "409"} <= set(submit["responses"])
    assert "tokenAuth" in response.json()["components"]["securitySchemes"]


class _Assets(HTMLParser):
    """Every URL a page loads or links to, and how many of its scripts are inline."""

    def __init__(self):
        super().__init__()
        self.urls, self.inline_scripts = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[name] for name in ("src", "href") if attrs.get(name)]
        self.inline_scripts += tag == "script" and "src" not in attrs


def test_it_serves_the_docs_from_local_assets_only():
    client = Client()
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assets = _Assets()
    assets.feed(page.content.decode())
    assert len(assets.urls) >= 4  # favicon, stylesheet, two bundles, the start-up script
    for url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not served by this server"
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), f"{url} is not among our static files"
        else:
            assert client.get(url).status_code == 200, url
    # The enforced CSP allows no inline script: the start-up code comes as a file.
    assert assets.inline_scripts == 0
    script = client.get("/api/docs/", {"script": ""})
    assert script["Content-Type"].startswith("application/javascript")
    assert re.findall(r"https?://", script.content.decode()) == []
    assert '"/api/schema/"' in script.content.decode()
