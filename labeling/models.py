"""Labeling domain: projects, categories, members, items, leases, annotations, gold labels.

State and the rules derived from it live here; every write goes through `labeling.actions`.
"""
import hashlib
import re
import unicodedata

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

DEFAULT_CATEGORIES = ["natural-language-processing", "computer-vision", "mlops", "other"]


class Role(models.TextChoices):
    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    ADMIN = "admin"


# Each role includes the powers of the roles before it.
ROLE_RANK = {Role.ANNOTATOR: 1, Role.REVIEWER: 2, Role.ADMIN: 3}


class ReviewPolicy(models.TextChoices):
    ALL = "all", "review every completed item"
    SAMPLE = "sample", "review a random sample"
    DISAGREEMENTS = "disagreements", "review disagreements only"


class Project(models.Model):
    class Mode(models.TextChoices):
        SINGLE = "single", "single-label"
        MULTI = "multi", "multi-label"

    class Order(models.TextChoices):
        SEQUENTIAL = "sequential"
        RANDOM = "random"
        UNCERTAINTY = "uncertainty", "uncertainty (active learning)"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    guidelines = models.TextField(blank=True)
    guidelines_version = models.PositiveIntegerField(default=1)
    # Chosen at creation; fixed once the project has items (labels of one mode do not fit the other).
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.SINGLE)
    allow_none_of_these = models.BooleanField(
        default=False,
        help_text="Multi-label only: an item may get no category at all (an explicit “none of these”).",
    )
    annotations_per_item = models.PositiveSmallIntegerField(
        default=1, help_text="k: independent annotations each item needs, from k different people."
    )
    order = models.CharField(max_length=20, choices=Order.choices, default=Order.SEQUENTIAL)
    lease_minutes = models.PositiveIntegerField(default=settings.LABELLOOP["LEASE_MINUTES"])
    review_policy = models.CharField(max_length=20, choices=ReviewPolicy.choices, default=ReviewPolicy.DISAGREEMENTS)
    review_sample_percent = models.PositiveSmallIntegerField(default=10)
    holdout_percent = models.PositiveSmallIntegerField(
        default=20, help_text="Share of gold items frozen as the evaluation holdout (never trained on)."
    )
    honeypot_percent = models.PositiveSmallIntegerField(
        default=5, help_text="Share of an annotator's items that are known-gold checks."
    )
    # Modeling settings (used by modeling/): sampling order, retraining cadence, suggestions.
    retrain_every = models.PositiveIntegerField(
        default=50, help_text="Queue a training run after this many new gold labels (0: never automatically)."
    )
    promotion_margin = models.FloatField(
        default=0.01, help_text="A new model replaces the active one unless its holdout weighted F1 is lower by more than this."
    )
    blind_control_percent = models.PositiveSmallIntegerField(
        default=10, help_text="Share of items shown without a suggestion, to measure the suggestions' influence."
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Progress figures kept by a Celery task, so pages never count the whole item table.
    progress = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(annotations_per_item__gte=1), name="project_k_at_least_one"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def category_by_key(self) -> dict[str, "Category"]:
        return {c.shortcut: c for c in self.categories.all()}

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.allow_none_of_these and self.mode != self.Mode.MULTI:
            raise ValidationError({"allow_none_of_these": "Only a multi-label project can allow “none of these”."})

    @property
    def is_multi_label(self) -> bool:
        return self.mode == self.Mode.MULTI

    def accepts_empty_label(self) -> bool:
        """Whether a label with no category is an answer here ("none of these"), not a mistake."""
        return self.is_multi_label and self.allow_none_of_these

    def mode_is_fixed(self) -> bool:
        """The mode can change only while nothing has been imported or labeled."""
        return self.items.exists()


class Category(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="categories")
    name = models.CharField(max_length=100)
    shortcut = models.CharField(max_length=1, help_text="Key 1..9 that chooses this category.")
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="category_unique_name"),
            models.UniqueConstraint(fields=["project", "shortcut"], name="category_unique_key"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.ANNOTATOR)
    # Rank of the last item this person claimed: the next claim starts after it, so the cost of a
    # claim does not grow with how many items this person has already done (k > 1).
    queue_cursor = models.BigIntegerField(default=-(2**63))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} in {self.project}"

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Case-, accent-width- and whitespace-insensitive form used to find duplicates."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


_NOT_ALNUM = re.compile(r"[\W_]+")


def near_dup_key(title: str, text: str) -> str:
    """Items that differ only in case, spacing or punctuation share this key."""
    joined = _NOT_ALNUM.sub("", normalise_text(title) + normalise_text(text))
    return hashlib.blake2b(joined.encode("utf-8"), digest_size=16).hexdigest()


def content_hash(title: str, text: str) -> str:
    joined = normalise_text(title) + "\x1f" + normalise_text(text)
    return hashlib.blake2b(joined.encode("utf-8"), digest_size=16).hexdigest()


class ReviewQueue(models.TextChoices):
    NONE = "", "not queued"
    REVIEW = "review", "to review"
    DISAGREEMENT = "disagreement", "disagreements"
    SUSPECTED = "suspected", "suspected errors"


class Split(models.TextChoices):
    NONE = "", "not assigned"
    TRAIN = "train"
    HOLDOUT = "holdout"


class Item(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"  # still needs annotations
        COMPLETED = "completed"  # has its k annotations
        GOLD = "gold"  # has a final label

    # No index of its own: every query by project is served by a composite index that starts with it.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items", db_index=False)
    external_id = models.CharField(max_length=200, blank=True, default="")
    title = models.TextField(blank=True)
    text = models.TextField()
    meta = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=32)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    # Queue position: import sequence (sequential order) or a random number drawn once at import
    # (random order), so serving the queue is an index range scan, never ORDER BY random().
    rank = models.BigIntegerField()
    # Slots still free: k - submitted annotations - live leases. Claims take a slot, expiry and
    # skips give it back; the check constraint stops any path from over-leasing.
    open_slots = models.PositiveSmallIntegerField()
    annotation_count = models.PositiveSmallIntegerField(default=0)
    # Annotation round: a reviewer's rejection starts a new round with fresh annotations; the
    # rejected round's annotations stay in history.
    round = models.PositiveSmallIntegerField(default=0)
    review_queue = models.CharField(max_length=12, choices=ReviewQueue.choices, default=ReviewQueue.NONE)
    review_leased_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    review_lease_expires = models.DateTimeField(null=True, blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.NONE)
    # Letters and digits of title + text only: near-duplicates share it and so share a split.
    near_dup_key = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="item_unique_content"),
            models.UniqueConstraint(
                fields=["project", "external_id"],
                condition=~Q(external_id=""),
                name="item_unique_external_id",
            ),
            models.CheckConstraint(condition=Q(open_slots__gte=0), name="item_open_slots_not_negative"),
        ]
        indexes = [
            # The claim query: items of a project that still have a free slot, in queue order.
            models.Index(
                fields=["project", "rank"], condition=Q(open_slots__gt=0), name="item_claimable"
            ),
            models.Index(fields=["project", "status"], name="item_status"),
            # Review queues, served in rank order like the annotation queue.
            models.Index(
                fields=["project", "review_queue", "rank"],
                condition=~Q(review_queue=""),
                name="item_review_queue",
            ),
            # Honeypots: gold training items, found from a random rank without a scan.
            models.Index(
                fields=["project", "rank"], condition=Q(status="gold", split="train"), name="item_honeypot"
            ),
            models.Index(fields=["project", "split"], condition=~Q(split=""), name="item_split"),
            # Only the few items a reviewer holds: a full index would cost every import row.
            models.Index(
                fields=["review_leased_to"], condition=Q(review_leased_to__isnull=False), name="item_review_holder"
            ),
            models.Index(fields=["project", "near_dup_key"], condition=~Q(near_dup_key=""), name="item_near_dup"),
        ]

    def __str__(self) -> str:
        return self.title[:60] or self.text[:60]

    def needs_annotations(self) -> bool:
        return self.annotation_count < self.project.annotations_per_item


class Assignment(models.Model):
    """One person's turn at one item: a lease until submitted, skipped or expired."""

    class Status(models.TextChoices):
        LEASED = "leased"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LEASED)
    round = models.PositiveSmallIntegerField(default=0)
    # A known-gold check mixed into the queue: it takes no slot and changes no counts.
    is_honeypot = models.BooleanField(default=False)
    leased_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Last line of defence: one person never gets the same item twice in a round.
            models.UniqueConstraint(fields=["item", "annotator", "round"], name="assignment_once_per_person"),
        ]
        indexes = [
            models.Index(
                fields=["annotator", "project", "leased_at"],
                condition=Q(status="leased"),
                name="assignment_live_by_person",
            ),
            models.Index(fields=["expires_at"], condition=Q(status="leased"), name="assignment_live_expiry"),
        ]

    def is_expired(self, now=None) -> bool:
        return self.status == self.Status.LEASED and self.expires_at <= (now or timezone.now())


class Annotation(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotations")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    # Category ids, sorted: one for single-label projects, one or more for multi-label.
    categories = models.JSONField()
    client_request_id = models.CharField(max_length=64)
    duration_ms = models.PositiveIntegerField(default=0)
    suggestion_shown = models.BooleanField(default=False)
    suggested_category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model_version_id = models.BigIntegerField(null=True, blank=True)
    suggestion = models.JSONField(null=True, blank=True, help_text="Probabilities shown, by category id.")
    guidelines_version = models.PositiveIntegerField(default=1)
    round = models.PositiveSmallIntegerField(default=0)
    is_honeypot = models.BooleanField(default=False)
    # Set when a reviewer rejects the round: kept as history, no longer counts.
    rejected = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator", "round"], name="annotation_once_per_person"),
            models.UniqueConstraint(fields=["annotator", "client_request_id"], name="annotation_idempotent"),
        ]
        indexes = [
            models.Index(fields=["annotator", "project", "-created_at"], name="annotation_latest"),
            # Throughput over the last days and "anything new since the last recount?", per project.
            models.Index(fields=["project", "created_at"], name="annotation_by_time"),
        ]

    def agrees_with(self, other: "Annotation") -> bool:
        return sorted(self.categories) == sorted(other.categories)


class GoldLabel(models.Model):
    class Source(models.TextChoices):
        IMPORT = "import"
        CONSENSUS = "consensus"
        REVIEW = "review"

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="gold")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    categories = models.JSONField()
    source = models.CharField(max_length=10, choices=Source.choices)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(default=timezone.now)
    guidelines_version = models.PositiveIntegerField(default=1)
    review = models.ForeignKey("Review", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["project", "decided_at"], name="gold_by_project")]


class Review(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve"
        CORRECT = "correct"
        REJECT = "reject"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="reviews")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    categories = models.JSONField(default=list, blank=True)
    queue = models.CharField(max_length=12, choices=ReviewQueue.choices, default=ReviewQueue.REVIEW)
    round = models.PositiveSmallIntegerField(default=0)
    note = models.TextField(blank=True)
    client_request_id = models.CharField(max_length=64)
    guidelines_version = models.PositiveIntegerField(default=1)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reviewer", "client_request_id"], name="review_idempotent"),
        ]
        indexes = [models.Index(fields=["project", "-created_at"], name="review_latest")]


class GuidelineVersion(models.Model):
    """Every saved text of a project's guidelines; annotations and gold labels cite the version."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="guideline_versions")
    version = models.PositiveIntegerField()
    text = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-version"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="guideline_version_unique")]


class ImportJob(models.Model):
    """One import, kept for the history page and so errors can be shown after the fact."""

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    filename = models.CharField(max_length=255)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    created = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    gold_labels = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
