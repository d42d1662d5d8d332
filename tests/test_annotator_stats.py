"""Per-annotator figures (labeling.annotator_stats) and the agreement page, on projects labeled
through the real queue actions: claim_next_item, submit_annotation, and review decisions."""
import io
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from labeling import actions, annotator_stats, review
from labeling.importer import import_items
from labeling.models import Annotation, Review, ReviewQueue, Role
from labeling.review import assign_splits

YES, NO = "natural-language-processing", "computer-vision"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def two_raters(db):
    return actions.create_project("Agreement", "agree", annotations_per_item=2, honeypot_percent=0)


def import_titles(project, count: int) -> None:
    rows = "title,description\n" + "".join(f"Item {i},text number {i}\n" for i in range(count))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")


def label_all(membership, labels: str, seconds=lambda i: 2) -> None:
    """Claim items until the queue is empty; item `Item i` gets YES for "y", NO for "n"."""
    category = {c.name: c.id for c in membership.project.categories.all()}
    while (lease := actions.claim_next_item(membership)) is not None:
        index = int(lease.item.title.split()[1])
        actions.submit_annotation(
            membership, lease.item_id, [category[YES if labels[index] == "y" else NO]], uuid.uuid4().hex,
            duration_ms=seconds(index) * 1000,
        )


def review_disagreements(project, reviewer, labels: str, decision=Review.Decision.CORRECT) -> int:
    """The reviewer settles every disagreement: corrects it to `labels`, or rejects it."""
    category = {c.name: c.id for c in project.categories.all()}
    settled = 0
    while (item := review.claim_review(reviewer, ReviewQueue.DISAGREEMENT)) is not None:
        index = int(item.title.split()[1])
        chosen = None
        if decision == Review.Decision.CORRECT:
            chosen = [category[YES if labels[index] == "y" else NO]]
        review.decide_review(reviewer, item.id, decision, uuid.uuid4().hex, chosen)
        settled += 1
    return settled


# Ten items, two annotators (k = 2):
#   item:   0 1 2 3 4 5 6 7 8 9
#   alice:  y y y y y n n n n n     5 y, 5 n
#   bob:    y y y y n n n n n y     5 y, 5 n
# Agree on 0-3 and 5-8: po = 8/10. pe = 0.5*0.5 + 0.5*0.5 = 0.5, Cohen's kappa = 0.3/0.5 = 0.60.
# Fleiss (m = 2): p_y = p_n = 10/20, Pe = 0.5, Pbar = 0.8, kappa = 0.60.
# Krippendorff: n = 20, n_y = n_n = 10, diagonal 8 items x 2 = 16,
#   alpha = 1 - 19 * (20 - 16) / (400 - 200) = 1 - 76/200 = 0.62.
# The 8 agreeing items become gold by consensus; the reviewer corrects items 4 and 9 to alice's
# label, so alice agrees with the final label 10/10 and bob 8/10.
ALICE = "yyyyynnnnn"
BOB = "yyyynnnnny"


@pytest.fixture
def labeled(two_raters, member):
    import_titles(two_raters, 10)
    alice = member(username="alice", in_project=two_raters)
    bob = member(username="bob", in_project=two_raters)
    reviewer = member(Role.REVIEWER, username="rita", in_project=two_raters)
    label_all(alice, ALICE, seconds=lambda i: i + 1)  # 1..10 s, median 5.5 s
    label_all(bob, BOB)
    return {"project": two_raters, "alice": alice, "bob": bob, "reviewer": reviewer}


def by_name(figures):
    return {person.username: person for person in figures.annotators}


@pytest.mark.django_db
def test_it_computes_project_and_annotator_figures_from_the_queue(labeled):
    assert review_disagreements(labeled["project"], labeled["reviewer"], ALICE) == 2
    figures = annotator_stats.project_agreement(labeled["project"])
    report = figures.report
    assert (report.annotations, report.items_overlapping, report.annotators) == (20, 10, 2)
    assert report.percent_agreement.value == pytest.approx(0.8)
    assert report.fleiss_kappa.value == pytest.approx(0.6)
    assert report.krippendorff_alpha.value == pytest.approx(0.62)
    (pair,) = figures.pairs
    assert {pair.first, pair.second} == {"alice", "bob"}
    assert pair.pair.kappa.value == pytest.approx(0.6)
    people = by_name(figures)
    alice, bob = people["alice"], people["bob"]
    assert (alice.items_done, alice.median_seconds) == (10, 5.5)
    assert (alice.gold_agreed, alice.gold_compared) == (10, 10)
    assert (bob.items_done, bob.median_seconds) == (10, 2.0)
    assert (bob.gold_agreed, bob.gold_compared) == (8, 10)
    assert alice.kappa.value == pytest.approx(0.6) and alice.pairs == 1
    assert alice.honeypot_accuracy is None and alice.honeypots == 0
    assert not alice.is_low and not bob.is_low


@pytest.mark.django_db
def test_it_counts_rejected_rounds_as_work_but_not_as_agreement(labeled):
    assert review_disagreements(labeled["project"], labeled["reviewer"], ALICE, Review.Decision.REJECT) == 2
    assert Annotation.objects.filter(rejected=True).count() == 4
    figures = annotator_stats.project_agreement(labeled["project"])
    people = by_name(figures)
    assert (people["alice"].items_done, people["alice"].rejected) == (10, 2)
    assert (people["bob"].items_done, people["bob"].rejected) == (10, 2)
    # Items 4 and 9 are out: they agree on all 8 left (4 y, 4 n), so kappa = 1.
    (pair,) = figures.pairs
    assert pair.pair.shared_items == 8
    assert pair.pair.kappa.value == pytest.approx(1.0)
    assert figures.report.annotations == 16
    # Only consensus gold remains to compare with, and both agree with all of it.
    assert (people["bob"].gold_agreed, people["bob"].gold_compared) == (8, 8)


@pytest.mark.django_db
def test_it_scores_honeypots_against_gold_and_keeps_them_out_of_agreement(project, member):
    project.honeypot_percent, project.holdout_percent = 100, 0
    project.save()
    rows = "title,description,tag\n" + "".join(f"Known {i},a labeled text {i},mlops\n" for i in range(3))
    import_items(project, io.BytesIO(rows.encode()), "items.csv")
    assign_splits(project)
    annotator = member(username="hana")
    category = {c.name: c.id for c in project.categories.all()}
    for answer in ("mlops", "other", "mlops"):
        lease = actions.claim_next_item(annotator)
        assert lease.is_honeypot
        actions.submit_annotation(annotator, lease.item_id, [category[answer]], uuid.uuid4().hex)
    figures = annotator_stats.project_agreement(project)
    hana = by_name(figures)["hana"]
    assert (hana.honeypots, hana.honeypots_correct, hana.items_done) == (3, 2, 3)
    assert hana.honeypot_accuracy == pytest.approx(2 / 3)
    assert hana.gold_compared == 0  # honeypots are scored as honeypots only
    assert figures.report.annotations == 0
    assert hana.kappa.value is None and hana.kappa.reason


# Carol against alice on the same ten items:
#   alice:  y y y y y n n n n n
#   carol:  n n n y y n n y y y     5 y, 5 n
# Agree on items 3, 4, 5, 6: po = 0.4, pe = 0.5, kappa = (0.4 - 0.5) / 0.5 = -0.20: both are below
# 0.40 over 10 shared items. The reviewer sides with alice on the 6 disagreements, so carol agrees
# with the final label on 4/10 = 40% (below 70%) and alice on 10/10.
CAROL = "nnnyynnyyy"


@pytest.mark.django_db
def test_it_highlights_low_agreement_with_the_reasons(two_raters, member):
    import_titles(two_raters, 10)
    alice = member(username="alice", in_project=two_raters)
    carol = member(username="carol", in_project=two_raters)
    label_all(alice, ALICE)
    label_all(carol, CAROL)
    review_disagreements(two_raters, member(Role.REVIEWER, in_project=two_raters), ALICE)
    people = by_name(annotator_stats.project_agreement(two_raters))
    assert people["carol"].kappa.value == pytest.approx(-0.2)
    assert people["carol"].gold_agreement == pytest.approx(0.4)
    assert len(people["carol"].low_reasons) == 2
    assert "final label on 40%" in people["carol"].low_reasons[1]
    assert people["alice"].low_reasons == ["kappa with others -0.20 is below 0.40"]


@pytest.mark.django_db
def test_it_does_not_single_anyone_out_on_thin_evidence(two_raters, member):
    import_titles(two_raters, annotator_stats.MIN_EVIDENCE - 1)
    alice = member(username="alice", in_project=two_raters)
    carol = member(username="carol", in_project=two_raters)
    label_all(alice, ALICE)
    label_all(carol, CAROL)
    people = by_name(annotator_stats.project_agreement(two_raters))
    assert people["carol"].kappa.value < annotator_stats.LOW_KAPPA
    assert not people["carol"].is_low


@pytest.mark.django_db
def test_it_reads_the_project_in_two_queries_whatever_its_size(labeled, django_assert_num_queries):
    with django_assert_num_queries(2):
        annotator_stats.project_agreement(labeled["project"])
    import_titles_more = "title,description\n" + "".join(f"Item {i},more text {i}\n" for i in range(10, 30))
    import_items(labeled["project"], io.BytesIO(import_titles_more.encode()), "more.csv")
    label_all(labeled["alice"], ALICE * 3)
    label_all(labeled["bob"], BOB * 3)
    assert Annotation.objects.count() == 60
    with django_assert_num_queries(2):
        annotator_stats.project_agreement(labeled["project"])


# --- the page ---------------------------------------------------------------------------------


def page_url(slug="agree"):
    return reverse("agreement", args=[slug])


@pytest.fixture
def callers(labeled, member, make_user):
    project = labeled["project"]
    elsewhere = actions.create_project("Elsewhere", "elsewhere")
    return {
        "annotator": labeled["alice"].user,
        "reviewer": labeled["reviewer"].user,
        "admin": member(Role.ADMIN, in_project=project).user,
        "outsider": member(Role.ADMIN, in_project=elsewhere).user,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "status"), [("annotator", 403), ("reviewer", 200), ("admin", 200), ("outsider", 404)]
)
def test_it_shows_the_page_to_reviewers_and_admins_only(callers, role, status):
    client = Client()
    client.force_login(callers[role])
    assert client.get(page_url()).status_code == status


@pytest.mark.django_db
def test_it_sends_anonymous_visitors_to_log_in(callers):
    response = Client().get(page_url())
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert "next=" in response["Location"]


@pytest.mark.django_db
def test_it_refuses_writes(callers):
    client = Client()
    client.force_login(callers["reviewer"])
    assert client.post(page_url()).status_code == 405


@pytest.mark.django_db
def test_it_shows_the_figures_on_the_page(labeled, callers):
    review_disagreements(labeled["project"], labeled["reviewer"], ALICE)
    client = Client()
    client.force_login(callers["reviewer"])
    response = client.get(page_url())
    html = response.content.decode()
    assert response.status_code == 200
    figures = response.context["report"]
    assert figures.fleiss_kappa.value == pytest.approx(0.6)
    assert '<span>80%</span>percent agreement' in html
    assert "<span>0.60</span>Fleiss’ kappa" in html
    assert "<span>0.62</span>Krippendorff’s alpha" in html
    assert "on the 10 items with 2 labels" in html
    assert "95% interval" in html
    assert 'data-pair="alice|bob"' in html
    bob_row = html.split('data-annotator="bob"')[1].split("</tr>")[0]
    assert "80% (8/10)" in bob_row and "2.0" in bob_row and "0.60" in bob_row
    alice_row = html.split('data-annotator="alice"')[1].split("</tr>")[0]
    assert "100% (10/10)" in alice_row and "5.5" in alice_row
    assert "low-agreement" not in html.split("<tbody>")[1]
    assert f'href="{page_url()}" aria-current="page"' in html  # the nav links here


@pytest.mark.django_db
def test_it_highlights_low_agreement_on_the_page_and_says_why(two_raters, member):
    import_titles(two_raters, 10)
    label_all(member(username="alice", in_project=two_raters), ALICE)
    label_all(member(username="carol", in_project=two_raters), CAROL)
    reviewer = member(Role.REVIEWER, in_project=two_raters)
    review_disagreements(two_raters, reviewer, ALICE)
    client = Client()
    client.force_login(reviewer.user)
    html = client.get(page_url()).content.decode()
    before, after = html.split('data-annotator="carol"')
    carol_row = before.rsplit("<tr", 1)[1] + after.split("</tr>")[0]
    assert 'class="low-agreement"' in carol_row
    assert "low agreement" in carol_row and "40%" in carol_row
    assert "\N{MINUS SIGN}0.20" in carol_row  # kappa with others
    assert 'id="threshold"' in html and "below 0.40" in html and "70%" in html


@pytest.mark.django_db
def test_it_escapes_annotator_names(two_raters, member, make_user):
    import_titles(two_raters, 2)
    sneaky = actions.add_member(two_raters, make_user("<script>alert(1)</script>"))
    label_all(sneaky, "yy")
    label_all(member(username="plain", in_project=two_raters), "yn")
    client = Client()
    client.force_login(member(Role.ADMIN, in_project=two_raters).user)
    html = client.get(page_url()).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.django_db
def test_it_explains_an_empty_project(two_raters, member):
    client = Client()
    client.force_login(member(Role.REVIEWER, in_project=two_raters).user)
    response = client.get(page_url())
    assert response.status_code == 200
    assert "No labels yet" in response.content.decode()
    assert "n/a" in response.content.decode()
