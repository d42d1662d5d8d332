"""REST API: the same actions as the HTML views, for programs (token auth) and the browser (session).

Status codes, the same on every endpoint:
201 a new lease, label or import; 200 a read, or a replay of something already done;
204 nothing to hand out (the queue is empty for you) or a skip done;
400 input to fix (the message says what); 401 not signed in; 403 your role in the project is too low;
404 a project you are not in (or that does not exist), or an item you do not hold in it;
409 the queue refused a request that was well formed (lease lost, already labeled, nothing to undo).
Every object is looked up inside the caller's project, so an id from another project is a 404.
"""
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from . import actions
from .access import get_membership
from .importer import import_with_history
from .models import Annotation, Assignment, Category, Item, Project, Role

# --- serializers ------------------------------------------------------------------------------


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["id", "name", "shortcut", "order"]


class ProjectSerializer(serializers.ModelSerializer):
    categories = CategorySerializer(many=True, read_only=True)

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "slug",
            "mode",
            "allow_none_of_these",
            "annotations_per_item",
            "order",
            "review_policy",
            "guidelines",
            "guidelines_version",
            "categories",
            "progress",
        ]


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ["id", "external_id", "title", "text", "status"]


class LeasedItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        # No status: "gold" would tell the annotator that a known-gold check is one (they are blind).
        fields = ["id", "external_id", "title", "text"]


class LeaseSerializer(serializers.ModelSerializer):
    item = LeasedItemSerializer(read_only=True)

    class Meta:
        model = Assignment
        fields = ["id", "item", "leased_at", "expires_at"]


class SubmitSerializer(serializers.Serializer):
    item = serializers.IntegerField(min_value=1, help_text="Id of an item you hold (from claim).")
    categories = serializers.ListField(
        child=serializers.CharField(max_length=100), min_length=0, max_length=9,
        help_text="Category ids or names (names are case-insensitive): exactly one in a single-label project, "
        "one or more in a multi-label one (an empty list only where the project allows “none of these”).",
    )
    client_request_id = serializers.CharField(
        max_length=64, help_text="Unique per submission; a retry with the same id stores nothing new."
    )
    duration_ms = serializers.IntegerField(min_value=0, required=False, default=0)


class AnnotationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Annotation
        fields = ["id", "item", "categories", "client_request_id", "duration_ms", "created_at"]


class ItemRefSerializer(serializers.Serializer):
    item = serializers.IntegerField(min_value=1)


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV (title, description|text, optional id, tag|label|labels) or JSONL.")


class ImportResultSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The import's record, as listed on the project's import page.")
    filename = serializers.CharField()
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    gold_labels = serializers.IntegerField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


NOT_SIGNED_IN = OpenApiResponse(ErrorSerializer, description="Not signed in (no or bad token).")
NO_SUCH_PROJECT = OpenApiResponse(ErrorSerializer, description="No such project, or you are not a member.")
ROLE_TOO_LOW = OpenApiResponse(ErrorSerializer, description="Your role in this project does not allow this.")
BAD_INPUT = OpenApiResponse(description="Input to fix; the message names the field and what is wrong.")
REFUSED = OpenApiResponse(ErrorSerializer, description="The queue refused; the message says why and what to do.")


# --- tokens -----------------------------------------------------------------------------------


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


@extend_schema_view(post=extend_schema(responses={200: TokenSerializer, 400: BAD_INPUT}))
class ObtainToken(ObtainAuthToken):
    """Exchange a username and password for your API token; send it as `Authorization: Token <key>`.

    The same token is returned every time (an admin can also make one with
    `python manage.py drf_create_token <username>`)."""


obtain_token = ObtainToken.as_view()


# --- import -----------------------------------------------------------------------------------


@extend_schema(
    request={"multipart/form-data": ImportUploadSerializer},
    responses={
        201: ImportResultSerializer, 400: ErrorSerializer, 401: NOT_SIGNED_IN, 403: ROLE_TOO_LOW, 404: NO_SUCH_PROJECT,
    },
    description="Import a CSV or JSONL file (project admins). All or nothing: on any bad row nothing is "
    "written and the message names the row and column. Duplicates are skipped and counted.",
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def import_file(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    upload = request.FILES.get("file")
    if upload is None:
        return _bad_request("Send the file as the multipart form field 'file'.")
    job = import_with_history(membership.project, upload, upload.name, user=request.user, size=upload.size)
    if job.error:
        return _bad_request(f"Nothing was imported from {job.filename}: {job.error}")
    return Response(ImportResultSerializer(job).data, status=status.HTTP_201_CREATED)


# --- the annotator's loop ---------------------------------------------------------------------


@extend_schema(
    request=None,
    responses={
        200: OpenApiResponse(LeaseSerializer, description="The item you already hold (claim again after a reload)."),
        201: OpenApiResponse(LeaseSerializer, description="A new lease."),
        204: OpenApiResponse(description="Nothing left for you to label right now."),
        401: NOT_SIGNED_IN,
        404: NO_SUCH_PROJECT,
    },
)
@api_view(["POST"])
def claim(request, slug):
    """Lease the next item to label, or return the one you already hold."""
    membership = get_membership(request.user, slug)
    held = actions.live_leases(membership.project, membership.user)
    if held:
        return Response(LeaseSerializer(held[0]).data)
    lease = actions.claim_next_item(membership)
    if lease is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(LeaseSerializer(lease).data, status=status.HTTP_201_CREATED)


@extend_schema(
    request=SubmitSerializer,
    responses={
        201: OpenApiResponse(AnnotationSerializer, description="Stored."),
        200: OpenApiResponse(AnnotationSerializer, description="A replay: stored before, nothing new."),
        400: BAD_INPUT,
        401: NOT_SIGNED_IN,
        404: OpenApiResponse(ErrorSerializer, description="No such project or no such item in it."),
        409: REFUSED,
    },
)
@api_view(["POST"])
@parser_classes([JSONParser, FormParser])
def submit(request, slug):
    """Label an item you hold. Idempotent on client_request_id: a retry answers 200 and stores nothing."""
    membership = get_membership(request.user, slug)
    project = membership.project
    data = SubmitSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    values = data.validated_data
    try:
        category_ids = _category_ids(project, values["categories"])
    except actions.QueueError as exc:
        return _bad_request(str(exc))
    if not category_ids and not project.accepts_empty_label():
        raise serializers.ValidationError({"categories": [_NO_CATEGORY[project.mode]]})
    if project.mode == Project.Mode.SINGLE and len(category_ids) != 1:
        return _bad_request("This project is single-label: send exactly one category.")
    _item_in_project(project, values["item"])
    # Two retries racing each other may both answer 201; either way one row is stored.
    replay = Annotation.objects.filter(annotator=request.user, client_request_id=values["client_request_id"]).exists()
    try:
        annotation = actions.submit_annotation(
            membership,
            item_id=values["item"],
            category_ids=category_ids,
            client_request_id=values["client_request_id"],
            duration_ms=values["duration_ms"],
        )
    except actions.QueueError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    answer = status.HTTP_200_OK if replay else status.HTTP_201_CREATED
    return Response(AnnotationSerializer(annotation).data, status=answer)


_NO_CATEGORY = {
    Project.Mode.SINGLE: "This project is single-label: send exactly one category.",
    Project.Mode.MULTI: "Send at least one category: this project does not allow “none of these”.",
}


def _category_ids(project: Project, given: list[str]) -> list[int]:
    """The project's category ids for `given` (ids or case-insensitive names).

    Raises QueueError naming the first value that is not one of this project's categories (an id
    from another project is unknown here too)."""
    categories = list(project.categories.all())
    by_id = {str(c.id): c.id for c in categories}
    by_name = {c.name.lower(): c.id for c in categories}
    ids = []
    for value in given:
        found = by_id.get(value.strip()) or by_name.get(value.strip().lower())
        if found is None:
            choices = ", ".join(f"{c.id} ({c.name})" for c in categories)
            raise actions.QueueError(f"Unknown category {value!r} in project {project.slug}; use one of: {choices}.")
        ids.append(found)
    return sorted(set(ids))


def _item_in_project(project: Project, item_id: int) -> None:
    if not Item.objects.filter(project=project, pk=item_id).exists():
        raise NotFound(f"No item {item_id} in project {project.slug}.")


@extend_schema(
    request=ItemRefSerializer,
    responses={
        204: OpenApiResponse(description="Skipped (also when it was skipped before)."),
        400: BAD_INPUT,
        401: NOT_SIGNED_IN,
        404: OpenApiResponse(ErrorSerializer, description="No such project, or you hold no lease on that item."),
        409: REFUSED,
    },
)
@api_view(["POST"])
@parser_classes([JSONParser, FormParser])
def skip(request, slug):
    """Give an item you hold back to the pool; you will not be offered it again."""
    membership = get_membership(request.user, slug)
    data = ItemRefSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    item_id = data.validated_data["item"]
    turn = (
        Assignment.objects.filter(project=membership.project, annotator=request.user, item_id=item_id)
        .order_by("-round")
        .values_list("status", flat=True)
        .first()
    )
    if turn is None:
        raise NotFound(f"You hold no item {item_id} in project {membership.project.slug}; claim one first.")
    if turn == Assignment.Status.SUBMITTED:
        return Response(
            {"detail": "You already labeled this item; undo the label first if you want to skip it."},
            status=status.HTTP_409_CONFLICT,
        )
    actions.skip_item(membership, item_id)
    return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(
    request=None,
    responses={
        200: OpenApiResponse(LeaseSerializer, description="The item is leased to you again."),
        401: NOT_SIGNED_IN,
        404: NO_SUCH_PROJECT,
        409: REFUSED,
    },
)
@api_view(["POST"])
def undo(request, slug):
    """Take back your latest label in this project; the item is leased to you again."""
    membership = get_membership(request.user, slug)
    try:
        lease = actions.undo_last_annotation(membership)
    except actions.QueueError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return Response(LeaseSerializer(lease).data)


def _bad_request(message: str) -> Response:
    return Response({"detail": message}, status=status.HTTP_400_BAD_REQUEST)
