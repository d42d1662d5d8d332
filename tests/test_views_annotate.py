"""The annotate page and its htmx endpoints, driven through Django's test client.

Without an HX-Request header every action is a plain form POST answered with a redirect (the page
works without JavaScript); with it, the answer is the card htmx swaps into the slot just left.
"""
import io
import re

import pytest
from django.test import Client

from labeling import actions
from labeling.importer import import_items
from labeling.models import Annotation, Assignment, Item, Project

HTMX = {"HTTP_HX_REQUEST": "true"}
SCRIPT_TITLE = '<script>alert("title")</script><img src=x onerror=alert(1)>'


def load(project, titles):
    rows = "title,description\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}",text of {t}\n' for t in titles)
    import_items(project, io.BytesIO(rows.encode()), "items.csv")


@pytest.fixture
def annotator(project, member):
    # No known-gold checks mixed in: the queue order below is the import order.
    project.honeypot_percent = 0
    project.save()
    load(project, [f"Item {i}" for i in range(6)])
    return member("annotator")


@pytest.fixture
def client_for():
    def make(membership, **kwargs):
        client = Client(**kwargs)
        client.force_login(membership.user)
        return client

    return make


def url(name, project):
    return f"/p/{project.slug}/annotate/{name}" if name else f"/p/{project.slug}/annotate/"


def item_id(project, title):
    return Item.objects.get(project=project, title=title).id


def category(project, name="computer-vision"):
    return project.categories.get(name=name)


def cards(html: str) -> list[int]:
    """Item ids of the cards in a page or partial, in document order."""
    return [int(x) for x in re.findall(r'class="item-card" data-item-id="(\d+)"', html)]


def form_fields(html: str, item: int) -> dict:
    """The label form's hidden fields for one card, as the browser would post them."""
    card = html[html.index(f'data-item-id="{item}"'):]
    return {
        "item": str(item),
        "request_id": re.search(r'name="request_id" value="(\w+)"', card).group(1),
        "duration_ms": "1200",
    }


# --- the page -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_the_first_item_and_prefetches_the_next_hidden(project, annotator, client_for):
    response = client_for(annotator).get(url("", project))
    html = response.content.decode()
    assert response.status_code == 200
    assert cards(html) == [item_id(project, "Item 0"), item_id(project, "Item 1")]
    assert '<div class="slot" hidden>' in html
    for c in project.categories.all():
        assert f'data-key="{c.shortcut}"><kbd>{c.shortcut}</kbd><span>{c.name}</span>' in html


@pytest.mark.django_db
def test_it_shows_the_shortcuts_the_guidelines_and_progress(project, annotator, client_for):
    project.guidelines = "Read **carefully**.\n\n- one\n- two"
    project.progress = {"items": 6, "open": 4, "counted_at": "2025-01-01T00:00:00+00:00"}
    project.save()
    html = client_for(annotator).get(url("", project)).content.decode()
    assert 'id="shortcuts"' in html and "<kbd>?</kbd>" in html and "<kbd>u</kbd>" in html
    assert "<p>Read <strong>carefully</strong>.</p><ul><li>one</li><li>two</li></ul>" in html
    assert "4 of 6 items in the project still need labels" in html
    assert 'data-count="0"' in html


@pytest.mark.django_db
def test_it_counts_todays_labels_of_this_person_only(project, annotator, member, client_for):
    other = member("annotator")
    for who in (annotator, annotator, other):
        lease = actions.claim_next_item(who)
        actions.submit_annotation(who, lease.item_id, [category(project).id], f"r-{lease.pk}")
    html = client_for(annotator).get(url("", project)).content.decode()
    assert 'data-count="2"' in html


@pytest.mark.django_db
def test_it_says_all_done_when_nothing_is_left(project, member, client_for):
    annotator = member("annotator")
    html = client_for(annotator).get(url("", project)).content.decode()
    assert cards(html) == []
    assert "All done for now" in html


# --- without JavaScript: plain POST, redirect ---------------------------------------------------


@pytest.mark.django_db
def test_it_stores_a_plain_form_submit_and_redirects_to_the_next_item(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first, second = cards(html)
    data = {**form_fields(html, first), "category": str(category(project).id)}

    response = client.post(url("submit/", project), data)

    assert response.status_code == 302 and response["Location"] == url("", project)
    annotation = Annotation.objects.get(annotator=annotator.user)
    assert (annotation.item_id, annotation.categories, annotation.duration_ms) == (first, [category(project).id], 1200)
    assert cards(client.get(url("", project)).content.decode())[0] == second


@pytest.mark.django_db
def test_it_skips_with_a_plain_form_post(project, annotator, client_for):
    client = client_for(annotator)
    first, second = cards(client.get(url("", project)).content.decode())

    response = client.post(url("skip/", project), {"item": str(first)})

    assert response.status_code == 302 and response["Location"] == url("", project)
    assert Assignment.objects.get(item_id=first).status == Assignment.Status.SKIPPED
    assert cards(client.get(url("", project)).content.decode())[0] == second


@pytest.mark.django_db
def test_it_undoes_with_a_plain_form_post_and_shows_the_item_again(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first = cards(html)[0]
    client.post(url("submit/", project), {**form_fields(html, first), "category": str(category(project).id)})

    response = client.post(url("undo/", project))

    assert response.status_code == 302 and response["Location"] == url("", project)
    assert not Annotation.objects.exists()
    page = client.get(url("", project)).content.decode()
    assert cards(page)[0] == first
    assert "Your last label was taken back" in page


@pytest.mark.django_db
def test_it_explains_a_refused_plain_submit_on_the_page(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first = cards(html)[0]
    data = {**form_fields(html, first), "category": str(category(project).id)}
    client.post(url("submit/", project), data)

    response = client.post(url("submit/", project), {**data, "request_id": "another-keypress"}, follow=True)

    assert response.redirect_chain == [(url("", project), 302)]
    assert "You have already labeled this item." in response.content.decode()
    assert Annotation.objects.count() == 1


@pytest.mark.django_db
def test_it_stores_a_resent_submit_once(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    data = {**form_fields(html, cards(html)[0]), "category": str(category(project).id)}
    client.post(url("submit/", project), data, **HTMX)
    again = client.post(url("submit/", project), data, **HTMX)
    assert again.status_code == 200
    assert Annotation.objects.count() == 1


@pytest.mark.django_db
def test_it_offers_tick_boxes_and_stores_several_labels_in_a_multi_label_project(project, annotator, client_for):
    project.mode = Project.Mode.MULTI
    project.save()
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    assert html.count('type="checkbox" name="category"') == 2 * project.categories.count()
    ticked = [c.id for c in project.categories.all()][::2]

    response = client.post(url("submit/", project), {**form_fields(html, cards(html)[0]), "category": [str(i) for i in ticked]})

    assert response.status_code == 302
    assert Annotation.objects.get().categories == sorted(ticked)


# --- htmx: the card for the slot just left ------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_an_htmx_submit_with_the_card_the_browser_does_not_hold(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first, second = cards(html)
    data = {**form_fields(html, first), "category": str(category(project).id), "holding": str(second)}

    response = client.post(url("submit/", project), data, **HTMX)

    assert response.status_code == 200
    assert cards(response.content.decode()) == [item_id(project, "Item 2")]
    assert Annotation.objects.get().item_id == first


@pytest.mark.django_db
def test_it_refills_with_the_oldest_lease_when_the_browser_holds_nothing(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first, second = cards(html)
    data = {**form_fields(html, first), "category": str(category(project).id)}
    response = client.post(url("submit/", project), data, **HTMX)
    assert cards(response.content.decode()) == [second]


@pytest.mark.django_db
def test_it_leases_no_more_than_the_prefetch_depth_however_much_the_browser_claims_to_hold(project, annotator, client_for):
    client = client_for(annotator)
    response = client.get(url("next/", project) + "?" + "&".join(f"holding={i}" for i in range(1, 50)), **HTMX)
    assert response.status_code == 200
    assert Assignment.objects.filter(annotator=annotator.user, status=Assignment.Status.LEASED).count() == 2


@pytest.mark.django_db
def test_it_answers_an_htmx_skip_with_the_next_card(project, annotator, client_for):
    client = client_for(annotator)
    first, second = cards(client.get(url("", project)).content.decode())

    response = client.post(url("skip/", project), {"item": str(first), "holding": str(second)}, **HTMX)

    assert cards(response.content.decode()) == [item_id(project, "Item 2")]
    assert Assignment.objects.get(item_id=first).status == Assignment.Status.SKIPPED


@pytest.mark.django_db
def test_it_answers_an_htmx_undo_with_the_stage_redrawn_undone_item_first(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first, second = cards(html)
    client.post(url("submit/", project), {**form_fields(html, first), "category": str(category(project).id), "holding": str(second)}, **HTMX)

    response = client.post(url("undo/", project), **HTMX)

    body = response.content.decode()
    assert response.status_code == 200 and 'id="stage"' in body
    assert cards(body) == [first, second]
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_it_refuses_an_htmx_label_for_a_lost_lease_with_a_plain_text_409(project, annotator, member, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first = cards(html)[0]
    # The lease expired and the item's only slot went to someone else.
    Assignment.objects.filter(item_id=first).delete()
    Item.objects.filter(pk=first).update(open_slots=0)

    response = client.post(url("submit/", project), {**form_fields(html, first), "category": str(category(project).id)}, **HTMX)

    assert response.status_code == 409
    assert response["Content-Type"].startswith("text/plain")
    assert "expired" in response.content.decode()
    assert not Annotation.objects.exists()


@pytest.mark.django_db
def test_it_takes_exactly_the_category_sent(project, annotator, client_for):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    two = [str(c.id) for c in project.categories.all()[:2]]
    response = client.post(url("submit/", project), {**form_fields(html, cards(html)[0]), "category": two}, **HTMX)
    assert response.status_code == 409
    assert "exactly one category" in response.content.decode()


@pytest.mark.django_db
def test_it_ignores_garbage_in_numeric_fields(project, annotator, client_for):
    client = client_for(annotator)
    response = client.post(url("skip/", project), {"item": "1e999x", "holding": "abc"}, **HTMX)
    assert response.status_code == 200
    response = client.post(url("submit/", project), {"item": "NaN", "request_id": "r", "category": "x", "duration_ms": "inf"}, **HTMX)
    assert response.status_code == 409


@pytest.mark.django_db
def test_it_redirects_a_plain_get_of_the_refill_endpoint_to_the_page(project, annotator, client_for):
    response = client_for(annotator).get(url("next/", project))
    assert response.status_code == 302 and response["Location"] == url("", project)


@pytest.mark.django_db
def test_it_sends_an_expired_htmx_session_to_the_login_page_not_into_a_card(project, annotator):
    response = Client().post(url("submit/", project), {"item": "1"}, HTTP_HX_CURRENT_URL=f"http://testserver{url('', project)}", **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/accounts/login/?next=%2Fp%2F{project.slug}%2Fannotate%2F"


# --- escaping and CSRF ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_escapes_item_text_on_the_page_and_in_swapped_cards(project, member, client_for):
    project.honeypot_percent = 0
    project.save()
    load(project, [SCRIPT_TITLE, f"{SCRIPT_TITLE} two", f"{SCRIPT_TITLE} three"])
    annotator = member("annotator")
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first, second = cards(html)
    card = client.post(url("skip/", project), {"item": str(first), "holding": str(second)}, **HTMX).content.decode()
    for body in (html, card):
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(&quot;title&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in body


@pytest.mark.django_db
def test_it_escapes_guidelines_while_rendering_their_markdown(project, member, client_for):
    project.guidelines = '# Rules\n**<img src=x onerror=alert(1)>** and `<script>`'
    project.save()
    html = client_for(member("annotator")).get(f"/p/{project.slug}/guidelines/").content.decode()
    assert "<h3>Rules</h3>" in html
    assert "<p><strong>&lt;img src=x onerror=alert(1)&gt;</strong> and <code>&lt;script&gt;</code></p>" in html


@pytest.mark.django_db
def test_it_refuses_a_post_without_the_csrf_token(project, annotator, client_for):
    client = client_for(annotator, enforce_csrf_checks=True)
    html = client.get(url("", project)).content.decode()
    first = cards(html)[0]
    data = {**form_fields(html, first), "category": str(category(project).id)}

    for endpoint in ("submit/", "skip/", "undo/"):
        assert client.post(url(endpoint, project), data).status_code == 403
        assert client.post(url(endpoint, project), data, **HTMX).status_code == 403
    assert not Annotation.objects.exists()

    token = re.search(r'name="csrfmiddlewaretoken" value="(\w+)"', html).group(1)
    assert client.post(url("submit/", project), {**data, "csrfmiddlewaretoken": token}).status_code == 302
    assert Annotation.objects.count() == 1


@pytest.mark.django_db
def test_it_accepts_the_csrf_header_htmx_sends(project, annotator, client_for):
    client = client_for(annotator, enforce_csrf_checks=True)
    html = client.get(url("", project)).content.decode()
    token = re.search(r'"X-CSRFToken": "(\w+)"', html).group(1)
    response = client.post(url("skip/", project), {"item": str(cards(html)[0])}, HTTP_X_CSRFTOKEN=token, **HTMX)
    assert response.status_code == 200


# --- the hot path stays small ---------------------------------------------------------------------


@pytest.mark.django_db
def test_it_draws_the_page_in_a_fixed_number_of_queries(project, annotator, client_for, django_assert_max_num_queries):
    client = client_for(annotator)
    client.get(url("", project))  # leases the two items; a reload only reads them
    # session, user, membership+project, live leases+items, categories, today's count, and the
    # model's stored prediction for each of the two cards (modeling.suggestions.for_card)
    with django_assert_max_num_queries(8):
        assert client.get(url("", project)).status_code == 200


@pytest.mark.django_db
def test_it_submits_and_refills_in_a_fixed_number_of_queries(project, annotator, client_for, django_assert_max_num_queries):
    client = client_for(annotator)
    html = client.get(url("", project)).content.decode()
    first, second = cards(html)
    data = {**form_fields(html, first), "category": str(category(project).id), "holding": str(second)}
    # Counted with k=1, so this submit also makes the gold label. Whatever the project size:
    # session, user, membership; the submit's transaction (15, gold label included); the
    # live leases, one claim's transaction (6) and the card's categories; the suggestion the
    # submitted card showed and the new card's (modeling.suggestions).
    with django_assert_max_num_queries(29):
        assert client.post(url("submit/", project), data, **HTMX).status_code == 200
