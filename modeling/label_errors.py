"""Suspected label errors: gold training items whose label the data itself argues against.

Each checked gold training item has a probability from a model that never saw it: the out-of-fold
probabilities of the run's chosen algorithm and settings, which model selection computed anyway
(K-fold cross-validation on every training item, or on the selection's stratified sample of a big
training set, a different one each run, which bounds the cost and covers everything over time).
cleanlab's confident-learning filter then flags the items whose given label is implausible,
ranked by self-confidence (the probability the model gives the given label: lowest first). The
flagged items go to the reviewers' "suspected errors" queue, highest risk first; a reviewer
approves or corrects them, and nothing changes without a person.
"""
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.db.models import Exists, Min, OuterRef

from labeling.models import Item, Project, Review, ReviewQueue, Split

log = logging.getLogger(__name__)

# Fewer than this and out-of-fold probabilities are too noisy to accuse anyone's label.
MIN_ITEMS = 30
# A reviewer's queue is not a dumping ground: at most this many new suspects per run.
MAX_FLAGGED = 100


@dataclass
class Check:
    """Out-of-fold probabilities of the training items at `positions` (indices into the run's
    training set). Single-label: one column per label, in sorted order. Multi-label: one
    independent probability per category of `classes`."""

    positions: list[int]
    out_of_fold: np.ndarray | None
    classes: list[str] | None = None  # multi-label only


def suspects(labels: Sequence[str], out_of_fold: np.ndarray | None) -> list[int]:
    """Indices (into `labels`) of likely mislabeled examples, most suspicious first ([] when
    there is too little data to say)."""
    if out_of_fold is None or len(labels) < MIN_ITEMS or min(Counter(labels).values()) < 2:
        return []
    classes = sorted(set(labels))
    return _ranked_issues([classes.index(label) for label in labels], out_of_fold, multi_label=False)


def multilabel_suspects(label_sets: Sequence[Sequence[str]], out_of_fold: np.ndarray | None, classes: list[str]) -> list[int]:
    """The same for label sets: items whose set the probabilities argue against (a category
    missing from it or one too many), most suspicious first."""
    counts = Counter(label for labels in label_sets for label in labels)
    if out_of_fold is None or len(label_sets) < MIN_ITEMS or min(counts.get(c, 0) for c in classes) < 2:
        return []
    return _ranked_issues([[classes.index(c) for c in labels] for labels in label_sets], out_of_fold, multi_label=True)


def _ranked_issues(given, out_of_fold: np.ndarray, multi_label: bool) -> list[int]:
    # Heavy imports, only where they are used.
    if multi_label:
        from cleanlab.multilabel_classification.filter import find_label_issues
    else:
        from cleanlab.filter import find_label_issues
        given = np.array(given)
    try:
        # n_jobs=1: a Celery (daemon) process may not start worker processes of its own.
        ranked = find_label_issues(
            labels=given, pred_probs=out_of_fold, return_indices_ranked_by="self_confidence", n_jobs=1
        )
    except ValueError as error:  # e.g. a category cleanlab cannot estimate noise for
        log.info("Label issue search skipped: %s", error)
        return []
    return [int(i) for i in ranked]


def flag(project: Project, ranked_item_ids: list[int]) -> int:
    """Put suspected items in the review queue, most suspicious first. Items already waiting in a
    queue, or that a reviewer already checked as suspects, are left alone."""
    with transaction.atomic(durable=True):
        checked = Review.objects.filter(item=OuterRef("pk"), queue=ReviewQueue.SUSPECTED)
        eligible = set(
            Item.objects.filter(
                project=project, pk__in=ranked_item_ids, status=Item.Status.GOLD, split=Split.TRAIN,
                review_queue=ReviewQueue.NONE,
            )
            .exclude(Exists(checked))
            .values_list("pk", flat=True)
        )
        chosen = [item_id for item_id in ranked_item_ids if item_id in eligible][:MAX_FLAGGED]
        if not chosen:
            return 0
        # The review queue is served in rank order: ranks below every item in the project put
        # the most suspicious first. (Gold items hold no annotation slot, so their rank only
        # orders review queues.)
        low = Item.objects.filter(project=project).aggregate(low=Min("rank"))["low"] or 0
        for position, item_id in enumerate(chosen):
            Item.objects.filter(pk=item_id).update(
                review_queue=ReviewQueue.SUSPECTED, rank=low - len(chosen) + position
            )
    return len(chosen)
