"""Training runs: request, train, evaluate, promote safely, predict in batches.

The steps a Celery task (`modeling.tasks.train_model_version`) walks through for one ModelVersion:
  snapshot the gold training set → embeddings for items that have none (stored) → select and fit
  by cross-validation → write the artifact to a temporary file → evaluate on the frozen gold
  holdout beside the rules and majority baselines and the active model (re-scored on the same
  holdout) → promote in one transaction only if not worse than the active model by more than the
  project's margin → flag suspected label errors for review → store predictions for every
  unlabeled item (and the active-learning order), one Celery task per chunk of items so every
  worker shares the work; the last chunk to finish marks the run done.
Any failure before promotion marks the run failed with its error, deletes the temporary artifact
and leaves the serving model exactly as it was. A database outage hands the run back to the
queue (the task retries with backoff). Pure ML lives in training.py / evaluation.py; this module
is the ORM side.
"""
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from config import metrics
from labeling.models import Category, GoldLabel, Project, Split
from labeling.review import assign_splits

from . import (
    artifacts,
    embeddings,
    evaluation,
    label_errors,
    multilabel,
    predictions,
    serving,
    training,
    vectors,
)
from .models import ModelVersion, Rule, Slice

log = logging.getLogger(__name__)
RUNNING = [
    ModelVersion.Status.QUEUED,
    ModelVersion.Status.VECTORISING,
    ModelVersion.Status.TRAINING,
    ModelVersion.Status.EVALUATING,
    ModelVersion.Status.PREDICTING,
]
# A run whose worker died in one of these steps is trained again; in PREDICTING it is promoted
# already, and only its missing prediction chunks are handed out again.
TRAINING_STEPS = RUNNING[1:4]
# Below this a model learns nothing worth suggesting and its holdout figures are noise.
MIN_TRAIN_ITEMS = 10
# Choosing an algorithm costs (candidates x folds) fits: on bigger training sets the choice is
# made on a stratified sample this size, and only the chosen model is fitted on everything.
SELECTION_SAMPLE = 5000
# A run whose worker died is run again by the periodic check at most this many times in all.
MAX_ATTEMPTS = 3
# A queued run nobody started this long after it was requested lost its message (broker down).
LOST_MESSAGE_SECONDS = 300
# A run in a training step that missed this many heartbeats in a row lost its worker.
DEAD_AFTER_BEATS = 6


class RunSkipped(Exception):
    """Nothing to do: not enough data, or the same data was already trained on."""


# --- requesting -------------------------------------------------------------------------------


def request_training(project: Project, trigger: str, enqueue: bool = True) -> ModelVersion:
    """Create a queued run and enqueue its task after commit; if one is in flight, return it."""
    in_flight = ModelVersion.objects.filter(project=project, status__in=RUNNING).first()
    if in_flight is not None:
        return in_flight
    try:
        with transaction.atomic():
            number = (ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
            version = ModelVersion.objects.create(project=project, number=number, trigger=trigger)
            if enqueue:
                transaction.on_commit(lambda: enqueue_run(version.pk))
    except IntegrityError:
        # Another request queued a run between our check and our insert: that one is ours too.
        return ModelVersion.objects.get(project=project, status__in=RUNNING)
    return version


def enqueue_run(version_id: int) -> None:
    """Publish the run's task; a broker outage is logged, never raised into the web request (the
    periodic check re-publishes queued runs that nobody started)."""
    from .tasks import train_model_version

    try:
        train_model_version.delay(version_id)
    except Exception:  # kombu raises several unrelated types for a dead broker
        log.exception("Could not queue training run %s; the periodic check will queue it again", version_id)


def gold_since_last_run(project: Project) -> int:
    last = (
        ModelVersion.objects.filter(project=project)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    gold = GoldLabel.objects.filter(project=project)
    return gold.filter(decided_at__gt=last).count() if last else gold.count()


def retrain_if_due(project: Project) -> ModelVersion | None:
    """After every `retrain_every` new gold labels, queue a run (an indexed count, cheap)."""
    if project.retrain_every and gold_since_last_run(project) >= project.retrain_every:
        return request_training(project, ModelVersion.Trigger.GOLD_COUNT)
    return None


def scheduled_retrain(project: Project) -> ModelVersion | None:
    """The scheduled run: only when some gold label is new or changed since the last run."""
    if gold_since_last_run(project) > 0:
        return request_training(project, ModelVersion.Trigger.SCHEDULE)
    return None


def recover_stale_runs(now=None) -> list[int]:
    """Re-queue runs whose message was lost or whose worker died (heartbeat stopped), and
    hand out again the prediction chunks of runs stuck predicting; a run that has already had
    MAX_ATTEMPTS goes is marked failed instead. Returns the ids of runs it re-queued."""
    now = now or timezone.now()
    lost = ModelVersion.objects.filter(
        status=ModelVersion.Status.QUEUED, created_at__lt=now - timezone.timedelta(seconds=LOST_MESSAGE_SECONDS)
    )
    dead = ModelVersion.objects.filter(_presumed_dead(now))
    requeued = []
    for version in list(lost) + list(dead):
        # Its worker is gone: a temporary artifact it was writing or evaluating is garbage now.
        artifacts.discard_temporaries_of(artifact_owner(version))
        if version.attempts >= MAX_ATTEMPTS:
            fail(version, f"The run was started {version.attempts} times and never finished (worker killed or "
                          f"past the {settings.LABELLOOP['TRAIN_TIME_LIMIT']} s limit); start a new run.")
            continue
        enqueue_run(version.pk)
        requeued.append(version.pk)
    stuck = ModelVersion.objects.filter(status=ModelVersion.Status.PREDICTING, started_at__lt=now - _hard_limit())
    for version in stuck:
        _republish_missing_chunks(version)
    return requeued


def _republish_missing_chunks(version: ModelVersion) -> None:
    from .tasks import predict_chunk_task

    rounds = version.timings.get("republished", 0)
    if rounds >= MAX_ATTEMPTS:
        _give_up_predicting(version)
        return
    ModelVersion.objects.filter(pk=version.pk).update(
        timings={**version.timings, "republished": rounds + 1}, started_at=timezone.now()
    )
    for index in range(len(version.prediction_plan)):
        if index not in version.predicted_chunks:
            predict_chunk_task.delay(version.pk, index)


def _give_up_predicting(version: ModelVersion) -> None:
    missing = len(version.prediction_plan) - len(version.predicted_chunks)
    note = f"{missing} prediction chunks never finished; those items have no suggestion until the next run."
    finish(version, error="\n".join(filter(None, [version.error, note])))


def artifact_owner(version: ModelVersion) -> str:
    """The run's label in its temporary artifact's name ("slug-v3"): "-v3-" never matches v30."""
    return f"{version.project.slug}-v{version.number}"


def _hard_limit():
    return timezone.timedelta(seconds=settings.LABELLOOP["TRAIN_TIME_LIMIT"])


def _presumed_dead(now) -> Q:
    """Runs in a training step whose process is gone: silent for DEAD_AFTER_BEATS heartbeats (or,
    never having beaten, started longer ago than the hard time limit)."""
    silent_since = now - timezone.timedelta(seconds=_beat_seconds() * DEAD_AFTER_BEATS)
    return Q(status__in=TRAINING_STEPS) & (
        Q(alive_at__lt=silent_since) | Q(alive_at__isnull=True, started_at__lt=now - _hard_limit())
    )


def _beat_seconds() -> int:
    return settings.LABELLOOP["RUN_HEARTBEAT_SECONDS"]


@contextmanager
def heartbeat(version_id: int) -> Iterator[None]:
    """While the body runs, a thread of its own marks the run alive every RUN_HEARTBEAT_SECONDS,
    so a run whose process is SIGKILLed or whose machine is lost is run again within a few beats
    instead of after the hard time limit. The thread beats whatever the main thread is busy with
    (scikit-learn, numpy and torch let go of the GIL in their long loops; pure Python yields it
    every few milliseconds)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(_beat_seconds()):
                try:
                    ModelVersion.objects.filter(pk=version_id, status__in=RUNNING).update(alive_at=timezone.now())
                except DatabaseError:  # SQLite busy, a database outage: the next beat tries again
                    log.warning("Run %s: heartbeat not recorded", version_id, exc_info=True)
        finally:
            connection.close()  # the thread's own connection

    thread = threading.Thread(target=beat, name=f"run-{version_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- the run ----------------------------------------------------------------------------------


@dataclass
class TrainingSet:
    # Multi-label projects: each label is the sorted list of the item's category names.
    multilabel: bool = False
    train_ids: list[int] = field(default_factory=list)
    train_texts: list[str] = field(default_factory=list)
    train_labels: list = field(default_factory=list)  # category names (lists of names if multilabel)
    holdout_ids: list[int] = field(default_factory=list)
    holdout_texts: list[str] = field(default_factory=list)
    holdout_labels: list = field(default_factory=list)
    snapshot_hash: str = ""


@dataclass
class Run:
    """What one attempt carries between steps."""

    version: ModelVersion
    algorithms: list[str]
    fan_out: bool = False
    timings: dict = field(default_factory=dict)
    temporary: Path | None = None  # the artifact until it is published or discarded


def run(version_id: int, algorithms: list[str] | None = None, fan_out: bool = False) -> str:
    """Do the run; returns its status at the end ("predicting" while chunk tasks are out), or
    "taken" when another worker has it or it is over (a duplicated message). Raises
    OperationalError (database outage) for the task to retry.

    `fan_out`: hand the batch predictions to Celery, one task per chunk, so every worker shares
    them; otherwise (tests, `train --wait`) they are made here."""
    version = start(version_id)
    if version is None:
        return "taken"
    state = Run(version, list(algorithms or allowed_algorithms()), fan_out=fan_out)
    try:
        with heartbeat(version_id):
            _walk(state)
    except RunSkipped as skipped:
        finish(version, promotion_reason=str(skipped), timings=state.timings)
    except OperationalError:
        artifacts.discard(state.temporary)
        requeue(version)
        raise
    except Exception as error:
        log.exception("Training run %s failed", version_id)
        artifacts.discard(state.temporary)
        fail(version, describe(error), timings=state.timings)
    return ModelVersion.objects.values_list("status", flat=True).get(pk=version_id)


def _walk(state: Run) -> None:
    version = state.version
    project = version.project
    with timed(state.timings, "snapshot"):
        data = training_set(project, state.algorithms)
    check_enough(data)
    claim_snapshot(version, data.snapshot_hash)
    rules = rules_for(project)
    with timed(state.timings, "vectorise"):
        known = _vectorise(version, data) if uses_embeddings(state.algorithms) else {}
    notes: list[str] = []
    # The run's texts are encoded once (or read back from storage) for all that follows.
    with embeddings.remember(known):
        step(version, ModelVersion.Status.TRAINING, 30)
        with timed(state.timings, "train"):
            model, report, check = fit(data, state.algorithms, rules, seed=version.number)
        state.temporary, sha = artifacts.write_temporary(model, artifact_owner(version))
        step(version, ModelVersion.Status.EVALUATING, 60)
        with timed(state.timings, "evaluate"):
            results = evaluate(project, model, data, rules)
        ModelVersion.objects.filter(pk=version.pk).update(
            algorithm=report["algorithm"],
            params={**report["params"], **_thresholds(report), **_encoder_of(model)},
            selection=report,
            trained_on=len(data.train_ids), holdout_size=len(data.holdout_ids),
            metrics=results["metrics"], baselines=results["baselines"], artifact_sha256=sha,
        )
        promoted = promote_if_better(version, state.temporary, sha, results.get("active"))
        state.temporary = None  # published or discarded by the promotion
        # From here on the promotion stands whatever happens: a failure is noted on the run.
        with timed(state.timings, "label_errors"):
            suspected = _noting(notes, "flagging suspected label errors", flag_label_errors, version, data, report, check)
        state.timings["suspected"] = suspected or 0
    if not promoted:
        finish(version, timings=state.timings, error="\n".join(notes))
        return
    plan = _noting(notes, "planning predictions", predictions.plan, project) or []
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.PREDICTING, progress=75, prediction_plan=plan, predicted_chunks=[],
        error="\n".join(notes), timings={**state.timings, "predict_started": time.time(), "predicted": 0, "reranked": 0},
    )
    if not plan:
        finish(version, timings=state.timings)
    elif not state.fan_out or not _publish_chunks(version.pk, len(plan)):
        for index in range(len(plan)):
            predict_chunk(version.pk, index, model=model)


def _noting(notes: list[str], what: str, function, *args, **kwargs):
    """Run a step after promotion; a failure becomes a note on the run instead of undoing it."""
    try:
        return function(*args, **kwargs)
    except Exception as error:
        log.exception("Training run: %s failed", what)
        notes.append(f"The model was evaluated, but {what} failed: {describe(error)}")
        return None


def uses_embeddings(algorithms: list[str]) -> bool:
    return any(training.ALGORITHMS[name].uses_embeddings for name in algorithms)


def _publish_chunks(version_id: int, count: int) -> bool:
    """One Celery task per chunk; False (nothing published) if the broker refuses the first."""
    from .tasks import predict_chunk_task

    for index in range(count):
        try:
            predict_chunk_task.delay(version_id, index)
        except Exception:  # kombu raises several unrelated types for a dead broker
            if index == 0:
                log.warning("Broker unreachable: run %s makes its predictions itself", version_id)
                return False
            log.exception("Could not queue prediction chunk %s of run %s; the periodic check will", index, version_id)
    return True


def predict_chunk(version_id: int, index: int, model=None) -> str:
    """Score and store chunk `index` of a promoted run's prediction plan (once, however often it
    is asked). The last chunk to finish finishes the run. A chunk that fails is noted on the run,
    which still finishes: the model keeps serving, those items just have no suggestion yet."""
    version = ModelVersion.objects.select_related("project").get(pk=version_id)
    if version.status != ModelVersion.Status.PREDICTING or index in version.predicted_chunks:
        return "done already"
    first, last = version.prediction_plan[index]
    stats, note = {"predicted": 0, "reranked": 0}, ""
    try:
        stats = predictions.predict_range(version, model or serving.model_for(version), first, last)
    except OperationalError:
        raise
    except Exception as error:
        log.exception("Run %s: prediction chunk %s failed", version_id, index)
        note = f"Predictions for items {first}–{last} failed: {describe(error)}"
    return _chunk_done(version_id, index, stats, note)


def _chunk_done(version_id: int, index: int, stats: dict, note: str) -> str:
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version_id)
        if version.status != ModelVersion.Status.PREDICTING or index in version.predicted_chunks:
            return "done already"
        version.predicted_chunks.append(index)
        timings = version.timings
        for key, value in stats.items():
            timings[key] = timings.get(key, 0) + value
        total, done = len(version.prediction_plan), len(version.predicted_chunks)
        fields = {
            "predicted_chunks": version.predicted_chunks, "timings": timings,
            "progress": 75 + int(25 * done / total) if done < total else 100,
            "error": "\n".join(filter(None, [version.error, note])),
        }
        if done == total:
            timings["predict"] = round(time.time() - timings.pop("predict_started", time.time()), 3)
            fields.update(status=ModelVersion.Status.DONE, finished_at=timezone.now())
        ModelVersion.objects.filter(pk=version_id).update(**fields)
    if done == total:
        metrics.training_run_finished(ModelVersion.Status.DONE)
        return ModelVersion.Status.DONE
    return ModelVersion.Status.PREDICTING


def allowed_algorithms() -> list[str]:
    """The algorithms runs choose from: LABELLOOP["TRAIN_ALGORITHMS"] if set, else every
    available one (the embedding ones only with the [embeddings] extra)."""
    wanted = settings.LABELLOOP.get("TRAIN_ALGORITHMS") or list(training.ALGORITHMS)
    return [name for name in wanted if name in training.ALGORITHMS]


def describe(error: BaseException) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(error, SoftTimeLimitExceeded):
        return (
            f"The run took longer than {settings.LABELLOOP['TRAIN_SOFT_TIME_LIMIT']} s "
            "(TRAIN_SOFT_TIME_LIMIT) and was stopped; nothing changed. Raise the limit or restrict "
            "TRAIN_ALGORITHMS for big projects."
        )
    return f"{type(error).__name__}: {error}"


def start(version_id: int) -> ModelVersion | None:
    """Take the run for this worker. Returns None if another worker has it or it is finished
    (a duplicated message). A run whose worker died (its heartbeat stopped) is taken again."""
    now = timezone.now()
    taken = ModelVersion.objects.filter(pk=version_id).filter(
        Q(status=ModelVersion.Status.QUEUED) | _presumed_dead(now)
    ).update(
        status=ModelVersion.Status.VECTORISING, progress=5, started_at=now, alive_at=now,
        attempts=F("attempts") + 1, error="",
    )
    return ModelVersion.objects.select_related("project").get(pk=version_id) if taken else None


def step(version: ModelVersion, status: str, progress: int) -> None:
    version.status, version.progress = status, progress
    ModelVersion.objects.filter(pk=version.pk).update(status=status, progress=progress)


def requeue(version: ModelVersion) -> None:
    """Back to the queue for the task's retry; best effort, the database may be down."""
    try:
        # Not a promoted run that is predicting: its missing chunks are handed out again instead.
        ModelVersion.objects.filter(pk=version.pk, status__in=RUNNING[:4]).update(
            status=ModelVersion.Status.QUEUED, progress=0
        )
    except OperationalError:
        log.warning("Run %s could not be put back in the queue; the periodic check will", version.pk)


def fail(version: ModelVersion, error: str, timings: dict | None = None) -> None:
    fields = {"status": ModelVersion.Status.FAILED, "error": error[:5000], "finished_at": timezone.now()}
    if timings is not None:
        fields["timings"] = timings
    ModelVersion.objects.filter(pk=version.pk).update(**fields)
    metrics.training_run_finished(ModelVersion.Status.FAILED)


def finish(version: ModelVersion, **fields) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.DONE, progress=100, finished_at=timezone.now(), **fields
    )
    metrics.training_run_finished(ModelVersion.Status.DONE)


# --- steps ------------------------------------------------------------------------------------


def training_set(project: Project, algorithms: list[str] | None = None) -> TrainingSet:
    """Gold items split into train and holdout, and the run's key: a hash of the training items,
    their labels, the project's rules and the algorithms on offer (what a model is made from)."""
    assign_splits(project)
    names = dict(Category.objects.filter(project=project).values_list("id", "name"))
    rows = (
        GoldLabel.objects.filter(project=project)
        .exclude(item__split=Split.NONE)
        .order_by("item_id")
        .values_list("item_id", "item__title", "item__text", "item__content_hash", "categories", "item__split")
    )
    digest = hashlib.sha256()
    data = TrainingSet(multilabel=project.mode == Project.Mode.MULTI)
    for item_id, title, text, content, categories, split in rows.iterator(chunk_size=5000):
        label = sorted(names[c] for c in categories) if data.multilabel else names[categories[0]]
        full_text = training.item_text(title, text)
        if split == Split.TRAIN:
            digest.update(f"{item_id}:{content}:{label}\n".encode())
            data.train_ids.append(item_id)
            data.train_texts.append(full_text)
            data.train_labels.append(label)
        else:
            data.holdout_ids.append(item_id)
            data.holdout_texts.append(full_text)
            data.holdout_labels.append(label)
    digest.update(json.dumps([rules_for(project), sorted(algorithms or [])], sort_keys=True).encode())
    data.snapshot_hash = digest.hexdigest()
    return data


def check_enough(data: TrainingSet) -> None:
    seen = {name for names in data.train_labels for name in names} if data.multilabel else set(data.train_labels)
    if len(data.train_ids) < MIN_TRAIN_ITEMS or len(seen) < 2:
        raise RunSkipped(
            f"Not enough gold labels to train: {len(data.train_ids)} training items in "
            f"{len(seen)} categories; at least {MIN_TRAIN_ITEMS} in two categories are needed."
        )
    if not data.holdout_ids:
        raise RunSkipped("The gold holdout is empty, so a model could not be evaluated; label more items.")


def claim_snapshot(version: ModelVersion, snapshot_hash: str) -> None:
    """Key the run by its training data; the same data trained before means nothing to do."""
    twin = (
        ModelVersion.objects.filter(project_id=version.project_id, snapshot_hash=snapshot_hash)
        .exclude(pk=version.pk)
        .first()
    )
    if twin is not None and twin.status != ModelVersion.Status.FAILED:
        raise RunSkipped(f"Same training data as version {twin.number}; nothing new to learn.")
    with transaction.atomic():
        if twin is not None:
            # A failed run of the same data gives up its key to this retry.
            ModelVersion.objects.filter(pk=twin.pk).update(snapshot_hash="")
        ModelVersion.objects.filter(pk=version.pk).update(snapshot_hash=snapshot_hash)


def rules_for(project: Project) -> dict[str, list[str]] | None:
    """The project's rules as patterns per category name; None when it has none, which gives the
    built-in keyword lists (they only concern the four default categories)."""
    rules: dict[str, list[str]] = {}
    for category, pattern, is_regex in Rule.objects.filter(project=project).values_list(
        "category__name", "pattern", "is_regex"
    ):
        rules.setdefault(category, []).append(pattern if is_regex else training.keyword_pattern(pattern))
    return rules or None


def _vectorise(version: ModelVersion, data: TrainingSet) -> dict:
    """Vectors of every gold item by text: stored ones read back, missing ones encoded and stored
    in batches (a killed run keeps the batches it finished)."""
    items = list(zip(data.train_ids + data.holdout_ids, data.train_texts + data.holdout_texts, strict=True))

    def progress(done: int, missing: int) -> None:
        step(version, ModelVersion.Status.VECTORISING, 5 + int(25 * done / max(missing, 1)))

    return vectors.ensure(version.project_id, items, on_batch=progress)


def fit(data: TrainingSet, algorithms: list[str], rules, seed: int = 0):
    """Choose by cross-validation (on a stratified sample for big training sets), fit on all.

    Returns the model, the report and the label check: the chosen candidate's out-of-fold
    probabilities and the training positions they are for."""
    texts, labels = data.train_texts, data.train_labels
    if data.multilabel:  # one-vs-rest, per-category thresholds (modeling.multilabel)
        return multilabel.select_fit_and_check(
            texts, labels, algorithms=multilabel.algorithms_for(algorithms), seed=seed, rules=rules,
            sample=SELECTION_SAMPLE,
        )
    chosen = list(range(len(texts)))
    if len(texts) > SELECTION_SAMPLE:
        chosen = _stratified_sample(labels, SELECTION_SAMPLE, seed)
    with embeddings.remember():
        selection = training.select(
            [texts[i] for i in chosen], [labels[i] for i in chosen], algorithms=algorithms, seed=seed, rules=rules,
            fit_size=len(texts),
        )
        model, report = training.fit_selected(selection, texts, labels, rules)
    if len(chosen) < len(texts):
        report["selection_sample"] = len(chosen)
    return model, report, label_errors.Check(chosen, selection.best.out_of_fold)


def _stratified_sample(labels: list[str], size: int, seed: int) -> list[int]:
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rng = random.Random(seed)
    chosen = []
    for indices in by_label.values():
        share = max(2, round(size * len(indices) / len(labels)))
        chosen += rng.sample(indices, min(share, len(indices)))
    return sorted(chosen)


def evaluate(project: Project, model, data: TrainingSet, rules) -> dict:
    """The model, the rules and majority baselines, and the active model, on the same holdout."""
    keyword_slices = dict(Slice.objects.filter(project=project).values_list("name", "keywords"))
    # Which holdout items each slice holds, worked out once for every model scored here.
    slices = evaluation.slice_members(data.holdout_texts, keyword_slices)
    score, kind = (_score_multilabel, multilabel) if data.multilabel else (_score, training)
    metrics, decided = score(model, data, slices)
    result = {"metrics": metrics, "baselines": {}}
    for name in ("rules", "majority"):
        baseline = kind.make_estimator(name, rules=rules).fit(data.train_texts, data.train_labels)
        result["baselines"][name] = score(baseline, data, slices)[0]
    active = serving.active_version(project.pk)
    if active is not None:
        try:
            metrics, before = score(serving.model_for(active), data, slices)
        except serving.ModelUnavailable as error:
            log.warning("Active version %s could not be re-scored: %s", active.number, error)
        else:
            difference = _difference(data, decided, before, model.classes_)
            result["active"] = {
                "id": active.pk, "number": active.number, "metrics": metrics, "difference": difference,
            }
            result["baselines"]["previous"] = {"version": active.number, **metrics, "difference": difference}
    return result


def _score(model, data: TrainingSet, slices: dict) -> tuple[dict, list]:
    """The model's figures on the holdout, and what it decided for each item."""
    proba = model.predict_proba(data.holdout_texts)
    predicted = [model.classes_[i] for i in proba.argmax(axis=1)]
    metrics = evaluation.evaluate(data.holdout_labels, predicted, proba, model.classes_, members=slices)
    return metrics, predicted


def _score_multilabel(model, data: TrainingSet, slices: dict) -> tuple[dict, list]:
    proba = model.predict_proba(data.holdout_texts)
    decided = model.decide(proba)
    metrics = multilabel.evaluate(
        data.holdout_labels, decided, proba, model.classes_, model.thresholds_, members=slices,
    )
    return metrics, decided


def _difference(data: TrainingSet, decided: list, before: list, classes) -> dict[str, list[float]]:
    """95 % intervals of (this run's model − the serving one) on the same holdout items."""
    if data.multilabel:
        return multilabel.difference_intervals(data.holdout_labels, decided, before, classes)
    return evaluation.difference_intervals(data.holdout_labels, decided, before)


def _thresholds(report: dict) -> dict:
    """A multi-label model's thresholds by category, stored with its params for the suggestion
    cards (a small field, unlike the metrics)."""
    return {"thresholds": report["thresholds"]} if "thresholds" in report else {}


def _encoder_of(model) -> dict:
    """The sentence encoder whose vectors a model learned from, kept with its params: another
    one's vectors (a new package version, int8 on or off) are not what it was trained on."""
    return {"encoder": embeddings.encoder_name()} if getattr(model, "uses_embeddings", False) else {}


def encoder_changed(version: ModelVersion) -> dict | None:
    """When `version` learned from another encoder's vectors than this server makes now (or can
    make none): {"trained": that encoder, "now": this one, or "" without the [embeddings] extra}."""
    trained = (version.params or {}).get("encoder")
    if not trained:
        return None  # no sentence vectors in it; and naming the encoder would import torch here
    now = embeddings.encoder_name() if embeddings.available() else ""
    return {"trained": trained, "now": now} if trained != now else None


def headline(project: Project) -> tuple[str, str, object]:
    """The holdout figure promotion compares (metrics key, its name, the comparison)."""
    if project.mode == Project.Mode.MULTI:
        return "samples_f1", "samples F1", multilabel.compare
    return "weighted_f1", "weighted F1", evaluation.compare


def promote_if_better(version: ModelVersion, temporary_artifact, artifact_sha: str, active: dict | None = None) -> bool:
    """Publish the artifact and flip the active version in one transaction, if it earns it.

    `active`: the serving version re-scored on this run's holdout ({"id", "number", "metrics"});
    without it (no serving model, or its file failed its check) the stored figures are used."""
    project = version.project
    key, figure, compare = headline(project)
    with transaction.atomic(durable=True):
        Project.objects.select_for_update().filter(pk=project.pk).first()  # serialise promotions
        current = ModelVersion.objects.filter(project=project, active=True).first()
        version.refresh_from_db(fields=["metrics"])
        if current is not None and active is not None and active["id"] == current.pk:
            old_metrics, basis = active["metrics"], "on this holdout"
        else:
            old_metrics, basis = (current.metrics if current else None), "as recorded"
        if current is not None and not compare(version.metrics, old_metrics, project.promotion_margin):
            reason = (
                f"Not promoted: holdout {figure} {version.metrics[key]:.3f} is more than "
                f"{project.promotion_margin:.3f} below the active version {current.number} "
                f"({old_metrics[key]:.3f} {basis})." + _sureness(active, key, figure)
            )
            ModelVersion.objects.filter(pk=version.pk).update(promoted=False, promotion_reason=reason)
            artifacts.discard(temporary_artifact)
            return False
        final = artifacts.publish(temporary_artifact, f"{project.slug}-v{version.number}-{artifact_sha[:12]}.joblib")
        if current is not None:
            ModelVersion.objects.filter(pk=current.pk).update(active=False)
        previous = (
            f"version {current.number} ({old_metrics[key]:.3f} {basis})"
            if current is not None and old_metrics and old_metrics.get(key) is not None
            else "no active model"
        )
        ModelVersion.objects.filter(pk=version.pk).update(
            active=True, promoted=True, artifact_path=str(final), artifact_sha256=artifact_sha,
            promotion_reason=f"Promoted: holdout {figure} {version.metrics[key]:.3f} against {previous}."
            + _sureness(active, key, figure),
        )
    return True


def _sureness(active: dict | None, key: str, figure: str) -> str:
    """How sure the difference to the serving version is, when both were scored on these items:
    a difference whose interval holds 0 may be the holdout's luck of the draw."""
    low, high = ((active or {}).get("difference") or {}).get(key) or (None, None)
    if low is None:
        return ""
    if evaluation.decided_alike([low, high]):
        return f" It and version {active['number']} decide every holdout item alike."
    verdict = "better beyond noise" if low > 0 else "worse beyond noise" if high < 0 else "within noise"
    return f" Minus version {active['number']} in {figure}: {low:+.3f} to {high:+.3f} (95 %), {verdict}."


def flag_label_errors(version: ModelVersion, data: TrainingSet, report: dict, check: label_errors.Check) -> int:
    """Check the gold training labels against the chosen model's out-of-fold probabilities from
    the selection (every training item, or the selection's sample of a big set: a different one
    each run); suspects go to the reviewers' suspected-errors queue. Returns how many were flagged."""
    if report["algorithm"] in ("majority", "rules"):
        return 0  # they learn nothing from the texts, so they cannot argue with a label
    given = [data.train_labels[i] for i in check.positions]
    if data.multilabel:
        ranked = label_errors.multilabel_suspects(given, check.out_of_fold, check.classes)
    else:
        ranked = label_errors.suspects(given, check.out_of_fold)
    return label_errors.flag(version.project, [data.train_ids[check.positions[i]] for i in ranked])


class timed:
    """Context manager recording the seconds a step took into `timings[name]`."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = round(time.perf_counter() - self.started, 3)
