"""REST API of the modeling loop: online predictions, the model versions, starting a run.

Same status codes as labeling/api.py: 401 not signed in, 404 a project you are not in, 403 a role
too low; 409 well-formed but refused (no trained model yet); 503 the model file failed its check.
"""
import functools

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from drf_spectacular.drainage import set_override
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.decorators import api_view, authentication_classes, parser_classes
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.response import Response

from labeling.access import get_membership
from labeling.api import BAD_INPUT, NO_SUCH_PROJECT, NOT_SIGNED_IN, ROLE_TOO_LOW, ErrorSerializer
from labeling.models import Membership, Project, Role

from . import runs, serving
from .models import ModelVersion


def _max_chars() -> int:
    return settings.LABELLOOP["IMPORT_MAX_FIELD_CHARS"]


class PredictRequestSerializer(serializers.Serializer):
    title = serializers.CharField(required=False, allow_blank=True, default="", max_length=_max_chars())
    description = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=_max_chars(), help_text="Also accepted as `text`."
    )
    text = serializers.CharField(required=False, allow_blank=True, default="", max_length=_max_chars(), write_only=True)

    def validate(self, data):
        data["description"] = data.get("description") or data.pop("text", "")
        data.pop("text", None)
        if not (data["title"].strip() or data["description"].strip()):
            raise serializers.ValidationError("Send a title, a description, or both.")
        return data


class VersionRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    number = serializers.IntegerField()
    algorithm = serializers.CharField()


class PredictResponseSerializer(serializers.Serializer):
    model_version = VersionRefSerializer()
    probabilities = serializers.DictField(child=serializers.FloatField(), help_text="Category name -> probability.")
    top_category = serializers.CharField()
    latency_ms = serializers.FloatField(help_text="Time spent scoring (database lookups and model).")
    # Absent (not null) for single-label projects, so their answers are as before.
    categories = serializers.ListField(
        child=serializers.CharField(), required=False,
        help_text="Multi-label projects only: the predicted categories, those whose probability reaches their "
        "threshold; at least the top category unless the model was trained with items of no category.",
    )
    thresholds = serializers.DictField(
        child=serializers.FloatField(), required=False,
        help_text="Multi-label projects only: category name -> decision threshold (probability >= threshold).",
    )


class ModelVersionSerializer(serializers.ModelSerializer):
    weighted_f1 = serializers.SerializerMethodField()
    macro_f1 = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id", "number", "status", "progress", "trigger", "algorithm", "params", "trained_on",
            "holdout_size", "weighted_f1", "macro_f1", "active", "promoted", "promotion_reason",
            "error", "created_at", "started_at", "finished_at",
        ]

    def get_weighted_f1(self, version) -> float | None:
        return version.metrics.get("weighted_f1")

    def get_macro_f1(self, version) -> float | None:
        return version.metrics.get("macro_f1")


NO_MODEL = OpenApiResponse(ErrorSerializer, description="The project has no trained model yet.")
MODEL_BROKEN = OpenApiResponse(ErrorSerializer, description="The active model's file is missing or failed its hash check.")


class TokenAndMembership(TokenAuthentication):
    """DRF's token authentication (same header, same 401s) that reads, in the same query, the
    caller's membership in the URL's project and that project's active version id.

    A predict call with a token then costs one lookup instead of three (token, membership,
    version), a constant SQL string with no ORM query to compile. Nothing is cached: a promotion
    or a removed membership shows on the next request. Only a member's answer is taken from
    here; anyone else goes through get_membership (see `_member_and_active_version`)."""

    membership: Membership | None = None
    active_version_id: int | None = None

    def authenticate(self, request):
        self.slug = request.parser_context["kwargs"]["slug"]  # one instance per request
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        with connection.cursor() as cursor:
            serving.execute_prepared(
                cursor, "labelloop_predict_access", _token_and_membership_sql(), [self.slug, key]
            )
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, self.membership, self.active_version_id = _unpack(row)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, Token.from_db(connection.alias, ["key", "user_id"], [key, user.pk])


# On the wire it is DRF's token scheme: the schema names it tokenAuth, as for every other view.
set_override(TokenAndMembership, "suppress_collision_warning", True)

# Only the columns a request needs: the rest stay deferred (loaded on access, as with .only()),
# so no value is read without the ORM's conversions.
_USER_FIELDS = (
    "id", "username", "first_name", "last_name", "email", "is_staff", "is_active", "is_superuser",
)
_MEMBERSHIP_FIELDS = ("id", "user_id", "project_id", "role")
_PROJECT_FIELDS = ("id", "name", "slug")


@functools.cache
def _fields(model, wanted: tuple[str, ...]) -> list:
    """`wanted` in the model's field order, the order Model.from_db expects values in."""
    return [field for field in model._meta.concrete_fields if field.attname in wanted]


@functools.cache
def _token_and_membership_sql() -> str:
    """Token -> user, left-joined to the membership in project `slug` and its active version.

    Built once per process from the models' tables and columns."""
    quote, user_model = connection.ops.quote_name, get_user_model()

    def columns(alias, model, wanted):
        return [f"{alias}.{quote(field.column)}" for field in _fields(model, wanted)]

    def table(model):
        return quote(model._meta.db_table)

    selected = (
        columns("u", user_model, _USER_FIELDS) + columns("m", Membership, _MEMBERSHIP_FIELDS)
        + columns("p", Project, _PROJECT_FIELDS)
    )
    version = (
        f"(SELECT v.{quote('id')} FROM {table(ModelVersion)} v"
        f" WHERE v.{quote('project_id')} = p.{quote('id')} AND v.{quote('active')} LIMIT 1)"
    )
    return (
        f"SELECT {', '.join(selected)}, {version}"
        f" FROM {table(Token)} t"
        f" JOIN {table(user_model)} u ON u.{quote('id')} = t.{quote('user_id')}"
        f" LEFT JOIN {table(Project)} p ON p.{quote('slug')} = %s"
        f" LEFT JOIN {table(Membership)} m"
        f" ON m.{quote('user_id')} = u.{quote('id')} AND m.{quote('project_id')} = p.{quote('id')}"
        f" WHERE t.{quote('key')} = %s"
    )


def _unpack(row):
    """(user, membership or None, active version id) from a row of _token_and_membership_sql."""
    values = iter(row)
    user = _instance(get_user_model(), _USER_FIELDS, values)
    membership = _instance(Membership, _MEMBERSHIP_FIELDS, values)
    project = _instance(Project, _PROJECT_FIELDS, values)
    active_version_id = next(values)
    if membership is None:
        return user, None, None
    membership.user, membership.project = user, project
    return user, membership, active_version_id


def _instance(model, wanted, values):
    """The next columns of `values` as a `model` (None where the left join found no row)."""
    fields = _fields(model, wanted)
    taken = [next(values) for _ in fields]
    if all(value is None for value in taken):
        return None
    return model.from_db(connection.alias, [field.attname for field in fields], taken)


def _member_and_active_version(request, slug: str):
    """get_membership (any role) and the project's active version id, in one query for a member.

    A member calling with a token was found by TokenAndMembership already. Every other case (not
    signed in, not a member, a superuser without a membership) goes through get_membership itself,
    so the access rules stay in one place; the version is then looked up by serving.predict."""
    authenticator = request.successful_authenticator
    membership = authenticator.membership if isinstance(authenticator, TokenAndMembership) else None
    if membership is not None and membership.has_role(Role.ANNOTATOR):
        return membership, authenticator.active_version_id
    user = request.user
    if user.is_authenticated:
        membership = (
            Membership.objects.select_related("project", "user")
            .filter(user=user, project__slug=slug)
            .annotate(served_version_id=serving.active_version_id())
            .first()
        )
        if membership is not None and membership.has_role(Role.ANNOTATOR):
            return membership, membership.served_version_id
    return get_membership(user, slug), serving.UNKNOWN


@extend_schema(
    request=PredictRequestSerializer,
    responses={
        200: PredictResponseSerializer, 400: BAD_INPUT, 401: NOT_SIGNED_IN, 404: NO_SUCH_PROJECT,
        409: NO_MODEL, 503: MODEL_BROKEN,
    },
)
@api_view(["POST"])
@authentication_classes([TokenAndMembership, SessionAuthentication])  # the defaults' order
@parser_classes([JSONParser, FormParser])
def predict(request, slug):
    """Score a new text with the project's active model (any member of the project)."""
    membership, active_version_id = _member_and_active_version(request, slug)
    data = PredictRequestSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    project = membership.project
    try:
        served = serving.predict(
            project, data.validated_data["title"], data.validated_data["description"], user=request.user,
            active_version_id=active_version_id,
        )
    except serving.NoActiveModel as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    except serving.ModelUnavailable as exc:
        return Response(
            {"detail": f"The active model cannot be loaded ({exc}); an admin should train a new version."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return Response(
        {
            "model_version": {"id": served.version_id, "number": served.version_number, "algorithm": served.algorithm},
            "probabilities": served.probabilities,
            "top_category": served.top_category,
            "latency_ms": served.latency_ms,
            **_multilabel_fields(served),
        }
    )


def _multilabel_fields(served: serving.ServedPrediction) -> dict:
    if served.categories is None:
        return {}
    return {"categories": served.categories, "thresholds": served.thresholds}


@extend_schema(
    methods=["GET"],
    request=None,
    responses={200: ModelVersionSerializer(many=True), 401: NOT_SIGNED_IN, 403: ROLE_TOO_LOW, 404: NO_SUCH_PROJECT},
    description="The project's model versions, newest first (reviewers and admins).",
)
@extend_schema(
    methods=["POST"],
    request=None,
    responses={
        202: OpenApiResponse(ModelVersionSerializer, description="Queued (or the run already in flight)."),
        401: NOT_SIGNED_IN, 403: ROLE_TOO_LOW, 404: NO_SUCH_PROJECT,
    },
    description="Start a training run (admins). One run per project at a time: while one is in "
    "flight, that run is returned.",
)
@api_view(["GET", "POST"])
def model_versions(request, slug):
    if request.method == "POST":
        membership = get_membership(request.user, slug, Role.ADMIN)
        version = runs.request_training(membership.project, ModelVersion.Trigger.API)
        return Response(ModelVersionSerializer(version).data, status=status.HTTP_202_ACCEPTED)
    membership = get_membership(request.user, slug, Role.REVIEWER)
    versions = ModelVersion.objects.filter(project=membership.project).order_by("-number")[:100]
    return Response(ModelVersionSerializer(versions, many=True).data)
