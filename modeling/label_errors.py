"""Suspected label errors: gold training items whose label the data itself argues against.

Each gold training item gets a probability from a model that never saw it (K-fold cross-validation
with the run's chosen algorithm and settings); cleanlab's confident-learning filter then flags the
items whose given label is implausible, ranked by self-confidence (the probability the model gives
the given label: lowest first). The flagged items go to the reviewers' "suspected errors" queue,
highest risk first; a reviewer approves or corrects them, and nothing changes without a person.
"""
import logging
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
from django.db import transaction
from django.db.models import Exists, Min, OuterRef

from labeling.models import Item, Project, Review, ReviewQueue, Split

from . import training

log = logging.getLogger(__name__)

# Fewer than this and out-of-fold probabilities are too noisy to accuse anyone's label.
MIN_ITEMS = 30
# Out-of-fold probabilities cost K fits: on bigger training sets a random sample is checked per
# run (a different one each run), which bounds the cost and still covers everything over time.
MAX_ITEMS = 5_000
# A reviewer's queue is not a dumping ground: at most this many new suspects per run.
MAX_FLAGGED = 100


def suspects(
    texts: Sequence[str], labels: Sequence[str], algorithm: str, params: dict, rules=None, cv: int = 5, seed: int = 0
) -> list[int]:
    """Indices of likely mislabeled examples, most suspicious first ([] when there is too little
    data to say)."""
    if len(texts) < MIN_ITEMS or min(Counter(labels).values()) < 2:
        return []
    folds = training.cv_folds(labels, cv, seed)
    candidate = training.score_candidate(algorithm, params, list(texts), list(labels), folds, rules)
    if candidate.out_of_fold is None:
        return []
    classes = sorted(set(labels))
    given = np.array([classes.index(label) for label in labels])
    from cleanlab.filter import find_label_issues  # heavy import, only where it is used

    try:
        # n_jobs=1: a Celery (daemon) process may not start worker processes of its own.
        ranked = find_label_issues(
            labels=given, pred_probs=candidate.out_of_fold, return_indices_ranked_by="self_confidence", n_jobs=1
        )
    except ValueError as error:  # e.g. a category cleanlab cannot estimate noise for
        log.info("Label issue search skipped: %s", error)
        return []
    return [int(i) for i in ranked]


def sample(item_ids: list[int], seed: int) -> list[int]:
    """Positions of the training items checked this run (all of them up to MAX_ITEMS)."""
    if len(item_ids) <= MAX_ITEMS:
        return list(range(len(item_ids)))
    return sorted(random.Random(seed).sample(range(len(item_ids)), MAX_ITEMS))


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
