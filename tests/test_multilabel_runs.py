"""A multi-label project end to end on the modeling side: the gold holdout by iterative
stratification (near-duplicates together, splits frozen), a training run in-process (one-vs-rest,
multi-label figures, promotion on samples F1, stored per-category probabilities), the suggestion
card's thresholds and the model page. Single-label projects keep their own split and figures."""
import io
from collections import Counter, defaultdict

import numpy as np
import pytest
from django.test import Client

from labeling import actions
from labeling.importer import import_items
from labeling.models import Category, GoldLabel, Item, Project, ReviewQueue, Split
from labeling.review import assign_splits
from modeling import multilabel, runs, serving, suggestions
from modeling.models import ModelVersion, Prediction

from .multilabel_data import csv_bytes, load, multi_label_project, rows

FAST = ["majority", "rules", "tfidf_logreg"]


@pytest.fixture
def model_algorithms():
    return FAST


pytestmark = pytest.mark.usefixtures("model_dir")


@pytest.fixture
def multi(db):
    return multi_label_project(honeypot_percent=0, blind_control_percent=0)


def train(project, algorithms=None) -> ModelVersion:
    version = runs.request_training(project, ModelVersion.Trigger.BUTTON, enqueue=False)
    runs.run(version.pk, algorithms=algorithms)
    version.refresh_from_db()
    return version


def holdout_share_by_category(project) -> dict[str, float]:
    names = dict(Category.objects.filter(project=project).values_list("id", "name"))
    counts = defaultdict(Counter)
    for categories, split in GoldLabel.objects.filter(project=project).values_list("categories", "item__split"):
        for category in categories:
            counts[names[category]][split] += 1
    return {name: c[Split.HOLDOUT] / (c[Split.HOLDOUT] + c[Split.TRAIN]) for name, c in counts.items()}


# --- the holdout --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_holds_out_a_fifth_of_every_category(multi):
    load(multi, gold=200, unlabeled=0)

    assigned = assign_splits(multi)

    assert assigned[Split.TRAIN] + assigned[Split.HOLDOUT] == 200
    assert 36 <= assigned[Split.HOLDOUT] <= 44
    for name, share in holdout_share_by_category(multi).items():
        assert 0.17 <= share <= 0.23, (name, share)


@pytest.mark.django_db
def test_it_keeps_near_duplicates_together_and_never_moves_a_split(multi):
    load(multi, gold=60, unlabeled=0)
    assign_splits(multi)
    before = dict(Item.objects.filter(project=multi).values_list("id", "split"))
    # Near-duplicates (case and punctuation only) of twenty split items, in a later import, plus
    # pairs of near-duplicates of each other that are new.
    originals = list(rows(20, seed=0, prefix="gold"))
    twins = [(f"twin-{n}", f"{title.upper()}!", f"{text}.", labels) for n, (_, title, text, labels) in enumerate(originals)]
    fresh = list(rows(30, seed=9, prefix="fresh"))
    pairs = fresh + [(f"pair-{i}", f"{title}?", text.upper(), labels) for i, title, text, labels in fresh]
    import_items(multi, io.BytesIO(csv_bytes(twins + pairs)), "more.csv")

    assign_splits(multi, batch=25)  # several batches: a pair may straddle two

    after = dict(Item.objects.filter(project=multi).values_list("id", "split"))
    assert {i: after[i] for i in before} == before
    by_key = defaultdict(set)
    for key, split in Item.objects.filter(project=multi).values_list("near_dup_key", "split"):
        by_key[key].add(split)
    assert len(by_key) == 60 + 30 and all(len(splits) == 1 for splits in by_key.values())
    assert Item.objects.filter(project=multi, split=Split.HOLDOUT).count() > 0


@pytest.mark.django_db
def test_a_single_label_project_keeps_its_split(project):
    """The multi-label path is only for multi-label projects: one category per item as before."""
    from .modeling_data import load as load_single

    load_single(project, gold=80, unlabeled=0)
    assert assign_splits(project) == {Split.TRAIN: 64, Split.HOLDOUT: 16}


# --- the run ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_trains_one_vs_rest_and_stores_multi_label_figures_and_predictions(multi):
    load(multi, gold=120, unlabeled=15)

    version = train(multi)

    assert version.status == ModelVersion.Status.DONE and version.active, version.error
    assert version.algorithm == "ovr_tfidf_logreg"
    assert version.promotion_reason.startswith("Promoted: holdout samples F1")
    metrics = version.metrics
    assert metrics["multilabel"] and metrics["n"] == version.holdout_size > 0
    assert metrics["samples_f1"] > 0.85 and metrics["micro_f1"] > 0.85 and 0 <= metrics["hamming_loss"] < 0.1
    # Two-category items are in the holdout and the model predicts sets, not single labels.
    assert metrics["label_cardinality"]["gold"] > 1.1 and metrics["label_cardinality"]["predicted"] > 1.1
    thresholds = version.params["thresholds"]
    assert set(thresholds) == set(metrics["per_class"]) == {c.name for c in multi.categories.all()}
    assert all(metrics["per_class"][name]["threshold"] == t for name, t in thresholds.items())
    # Beside the multi-label baselines, on the same holdout.
    assert set(version.baselines) == {"rules", "majority"}
    assert version.baselines["majority"]["samples_f1"] < metrics["samples_f1"]
    assert version.selection["multilabel"] and version.selection["cv_samples_f1"] > 0.8
    # Independent per-category probabilities for every unlabeled item.
    stored = list(Prediction.objects.filter(project=multi))
    assert len(stored) == 15
    assert all(set(p.probabilities) == {str(c.id) for c in multi.categories.all()} for p in stored)
    assert max(sum(p.probabilities.values()) for p in stored) > 1.2


@pytest.mark.django_db
def test_a_run_sends_label_sets_the_data_argues_against_to_review(multi):
    load(multi, gold=150, unlabeled=0)
    assign_splits(multi)
    ids = dict(Category.objects.filter(project=multi).values_list("name", "id"))
    # Twelve training items get a set that misses what their text is about: one other category.
    wrong = []
    for gold in GoldLabel.objects.filter(project=multi, item__split=Split.TRAIN).order_by("item_id")[:12]:
        names = {name for name, pk in ids.items() if pk in gold.categories}
        other = sorted(set(ids) - names)[0]
        GoldLabel.objects.filter(pk=gold.pk).update(categories=[ids[other]])
        wrong.append(gold.item_id)

    version = train(multi)

    suspected = list(
        Item.objects.filter(project=multi, review_queue=ReviewQueue.SUSPECTED).order_by("rank").values_list("id", flat=True)
    )
    assert version.status == ModelVersion.Status.DONE and version.algorithm == "ovr_tfidf_logreg"
    assert version.timings["suspected"] == len(suspected) > 0
    assert suspected[0] in wrong
    assert len(set(suspected) & set(wrong)) >= 0.6 * len(suspected)


@pytest.mark.django_db
def test_the_uncertainty_order_puts_the_most_doubtful_decisions_first(multi):
    Project.objects.filter(pk=multi.pk).update(order=Project.Order.UNCERTAINTY)
    multi.refresh_from_db()
    load(multi, gold=120, unlabeled=15)

    version = train(multi)

    model = serving.model_for(version)
    ids = {c.name: str(c.id) for c in multi.categories.all()}
    stored = list(Prediction.objects.filter(project=multi).select_related("item"))
    for prediction in stored:
        proba = np.array([[prediction.probabilities[ids[name]] for name in model.classes_]])
        # Stored probabilities are rounded to 4 decimals; the margin was computed before that.
        assert prediction.margin == pytest.approx(multilabel.margins(proba, model.thresholds_)[0], abs=1e-3)
    by_rank = sorted(stored, key=lambda p: p.item.rank)
    assert [p.margin for p in by_rank] == sorted(p.margin for p in stored)


@pytest.mark.django_db
def test_promotion_compares_samples_f1(multi):
    load(multi, gold=120, unlabeled=5)
    good = train(multi)
    load(multi, gold=12, unlabeled=0, seed=7)  # new gold labels: different training data

    worse = train(multi, algorithms=["majority"])

    assert worse.status == ModelVersion.Status.DONE and not worse.active and not worse.promoted
    assert worse.algorithm == "majority"
    assert worse.promotion_reason.startswith("Not promoted: holdout samples F1")
    good.refresh_from_db()
    assert good.active
    # The serving model was scored again on the new run's holdout, with the multi-label figures.
    assert worse.baselines["previous"]["version"] == good.number
    assert worse.baselines["previous"]["samples_f1"] > worse.metrics["samples_f1"]
    assert worse.baselines["previous"]["difference"]["samples_f1"][1] < 0  # paired: worse beyond noise
    assert "in samples F1" in worse.promotion_reason and "worse beyond noise" in worse.promotion_reason


@pytest.mark.django_db
def test_a_run_needs_two_categories_in_the_label_sets(multi):
    data = [(f"x-{n}", f"title {n}", f"words {n}", "mlops") for n in range(30)]
    import_items(multi, io.BytesIO(csv_bytes(data)), "one.csv")

    version = train(multi)

    assert version.status == ModelVersion.Status.DONE and not version.active
    assert "in 1 categories" in version.promotion_reason


# --- what people see ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_suggestion_card_shows_each_probability_with_its_threshold(multi, member):
    load(multi, gold=120, unlabeled=5)
    version = train(multi)
    annotator = member("annotator", in_project=multi)
    lease = actions.claim_next_item(annotator)
    categories = list(multi.categories.all())

    card = suggestions.for_card(annotator, lease, categories)

    assert card.shown and card.version_id == version.pk
    stored = Prediction.objects.get(item_id=lease.item_id).probabilities
    assert [bar.category for bar in card.bars] == categories
    for bar in card.bars:
        assert bar.probability == stored[str(bar.category.id)]
        assert bar.threshold == version.params["thresholds"][bar.category.name]


@pytest.mark.django_db
def test_a_single_label_card_has_no_thresholds(project, member, settings):
    from .modeling_data import load as load_single

    project.honeypot_percent = project.blind_control_percent = 0
    project.save()
    load_single(project, gold=80, unlabeled=5)
    train(project)
    annotator = member("annotator")
    card = suggestions.for_card(annotator, actions.claim_next_item(annotator), list(project.categories.all()))
    assert card.shown and all(bar.threshold is None for bar in card.bars)


@pytest.mark.django_db
def test_the_model_page_shows_the_multi_label_figures(multi, member):
    load(multi, gold=120, unlabeled=5)
    version = train(multi)
    client = Client()
    client.force_login(member("reviewer", in_project=multi).user)

    html = client.get(f"/p/{multi.slug}/model/").content.decode()

    assert 'id="multilabel-metrics"' in html and "Samples F1" in html and "Hamming loss" in html
    assert f"{version.metrics['samples_f1']:.3f}" in html
    for name, threshold in version.params["thresholds"].items():
        assert name in html and f"{threshold:.2f}" in html
