"""Review flow end to end (SQLite and PostgreSQL passes): annotations complete an item, the review
policy routes it, a reviewer decides on the page or through the API, gold carries provenance."""

import io
import json
import random
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from labeling import actions, review
from labeling.importer import import_items
from labeling.models import Annotation, GoldLabel, Item, Project, Review, ReviewPolicy, ReviewQueue


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def configure(project, k=2, policy=ReviewPolicy.DISAGREEMENTS, sample_percent=10):
    project.annotations_per_item = k
    project.review_policy = policy
    project.review_sample_percent = sample_percent
    project.honeypot_percent = 0
    project.save()
    return project


def load(project, n=1, prefix="Item"):
    rows = "title,description\n" + "".join(
        f"{prefix} {i},text number {i} of {prefix}\n" for i in range(n)
    )
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    return list(Item.objects.filter(project=project, title__startswith=prefix).order_by("rank"))


def cat(project, name):
    return project.categories.get(name=name).id


def label_next(membership, name, **extra):
    """The annotator's loop: claim the next item, label it."""
    lease = actions.claim_next_item(membership)
    assert lease is not None, f"{membership.user} got no item"
    actions.submit_annotation(
        membership, lease.item_id, [cat(membership.project, name)], uuid.uuid4().hex, **extra
    )
    return lease.item_id


def disagreement(project, member, n=1):
    """n items that two annotators labeled differently, waiting in the disagreement queue."""
    items = load(project, n, prefix=f"Disputed{uuid.uuid4().hex[:6]}")
    a, b = member(), member()
    for _ in items:
        label_next(a, "mlops")
        label_next(b, "other")
    return items, (a, b)


def client_for(membership):
    client = Client()
    client.force_login(membership.user)
    return client


def review_url(project, queue=None):
    url = reverse("review", args=[project.slug])
    return f"{url}?queue={queue}" if queue else url


# --- the whole loop ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_sends_a_disagreement_to_the_reviewer_and_a_correction_becomes_gold_with_provenance(
    project, member
):
    configure(project, k=2)
    (item,), (a, b) = disagreement(project, member)
    item.refresh_from_db()
    assert (item.status, item.review_queue) == (Item.Status.COMPLETED, ReviewQueue.DISAGREEMENT)
    assert not GoldLabel.objects.exists()

    reviewer = member("reviewer")
    client = client_for(reviewer)
    page = client.get(review_url(project))  # no queue given: the one with work is chosen
    body = page.content.decode()
    assert page.status_code == 200
    assert item.title in body
    for who in (a.user.username, b.user.username):
        assert who in body
    assert "mlops" in body and "other" in body
    assert "The annotations disagree" in body
    assert 'value="approve" data-key="a" class="primary" disabled' in body

    Project.objects.filter(pk=project.pk).update(guidelines_version=3)
    response = client.post(
        reverse("review_decide", args=[project.slug]),
        {
            "item": item.id,
            "queue": "disagreement",
            "correct_to": cat(project, "computer-vision"),
            "request_id": "rev-1",
            "note": "CNN paper",
            "duration_ms": "5300",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == review_url(project, "disagreement")

    gold = GoldLabel.objects.get(item=item)
    decision = Review.objects.get()
    assert gold.categories == [cat(project, "computer-vision")]
    assert gold.source == GoldLabel.Source.REVIEW
    assert gold.decided_by == reviewer.user
    assert gold.guidelines_version == 3
    assert gold.review == decision
    assert (decision.decision, decision.note, decision.queue, decision.duration_ms) == (
        Review.Decision.CORRECT,
        "CNN paper",
        ReviewQueue.DISAGREEMENT,
        5300,
    )
    item.refresh_from_db()
    assert (item.status, item.review_queue, item.review_leased_to_id) == (
        Item.Status.GOLD,
        "",
        None,
    )


@pytest.mark.django_db
def test_it_swaps_in_the_next_item_of_the_same_queue_with_htmx(project, member):
    configure(project, k=2)
    (first, second), _ = disagreement(project, member, n=2)
    reviewer = member("reviewer")
    client = client_for(reviewer)
    assert first.title in client.get(review_url(project, "disagreement")).content.decode()

    response = client.post(
        reverse("review_decide", args=[project.slug]),
        {
            "item": first.id,
            "queue": "disagreement",
            "correct_to": cat(project, "mlops"),
            "request_id": "r1",
        },
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body  # the card only, no full page
    assert f'data-item-id="{second.id}"' in body
    assert 'hx-swap-oob="true"' in body and 'data-queue="disagreement"' in body
    assert '<span class="count">1</span>' in body  # one disagreement left
    assert json.loads(response["HX-Trigger"])["review:decided"]["message"].startswith(
        "Corrected item"
    )
    assert Item.objects.get(pk=second.pk).review_leased_to == reviewer.user


@pytest.mark.django_db
def test_it_returns_a_rejected_item_for_a_new_round_and_keeps_the_old_one(project, member):
    configure(project, k=2)
    (item,), (a, b) = disagreement(project, member)
    reviewer = member("reviewer")
    client = client_for(reviewer)
    client.get(review_url(project, "disagreement"))
    response = client.post(
        reverse("review_decide", args=[project.slug]),
        {
            "item": item.id,
            "queue": "disagreement",
            "decision": "reject",
            "request_id": "r1",
            "note": "Ambiguous",
        },
    )
    assert response.status_code == 302

    item.refresh_from_db()
    assert (item.status, item.round, item.annotation_count, item.open_slots, item.review_queue) == (
        Item.Status.OPEN,
        1,
        0,
        2,
        "",
    )
    assert sorted(Annotation.objects.values_list("round", "rejected")) == [(0, True), (0, True)]
    assert not GoldLabel.objects.exists()

    # The same two people label it again in the new round, and disagree again.
    assert label_next(a, "computer-vision") == item.id
    assert label_next(b, "mlops") == item.id
    item.refresh_from_db()
    assert item.review_queue == ReviewQueue.DISAGREEMENT
    assert Annotation.objects.filter(round=1, rejected=False).count() == 2

    body = client.get(review_url(project, "disagreement")).content.decode()
    assert "round 2" in body
    assert "Earlier rounds (1 rejected)" in body
    assert f"rejected by {reviewer.user.username}" in body and "Ambiguous" in body
    # Only the current round counts towards the decision.
    assert (
        "computer-vision ×1" in body
        and "mlops ×1" in body
        and "other" not in body.split("Earlier rounds")[0].split("Or correct to")[0]
    )


@pytest.mark.django_db
def test_it_approves_agreeing_annotations_under_review_policy_all(project, member):
    configure(project, k=2, policy=ReviewPolicy.ALL)
    (item,) = load(project)
    a, b = member(), member()
    label_next(a, "mlops")
    label_next(b, "mlops")
    item.refresh_from_db()
    assert item.review_queue == ReviewQueue.REVIEW
    assert not GoldLabel.objects.exists()  # policy "all": no consensus without a reviewer

    reviewer = member("reviewer")
    client = client_for(reviewer)
    body = client.get(review_url(project)).content.decode()
    assert "All 2 annotations agree on mlops" in body
    assert 'value="approve" data-key="a" class="primary">' in body
    client.post(
        reverse("review_decide", args=[project.slug]),
        {"item": item.id, "queue": "review", "decision": "approve", "request_id": "r1"},
    )
    gold = GoldLabel.objects.get(item=item)
    assert (gold.categories, gold.source, gold.decided_by) == (
        [cat(project, "mlops")],
        "review",
        reviewer.user,
    )
    assert Review.objects.get().decision == Review.Decision.APPROVE


@pytest.mark.django_db
def test_it_refuses_to_approve_a_disagreement(project, member):
    configure(project, k=2)
    (item,), _ = disagreement(project, member)
    reviewer = member("reviewer")
    response = client_for(reviewer).post(
        reverse("api-review-decide", args=[project.slug]),
        {"item": item.id, "decision": "approve", "client_request_id": "r1"},
        content_type="application/json",
    )
    assert response.status_code == 409
    assert "disagree" in response.json()["detail"]
    item.refresh_from_db()
    assert item.review_queue == ReviewQueue.DISAGREEMENT and not Review.objects.exists()


@pytest.mark.parametrize(
    "policy, percent, gold_by_consensus",
    [
        (ReviewPolicy.DISAGREEMENTS, 10, True),
        (ReviewPolicy.SAMPLE, 0, True),
        (ReviewPolicy.SAMPLE, 100, False),
        (ReviewPolicy.ALL, 10, False),
    ],
)
@pytest.mark.django_db
def test_it_gives_consensus_gold_without_review_only_where_the_policy_allows(
    project, member, policy, percent, gold_by_consensus
):
    configure(project, k=2, policy=policy, sample_percent=percent)
    (item,) = load(project)
    a, b = member(), member()
    label_next(a, "other")
    label_next(b, "other")
    item.refresh_from_db()
    if gold_by_consensus:
        assert GoldLabel.objects.get(item=item).source == GoldLabel.Source.CONSENSUS
        assert item.review_queue == ""
    else:
        assert not GoldLabel.objects.exists()
        assert item.review_queue == ReviewQueue.REVIEW


@pytest.mark.django_db
def test_it_sends_about_p_percent_to_review_under_the_sample_policy(project, member):
    configure(project, k=1, policy=ReviewPolicy.SAMPLE, sample_percent=25)
    load(project, n=120)
    annotator = member()
    random.seed(20240607)
    for _ in range(120):
        label_next(annotator, "other")
    sampled = Item.objects.filter(review_queue=ReviewQueue.REVIEW).count()
    consensus = GoldLabel.objects.filter(source=GoldLabel.Source.CONSENSUS).count()
    assert sampled + consensus == 120
    assert 15 <= sampled <= 45, sampled  # 25% of 120 = 30; the binomial sd is about 5


# --- who gets what ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_never_offers_or_lets_reviewers_decide_their_own_labels(project, member):
    configure(project, k=2)
    (item,) = load(project)
    labeling_reviewer, other = member("reviewer"), member()
    label_next(labeling_reviewer, "mlops")
    label_next(other, "other")
    assert review.claim_review(labeling_reviewer, ReviewQueue.DISAGREEMENT) is None
    response = client_for(labeling_reviewer).post(
        reverse("api-review-decide", args=[project.slug]),
        {
            "item": item.id,
            "decision": "correct",
            "categories": ["mlops"],
            "client_request_id": "own",
        },
        content_type="application/json",
    )
    assert response.status_code == 409
    assert "labeled this item yourself" in response.json()["detail"]
    assert review.claim_review(member("reviewer"), ReviewQueue.DISAGREEMENT).pk == item.pk


@pytest.mark.django_db
def test_it_leases_each_review_item_to_one_reviewer_until_the_lease_expires(project, member):
    configure(project, k=2)
    (first, second), _ = disagreement(project, member, n=2)
    r1, r2, r3 = member("reviewer"), member("reviewer"), member("reviewer")
    assert review.claim_review(r1, ReviewQueue.DISAGREEMENT).pk == first.pk
    assert review.claim_review(r1, ReviewQueue.DISAGREEMENT).pk == first.pk  # a reload: same item
    assert review.claim_review(r2, ReviewQueue.DISAGREEMENT).pk == second.pk
    assert review.claim_review(r3, ReviewQueue.DISAGREEMENT) is None
    with pytest.raises(review.ReviewError, match="Another reviewer holds"):
        review.decide_review(r2, first.pk, "reject", "steal")
    Item.objects.filter(pk=first.pk).update(
        review_lease_expires=timezone.now() - timedelta(seconds=1)
    )
    assert review.claim_review(r3, ReviewQueue.DISAGREEMENT).pk == first.pk


@pytest.mark.django_db
def test_it_releases_the_held_item_when_the_reviewer_switches_queue(project, member):
    configure(project, k=2, policy=ReviewPolicy.ALL)
    (disputed,), _ = disagreement(project, member)
    (agreed,) = load(project, prefix="Agreed")
    a, b = member(), member()
    label_next(a, "mlops")
    label_next(b, "mlops")
    r1, r2 = member("reviewer"), member("reviewer")
    assert review.claim_review(r1, ReviewQueue.DISAGREEMENT).pk == disputed.pk
    assert review.claim_review(r1, ReviewQueue.REVIEW).pk == agreed.pk
    # r1 left the disagreement tab: that item is free for r2 at once, not in ten minutes.
    assert review.claim_review(r2, ReviewQueue.DISAGREEMENT).pk == disputed.pk


# --- the page ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_who_labeled_what_with_the_suggestion_and_time_spent(project, member):
    configure(project, k=2)
    (item,) = load(project)
    a, b = member(username="alice"), member(username="bob")
    label_next(
        a,
        "mlops",
        duration_ms=4200,
        suggestion_shown=True,
        suggested_category_id=cat(project, "mlops"),
    )
    label_next(b, "other", duration_ms=1500)
    Annotation.objects.filter(annotator=a.user).update(
        suggestion={str(cat(project, "mlops")): 0.72, str(cat(project, "other")): 0.2}
    )
    body = client_for(member("reviewer")).get(review_url(project, "disagreement")).content.decode()
    rows = body.split('<tr class="annotation">')[1:]
    alice = next(r for r in rows if "alice" in r)
    bob = next(r for r in rows if "bob" in r)
    assert "mlops" in alice and "mlops 72%" in alice and "other 20%" in alice and "4.2 s" in alice
    assert "none (blind)" in bob and "1.5 s" in bob


@pytest.mark.django_db
def test_it_escapes_item_text_on_the_review_page(project, member):
    configure(project, k=2)
    rows = 'title,description\n"<script>alert(1)</script>","<img src=x onerror=alert(2)>"\n'
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    label_next(member(), "mlops")
    label_next(member(), "other")
    body = client_for(member("reviewer")).get(review_url(project, "disagreement")).content.decode()
    assert "<script>alert(1)" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


@pytest.mark.django_db
def test_it_shows_every_queue_tab_with_its_count_even_when_empty(project, member):
    configure(project, k=2)
    disagreement(project, member, n=3)
    body = client_for(member("reviewer")).get(review_url(project, "suspected")).content.decode()
    assert "Nothing to review in “suspected errors”" in body
    tabs = body.split('id="review-tabs"')[1].split("</nav>")[0]
    assert [part.split('"')[0] for part in tabs.split('data-queue="')[1:]] == [
        "review",
        "disagreement",
        "suspected",
    ]
    counts = [part.split("</span>")[0] for part in tabs.split('<span class="count">')[1:]]
    assert counts == ["0", "3", "0"]


@pytest.mark.django_db
def test_it_rejects_a_decision_without_the_csrf_token(project, member):
    configure(project, k=2)
    (item,), _ = disagreement(project, member)
    client = Client(enforce_csrf_checks=True)
    client.force_login(member("reviewer").user)
    data = {"item": item.id, "queue": "disagreement", "decision": "reject", "request_id": "r1"}
    assert client.post(reverse("review_decide", args=[project.slug]), data).status_code == 403
    assert not Review.objects.exists()
    page = client.get(review_url(project, "disagreement")).content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    response = client.post(
        reverse("review_decide", args=[project.slug]), {**data, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and Review.objects.count() == 1


@pytest.mark.django_db
def test_it_shows_the_error_and_keeps_the_item_when_a_decision_fails_without_javascript(
    project, member
):
    configure(project, k=2)
    (item,), _ = disagreement(project, member)
    client = client_for(member("reviewer"))
    client.get(review_url(project, "disagreement"))
    response = client.post(
        reverse("review_decide", args=[project.slug]),
        {"item": item.id, "queue": "disagreement", "decision": "approve", "request_id": "r1"},
        follow=True,
    )
    body = response.content.decode()
    assert "there is nothing to approve" in body
    assert f'data-item-id="{item.id}"' in body


@pytest.mark.django_db
def test_it_renders_the_review_page_in_a_fixed_number_of_queries(
    project, member, django_assert_max_num_queries
):
    configure(project, k=2)
    disagreement(project, member, n=5)
    client = client_for(member("reviewer"))
    with django_assert_max_num_queries(12):  # claims the item
        assert client.get(review_url(project, "disagreement")).status_code == 200
    with django_assert_max_num_queries(7):  # a reload: the item already held
        assert client.get(review_url(project, "disagreement")).status_code == 200


# --- the API ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_claims_and_decides_through_the_api_idempotently(project, member):
    configure(project, k=2)
    (item,), (a, b) = disagreement(project, member)
    client = client_for(member("reviewer"))
    claim = client.post(
        reverse("api-review-claim", args=[project.slug]),
        {"queue": "disagreement"},
        content_type="application/json",
    )
    assert claim.status_code == 200
    payload = claim.json()
    assert payload["item"]["id"] == item.id and payload["queue"] == "disagreement"
    assert payload["annotations_agree"] is False
    assert sorted(x["annotator"] for x in payload["annotations"]) == sorted(
        [a.user.username, b.user.username]
    )

    decision = {
        "item": item.id,
        "decision": "correct",
        "categories": ["computer-vision"],
        "client_request_id": "same",
    }
    url = reverse("api-review-decide", args=[project.slug])
    first = client.post(url, decision, content_type="application/json")
    again = client.post(url, decision, content_type="application/json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["gold"]["source"] == "review"
    assert Review.objects.count() == 1 and GoldLabel.objects.count() == 1

    other_item = client.post(
        url, {**decision, "item": item.id + 1000}, content_type="application/json"
    )
    assert other_item.status_code == 409  # the request id belongs to another decision
    empty = client.post(
        reverse("api-review-claim", args=[project.slug]),
        {"queue": "disagreement"},
        content_type="application/json",
    )
    assert empty.status_code == 204


@pytest.mark.django_db
def test_it_validates_api_decisions(project, member):
    configure(project, k=2)
    (item,), _ = disagreement(project, member)
    client = client_for(member("reviewer"))
    url = reverse("api-review-decide", args=[project.slug])
    bad_decision = client.post(
        url,
        {"item": item.id, "decision": "maybe", "client_request_id": "x1"},
        content_type="application/json",
    )
    no_category = client.post(
        url,
        {"item": item.id, "decision": "correct", "client_request_id": "x2"},
        content_type="application/json",
    )
    unknown = client.post(
        url,
        {"item": item.id, "decision": "correct", "categories": ["cats"], "client_request_id": "x3"},
        content_type="application/json",
    )
    bad_queue = client.post(
        reverse("api-review-claim", args=[project.slug]),
        {"queue": "all"},
        content_type="application/json",
    )
    assert [r.status_code for r in (bad_decision, no_category, unknown, bad_queue)] == [
        400,
        400,
        400,
        400,
    ]
    assert not Review.objects.exists()


@pytest.mark.django_db
def test_it_lists_gold_labels_with_cursor_pagination(project, member):
    configure(project, k=1)
    load(project, n=5)
    annotator = member()
    for _ in range(5):
        label_next(annotator, "mlops")
    client = client_for(member("reviewer"))
    seen, url = [], reverse("api-gold", args=[project.slug]) + "?page_size=2"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 2
        seen += page["results"]
        url = page["next"]
    assert len(seen) == 5 and len({g["id"] for g in seen}) == 5
    assert [g["id"] for g in seen] == sorted((g["id"] for g in seen), reverse=True)
    assert {g["source"] for g in seen} == {"consensus"}
    assert seen[0]["categories"] == [cat(project, "mlops")] and "split" in seen[0]


@pytest.mark.django_db
def test_it_keeps_a_suspected_gold_label_when_the_reviewer_approves_it(project, member):
    configure(project, k=1)
    rows = "title,description,tag\nOdd one,a text about pipelines,mlops\n"
    import_items(project, io.BytesIO(rows.encode()), "gold.csv")
    item = Item.objects.get()
    # The modeling side flags likely label errors by moving gold items to this queue.
    Item.objects.filter(pk=item.pk).update(review_queue=ReviewQueue.SUSPECTED)
    reviewer = member("reviewer")
    client = client_for(reviewer)
    body = client.get(review_url(project, "suspected")).content.decode()
    assert "Gold label: <strong>mlops</strong>" in body
    assert "Approving keeps the gold label mlops." in body
    response = client.post(
        reverse("api-review-decide", args=[project.slug]),
        {"item": item.id, "decision": "approve", "client_request_id": "keep"},
        content_type="application/json",
    )
    assert response.status_code == 201
    gold = GoldLabel.objects.get(item=item)
    assert (gold.categories, gold.source, gold.decided_by) == (
        [cat(project, "mlops")],
        GoldLabel.Source.REVIEW,
        reviewer.user,
    )
    assert Item.objects.get(pk=item.pk).review_queue == ""


@pytest.mark.django_db
def test_it_stores_odd_form_values_safely(project, member):
    configure(project, k=2)
    (first, second), _ = disagreement(project, member, n=2)
    client = client_for(member("reviewer"))
    data = {
        "item": first.id,
        "queue": "disagreement",
        "decision": "reject",
        "request_id": "x" * 500,
    }
    response = client.post(
        reverse("review_decide", args=[project.slug]),
        {**data, "duration_ms": "1e400", "note": "n" * 9000},
    )
    assert response.status_code == 302
    decision = Review.objects.get()
    assert (len(decision.client_request_id), decision.duration_ms, len(decision.note)) == (
        64,
        0,
        5000,
    )
    api = client.post(
        reverse("api-review-decide", args=[project.slug]),
        {
            "item": second.id,
            "decision": "reject",
            "client_request_id": "big",
            "duration_ms": 10**12,
        },
        content_type="application/json",
    )
    assert api.status_code == 201 and api.json()["duration_ms"] == 24 * 3600 * 1000
