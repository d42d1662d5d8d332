"""Model registry: keyword rules, slices, model versions (training runs), predictions, embeddings."""
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from labeling.models import Category, Item, Project


class Rule(models.Model):
    """A keyword or regular expression that points to a category: the manual baseline."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rules")
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="rules")
    pattern = models.CharField(max_length=500)
    is_regex = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["category__order", "pattern"]
        constraints = [
            models.UniqueConstraint(fields=["project", "category", "pattern"], name="rule_unique_pattern")
        ]

    def __str__(self) -> str:
        return f"{self.pattern} → {self.category}"


class Slice(models.Model):
    """A named subset of the holdout (items containing any of the keywords) with its own metrics."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="slices")
    name = models.CharField(max_length=100)
    keywords = models.JSONField(default=list)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="slice_unique_name")]


class ModelVersion(models.Model):
    """One training run and, if it succeeds, the model it produced."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        VECTORISING = "vectorising"
        TRAINING = "training"
        EVALUATING = "evaluating"
        PREDICTING = "predicting"
        DONE = "done"
        FAILED = "failed"

    class Trigger(models.TextChoices):
        GOLD_COUNT = "gold_count", "new gold labels"
        SCHEDULE = "schedule"
        BUTTON = "button", "admin button"
        COMMAND = "command", "command line"
        API = "api"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=12, choices=Trigger.choices, default=Trigger.BUTTON)
    # Hash of the training set (item ids, labels, texts): a duplicated or retried run of the same
    # data finds its twin and does no work twice.
    snapshot_hash = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="0..100 for the progress bar")
    algorithm = models.CharField(max_length=50, blank=True)
    params = models.JSONField(default=dict, blank=True)
    trained_on = models.PositiveIntegerField(default=0)
    holdout_size = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    baselines = models.JSONField(default=dict, blank=True, help_text="Rules and majority metrics on the same holdout")
    selection = models.JSONField(default=dict, blank=True, help_text="Cross-validation report")
    artifact_path = models.CharField(max_length=500, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    active = models.BooleanField(default=False)
    promoted = models.BooleanField(default=False)
    promotion_reason = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Batch predictions after promotion run as one Celery task per chunk of unlabeled items (so
    # every worker helps): the chunks' [first id, last id] and the indexes of those finished.
    prediction_plan = models.JSONField(default=list, blank=True)
    predicted_chunks = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # Set every few seconds by the process doing the run (runs.heartbeat): when it stops, the
    # worker is gone, and the periodic check runs it again without waiting for the hard limit.
    alive_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="model_version_number"),
            models.UniqueConstraint(
                fields=["project", "snapshot_hash"], condition=~Q(snapshot_hash=""), name="model_version_snapshot"
            ),
            # One serving model per project.
            models.UniqueConstraint(fields=["project"], condition=Q(active=True), name="model_version_one_active"),
            # One run in flight per project.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=["queued", "vectorising", "training", "evaluating", "predicting"]),
                name="model_version_one_running",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} v{self.number} ({self.algorithm or self.status})"

    @property
    def weighted_f1(self) -> float | None:
        return self.metrics.get("weighted_f1")

    def beats(self, other: "ModelVersion | None", margin: float) -> bool:
        """Not worse than `other` by more than `margin` in holdout weighted F1."""
        if other is None or other.weighted_f1 is None:
            return True
        return (self.weighted_f1 or 0.0) >= other.weighted_f1 - margin

    def is_running(self) -> bool:
        return self.status not in (self.Status.DONE, self.Status.FAILED)


class Prediction(models.Model):
    """The active model's stored prediction for an item (batch inference after promotion)."""

    # Batch inference writes one row per unlabeled item (a million per run): in the database each
    # foreign-key constraint is a lookup per row at commit (the four took 0.1 s of PostgreSQL CPU
    # a chunk of 5,000, the item's alone 0.03 s) and each index one more insert per row.
    # Only the item keeps both: the annotate page reads predictions by item, and the constraint
    # guards the one key a concurrent import can delete. Nothing reads them by project, model
    # version or category; deleting one of those still cascades (Django's collector deletes the
    # rows, scanning the table), a rare admin operation.
    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="prediction")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="predictions", db_constraint=False, db_index=False
    )
    probabilities = models.JSONField(help_text="{category id: probability}")
    top_category = models.ForeignKey(
        Category, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    margin = models.FloatField(help_text="Top probability minus the second: small means uncertain.")
    created_at = models.DateTimeField(default=timezone.now)


class Embedding(models.Model):
    """An item's sentence embedding, computed once in the background and reused by every run."""

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="embedding")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    encoder = models.CharField(max_length=100)
    vector = models.BinaryField(help_text="float32 little-endian")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["project", "encoder"], name="embedding_by_project")]


class PredictLog(models.Model):
    """Online inference requests, for latency and error monitoring."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    endpoint = models.CharField(max_length=50)
    latency_ms = models.FloatField()
    ok = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        # The model page reads a project's latest requests: newest first, limited.
        indexes = [models.Index(fields=["project", "-created_at"], name="predictlog_latest")]
