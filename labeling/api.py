"""REST API: the same actions as the HTML views, for programs (token auth) and the browser (session)."""
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from . import actions
from .access import get_membership, projects_for
from .importer import ImportRejected, import_items
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


class LeaseSerializer(serializers.ModelSerializer):
    item = ItemSerializer(read_only=True)

    class Meta:
        model = Assignment
        fields = ["id", "item", "leased_at", "expires_at"]


class SubmitSerializer(serializers.Serializer):
    item = serializers.IntegerField(min_value=1)
    categories = serializers.ListField(
        child=serializers.CharField(max_length=100), min_length=1, max_length=9,
        help_text="Category ids or names.",
    )
    client_request_id = serializers.CharField(max_length=64, help_text="Unique per submission; a retry with the same id stores nothing new.")
    duration_ms = serializers.IntegerField(min_value=0, required=False, default=0)


class AnnotationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Annotation
        fields = ["id", "item", "categories", "client_request_id", "duration_ms", "created_at"]


class ItemRefSerializer(serializers.Serializer):
    item = serializers.IntegerField(min_value=1)


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class ImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    gold_labels = serializers.IntegerField()
    format = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


# --- views ------------------------------------------------------------------------------------


class ProjectList(generics.ListAPIView):
    serializer_class = ProjectSerializer
    ordering = "id"

    def get_queryset(self):
        return projects_for(self.request.user).prefetch_related("categories").order_by("id")


class ProjectDetail(generics.RetrieveAPIView):
    serializer_class = ProjectSerializer
    lookup_field = "slug"

    def get_object(self):
        return get_membership(self.request.user, self.kwargs["slug"]).project


@extend_schema(
    request=ImportUploadSerializer,
    responses={201: ImportResultSerializer, 400: ErrorSerializer},
    description="Import a CSV or JSONL file. All or nothing: on any bad row nothing is written.",
)
@api_view(["POST"])
@parser_classes([MultiPartParser, FormParser])
def import_file(request, slug):
    membership = get_membership(request.user, slug, Role.ADMIN)
    upload = request.FILES.get("file")
    if upload is None:
        return Response({"detail": "Send the file as multipart form field 'file'."}, status=400)
    try:
        result = import_items(membership.project, upload, upload.name, size=upload.size)
    except ImportRejected as exc:
        return Response({"detail": f"Nothing was imported: {exc}"}, status=400)
    return Response(ImportResultSerializer(result).data, status=201)


@extend_schema(request=None, responses={200: LeaseSerializer, 204: OpenApiResponse(description="No item left for you.")})
@api_view(["POST"])
def claim(request, slug):
    """Lease the next item to label (or return the one you already hold)."""
    membership = get_membership(request.user, slug)
    leases = actions.claim_stage(membership, depth=1)
    if not leases:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(LeaseSerializer(leases[0]).data)


@extend_schema(request=SubmitSerializer, responses={201: AnnotationSerializer, 200: AnnotationSerializer, 409: ErrorSerializer})
@api_view(["POST"])
@parser_classes([JSONParser, FormParser])
def submit(request, slug):
    """Label an item you hold. Idempotent on client_request_id (200 on a replay)."""
    membership = get_membership(request.user, slug)
    data = SubmitSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    values = data.validated_data
    try:
        category_ids = _category_ids(membership.project, values["categories"])
        existed = Annotation.objects.filter(
            annotator=request.user, client_request_id=values["client_request_id"]
        ).exists()
        annotation = actions.submit_annotation(
            membership,
            item_id=values["item"],
            category_ids=category_ids,
            client_request_id=values["client_request_id"],
            duration_ms=values["duration_ms"],
        )
    except actions.QueueError as exc:
        return Response({"detail": str(exc)}, status=409)
    return Response(AnnotationSerializer(annotation).data, status=200 if existed else 201)


def _category_ids(project: Project, given: list[str]) -> list[int]:
    by_name = {c.name.lower(): c.id for c in project.categories.all()}
    ids = []
    for value in given:
        if value.isdigit():
            ids.append(int(value))
        elif value.lower() in by_name:
            ids.append(by_name[value.lower()])
        else:
            raise actions.QueueError(f"Unknown category {value!r}; use an id or one of {sorted(by_name)}.")
    return ids


@extend_schema(request=ItemRefSerializer, responses={204: None})
@api_view(["POST"])
@parser_classes([JSONParser, FormParser])
def skip(request, slug):
    membership = get_membership(request.user, slug)
    data = ItemRefSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    actions.skip_item(membership, data.validated_data["item"])
    return Response(status=204)


@extend_schema(request=None, responses={200: LeaseSerializer, 409: ErrorSerializer})
@api_view(["POST"])
def undo(request, slug):
    """Take back your latest label in this project; the item is leased to you again."""
    membership = get_membership(request.user, slug)
    try:
        lease = actions.undo_last_annotation(membership)
    except actions.QueueError as exc:
        return Response({"detail": str(exc)}, status=409)
    return Response(LeaseSerializer(lease).data)
