"""Hostile text in a real browser: every main page of a project whose names, guidelines, items,
notes and rules are XSS payloads opens no dialog and grows no element from the payload.

The DOM check matters on its own: the CSP would stop an injected inline script anyway, so a
dialog that does not open proves less than a payload that never became an element."""

import pytest

from tests import test_security
from tests.browser import output_dir
from tests.test_security import PASSWORD, hostile_pages

hostile_project = test_security.hostile_project  # the same hostile data the page tests use

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Elements the payloads would create if any page rendered them as markup.
INJECTED = "() => document.querySelectorAll('img[src=x], svg[onload], img[onerror], script:not([src])').length"


def test_it_opens_no_dialog_on_any_page_with_hostile_text(
    chromium, live_server, hostile_project, request
):
    project, admin = hostile_project
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)  # a busy CI machine; nothing here waits on purpose
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append((page.url, dialog.message)), dialog.dismiss()))

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", admin.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    visited = []
    for path in hostile_pages(project.slug):
        if path.endswith("/next/"):
            continue  # an htmx fragment: the annotate page loads it into the page it is part of
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        assert page.evaluate(INJECTED) == 0, f"{path} rendered a payload as markup"
        visited.append(path)
    page.screenshot(path=str(output_dir(request.node.name) / "last-page.png"))
    # The annotate page must actually show the hostile item, or the check above shows little.
    page.goto(f"{live_server.url}/p/{project.slug}/annotate/")
    page.wait_for_load_state("networkidle")
    assert "onerror=alert('title')" in page.content().replace("&#x27;", "'").replace(
        "&lt;", "<"
    ).replace("&gt;", ">")
    context.close()

    assert len(visited) == len(hostile_pages(project.slug)) - 1
    assert dialogs == []
