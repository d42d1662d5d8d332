"""REST API for reviewers: claim from a QA queue, decide, list gold labels. Same actions as the
reviewer page (`labeling.review`); every object is looked up inside the caller's project."""

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.response import Response

from . import review
from .access import get_membership
from .actions import QueueError
from .api import (
    BAD_INPUT,
    NO_SUCH_PROJECT,
    NOT_SIGNED_IN,
    ROLE_TOO_LOW,
    ErrorSerializer,
    ItemSerializer,
    _category_ids,
)
from .api_query import ListQuery
from .models import Annotation, GoldLabel, Review, ReviewQueue, Role

# --- serializers ------------------------------------------------------------------------------


class ReviewAnnotationSerializer(serializers.ModelSerializer):
    annotator = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Annotation
        fields = [
            "id",
            "annotator",
            "categories",
            "round",
            "rejected",
            "duration_ms",
            "suggestion_shown",
            "suggested_category",
            "suggestion",
            "model_version_id",
            "guidelines_version",
            "created_at",
        ]


class GoldLabelSerializer(serializers.ModelSerializer):
    external_id = serializers.CharField(source="item.external_id", read_only=True)
    split = serializers.CharField(
        source="item.split", read_only=True, help_text="train, holdout or empty (not assigned yet)."
    )
    decided_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = GoldLabel
        fields = [
            "id",
            "item",
            "external_id",
            "categories",
            "source",
            "decided_by",
            "decided_at",
            "guidelines_version",
            "review",
            "split",
        ]


GOLD_FIELDS = [
    "id",
    "item",
    "categories",
    "source",
    "decided_by",
    "decided_at",
    "guidelines_version",
    "review",
]


class ReviewItemSerializer(serializers.Serializer):
    queue = serializers.ChoiceField(choices=review.QUEUES)
    lease_expires = serializers.DateTimeField()
    item = ItemSerializer()
    round = serializers.IntegerField(help_text="Annotation round; a rejection starts the next one.")
    annotations = ReviewAnnotationSerializer(
        many=True, help_text="The current round's annotations."
    )
    history = ReviewAnnotationSerializer(
        many=True, help_text="Annotations of earlier, rejected rounds."
    )
    annotations_agree = serializers.BooleanField(
        help_text="Whether approve is possible (outside the suspected queue)."
    )
    gold = GoldLabelSerializer(allow_null=True)


class ClaimReviewSerializer(serializers.Serializer):
    queue = serializers.ChoiceField(choices=review.QUEUES, default=ReviewQueue.REVIEW)


class DecisionSerializer(serializers.Serializer):
    item = serializers.IntegerField(min_value=1)
    decision = serializers.ChoiceField(choices=Review.Decision.choices)
    categories = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        default=list,
        max_length=9,
        help_text="For `correct`: the final category ids or names.",
    )
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)
    client_request_id = serializers.CharField(
        max_length=64,
        help_text="Unique per decision; a retry with the same id records nothing new.",
    )
    duration_ms = serializers.IntegerField(min_value=0, required=False, default=0)


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = serializers.SlugRelatedField(slug_field="username", read_only=True)
    queue = serializers.ChoiceField(
        choices=review.QUEUES, read_only=True, help_text="The queue it was decided from."
    )
    gold = serializers.SerializerMethodField()

    class Meta:
        model = Review
        fields = [
            "id",
            "item",
            "reviewer",
            "decision",
            "categories",
            "queue",
            "round",
            "note",
            "client_request_id",
            "guidelines_version",
            "duration_ms",
            "created_at",
            "gold",
        ]

    @extend_schema_field(GoldLabelSerializer(allow_null=True))
    def get_gold(self, decided: Review):
        gold = GoldLabel.objects.filter(review=decided).select_related("item", "decided_by").first()
        return GoldLabelSerializer(gold).data if gold else None


class QueueCountsSerializer(serializers.Serializer):
    review = serializers.IntegerField()
    disagreement = serializers.IntegerField()
    suspected = serializers.IntegerField()


class GoldPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = GoldLabelSerializer(many=True)


# The id never changes once the label exists (decided_at does, when a reviewer re-decides),
    # so pages neither skip nor repeat labels while new gold arrives.
    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "page_size"


# The id never changes once the label exists (decided_at does, when a reviewer re-decides),
# so pages neither skip nor repeat labels while new gold arrives.
GOLD_QUERY = ListQuery(filters={"source": "source", "split": "item__split"}, orderings=("-id", "id"))

# --- views ------------------------------------------------------------------------------------

ACCESS_ERRORS = {401: NOT_SIGNED_IN, 403: ROLE_TOO_LOW, 404: NO_SUCH_PROJECT}


@extend_schema(
    request=ClaimReviewSerializer,
    responses={
        200: ReviewItemSerializer,
        204: OpenApiResponse(description="Nothing in this queue for you."),
        400: BAD_INPUT,
        **ACCESS_ERRORS,
    },
)
@api_view(["POST"])
@parser_classes([JSONParser, FormParser])
def claim_review(request, slug):
    """Lease the next item of a review queue (or return the one you already hold there).
    Items you labeled yourself are never offered to you."""
    membership = get_membership(request.user, slug, Role.REVIEWER)
    data = ClaimReviewSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    item = review.claim_review(membership, data.validated_data["queue"])
    if item is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(ReviewItemSerializer(_review_item(item)).data)


def _review_item(item) -> dict:
    annotations = list(
        Annotation.objects.filter(item=item, is_honeypot=False)
        .select_related("annotator")
        .order_by("round", "id")
    )
    current = [a for a in annotations if a.round == item.round and not a.rejected]
    labels = {tuple(sorted(a.categories)) for a in current}
    return {
        "queue": item.review_queue,
        "lease_expires": item.review_lease_expires,
        "item": item,
        "round": item.round,
        "annotations": current,
        "history": [a for a in annotations if a.round != item.round or a.rejected],
        "annotations_agree": len(labels) == 1,
        "gold": GoldLabel.objects.filter(item=item).select_related("item", "decided_by").first(),
    }


@extend_schema(
    request=DecisionSerializer,
    responses={
        201: OpenApiResponse(ReviewSerializer, description="Decided."),
        200: OpenApiResponse(ReviewSerializer, description="A replay: the decision stored before."),
        400: BAD_INPUT,
        **ACCESS_ERRORS,
        404: OpenApiResponse(
            ErrorSerializer,
            description="No such project, you are not in it, or no such item in it.",
        ),
        409: OpenApiResponse(
            ErrorSerializer,
            description="Refused: the annotations disagree (approve), another reviewer holds the "
            "item, it was decided already, or you labeled it yourself.",
        ),
    },
)
@api_view(["POST"])
@parser_classes([JSONParser, FormParser])
def decide(request, slug):
    """Approve (the annotations agree), correct (to `categories`) or reject (the item goes back
    for a fresh round of annotations). Idempotent on client_request_id: 201, then 200 on a
    replay."""
    membership = get_membership(request.user, slug, Role.REVIEWER)
    data = DecisionSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    values = data.validated_data
    existed = Review.objects.filter(
        reviewer=request.user, client_request_id=values["client_request_id"]
    ).exists()
    try:
        category_ids = None
        if values["decision"] == Review.Decision.CORRECT:
            category_ids = _category_ids(membership.project, values["categories"])
        decided = review.decide_review(
            membership,
            item_id=values["item"],
            decision=values["decision"],
            client_request_id=values["client_request_id"],
            category_ids=category_ids,
            note=values["note"],
            duration_ms=values["duration_ms"],
        )
    except review.ItemNotFound as exc:
        return Response({"detail": str(exc)}, status=404)
    except review.ReviewError as exc:
        return Response({"detail": str(exc)}, status=409)
    except QueueError as exc:  # the categories given are not valid for this project
        return Response({"detail": str(exc)}, status=400)
    return Response(ReviewSerializer(decided).data, status=200 if existed else 201)


@extend_schema(responses={200: QueueCountsSerializer, **ACCESS_ERRORS})
@api_view(["GET"])
def review_queues(request, slug):
    """How many items wait in each review queue."""
    membership = get_membership(request.user, slug, Role.REVIEWER)
    return Response(QueueCountsSerializer(review.queue_counts(membership.project)).data)


@extend_schema(
    parameters=GOLD_QUERY.parameters(
        {"source": list(GoldLabel.Source.values), "split": ["train", "holdout"]}
    ),
    responses={200: GoldPageSerializer, 400: BAD_INPUT, **ACCESS_ERRORS},
    operation_id="projects_gold_list",
)
@api_view(["GET"])
def gold_labels(request, slug):
    """The project's gold labels with provenance, newest first. Reviewers and admins only:
    annotators must not see the answers to the honeypot checks they are given."""
    membership = get_membership(request.user, slug, Role.REVIEWER)
    labels = (
        GoldLabel.objects.filter(project=membership.project)
        .select_related("item", "decided_by")
        # Item text can be long and is not part of a gold row.
        .only(*GOLD_FIELDS, "item__external_id", "item__split", "decided_by__username")
    )
    page, paginator = GOLD_QUERY.paginate(labels, request, page_size=100)
    return paginator.get_paginated_response(GoldLabelSerializer(page, many=True).data)
