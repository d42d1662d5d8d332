"""REST API for running a project: create it, change its settings, its categories and its members.

Staff users (and superusers) create projects and become their first admin; everything else here
needs the admin role in the project, except reading the project and its categories (any member).
Status codes follow labeling.api: 400 input to fix, 401 not signed in, 403 role too low,
404 not your project (or no such object in it), 409 refused (e.g. removing the last admin).
"""
from django.contrib.auth import get_user_model
from django.db import IntegrityError
from django.forms.models import model_to_dict
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.response import Response

from . import actions
from .access import get_membership, projects_for
from .api import (
    BAD_INPUT,
    NO_SUCH_PROJECT,
    NOT_SIGNED_IN,
    ROLE_TOO_LOW,
    CategorySerializer,
    ErrorSerializer,
    ProjectSerializer,
)
from .api_query import ListQuery
from .forms import ProjectSettingsForm
from .models import Category, Membership, Project, Role

ACCESS_ERRORS = {401: NOT_SIGNED_IN, 403: ROLE_TOO_LOW, 404: NO_SUCH_PROJECT}
REFUSED = OpenApiResponse(ErrorSerializer, description="Refused; the message says why.")

# --- serializers ------------------------------------------------------------------------------


class ProjectCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=100, help_text="The project's address: /p/<slug>/.")
    mode = serializers.ChoiceField(
        choices=Project.Mode.choices, default=Project.Mode.SINGLE,
        help_text="single: one category per item; multi: a set of categories. Fixed once the project has items.",
    )
    allow_none_of_these = serializers.BooleanField(
        default=False, help_text="Multi-label only: an empty set of categories is a valid label."
    )
    annotations_per_item = serializers.IntegerField(min_value=1, max_value=20, default=1)
    categories = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, min_length=1, max_length=9,
        help_text="Category names, keys 1..9 in this order (default: the four ML project categories).",
    )

    def validate_slug(self, slug):
        if Project.objects.filter(slug=slug).exists():
            raise serializers.ValidationError(f"The slug {slug!r} is taken; choose another.")
        return slug

    def validate_categories(self, names):
        if len({n.strip().lower() for n in names}) != len(names):
            raise serializers.ValidationError("Category names must differ (case-insensitively).")
        return [n.strip() for n in names]

    def validate(self, data):
        if data.get("allow_none_of_these") and data.get("mode") != Project.Mode.MULTI:
            raise serializers.ValidationError(
                {"allow_none_of_these": ["Only a multi-label project can allow “none of these”."]}
            )
        return data


class ProjectSettingsSerializer(serializers.Serializer):
    """The settings page's fields; send only those you change. Validated by the same form."""

    name = serializers.CharField(max_length=200, required=False)
    mode = serializers.ChoiceField(
        choices=Project.Mode.choices, required=False,
        help_text="Can change only while the project has no items; otherwise 400.",
    )
    allow_none_of_these = serializers.BooleanField(required=False, help_text="Multi-label projects only.")
    guidelines = serializers.CharField(required=False, allow_blank=True, help_text="Markdown. A change starts a new guidelines version.")
    annotations_per_item = serializers.IntegerField(min_value=1, max_value=20, required=False)
    order = serializers.ChoiceField(choices=Project.Order.choices, required=False)
    lease_minutes = serializers.IntegerField(min_value=1, max_value=32767, required=False)
    review_policy = serializers.ChoiceField(choices=Project._meta.get_field("review_policy").choices, required=False)
    review_sample_percent = serializers.IntegerField(min_value=0, max_value=100, required=False)


class CategoryNameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "username", "role"]


class MemberAddSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="An existing user's username.")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.ANNOTATOR)


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


def page_of(serializer_class):
    return type(
        f"{serializer_class.__name__.removesuffix('Serializer')}PageSerializer",
        (serializers.Serializer,),
        {
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )


# --- projects ---------------------------------------------------------------------------------

PROJECTS = ListQuery(filters={"mode": "mode"}, orderings=("id", "-id", "name", "-name"))


@extend_schema(
    methods=["GET"],
    operation_id="projects_list",
    parameters=PROJECTS.parameters({"mode": list(Project.Mode.values)}),
    responses={200: page_of(ProjectSerializer), 400: BAD_INPUT, 401: NOT_SIGNED_IN},
    description="The projects you are a member of (all of them for a superuser).",
)
@extend_schema(
    methods=["POST"],
    operation_id="projects_create",
    request=ProjectCreateSerializer,
    responses={201: ProjectSerializer, 400: BAD_INPUT, 401: NOT_SIGNED_IN,
               403: OpenApiResponse(ErrorSerializer, description="Only staff users create projects.")},
    description="Create a project (staff users). You become its admin.",
)
@api_view(["GET", "POST"])
@parser_classes([JSONParser, FormParser])
def projects(request):
    if request.method == "GET":
        visible = projects_for(request.user).prefetch_related("categories")
        page, paginator = PROJECTS.paginate(visible, request)
        return paginator.get_paginated_response(ProjectSerializer(page, many=True).data)
    if not (request.user.is_staff or request.user.is_superuser):
        raise PermissionDenied("Only staff users create projects; ask one to create it and make you admin.")
    data = ProjectCreateSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    try:
        project = actions.create_project(owner=request.user, **values)
    except IntegrityError:  # the same slug, taken a moment ago by someone else
        return Response({"detail": f"The slug {values['slug']!r} is taken; choose another."}, status=400)
    return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


@extend_schema(methods=["GET"], responses={200: ProjectSerializer, 401: NOT_SIGNED_IN, 404: NO_SUCH_PROJECT})
@extend_schema(
    methods=["PATCH"],
    request=ProjectSettingsSerializer,
    responses={200: ProjectSerializer, 400: BAD_INPUT, **ACCESS_ERRORS},
    description="Change the project's settings (admins). Changed guidelines start a new guidelines version.",
)
@api_view(["GET", "PATCH"])
@parser_classes([JSONParser, FormParser])
def project(request, slug):
    if request.method == "GET":
        return Response(ProjectSerializer(get_membership(request.user, slug).project).data)
    membership = get_membership(request.user, slug, Role.ADMIN)
    ProjectSettingsSerializer(data=request.data).is_valid(raise_exception=True)
    current = model_to_dict(membership.project, fields=ProjectSettingsForm._meta.fields)
    changes = {k: v for k, v in request.data.items() if k in current}
    form = ProjectSettingsForm({**current, **changes}, instance=membership.project)
    if not form.is_valid():
        return Response(form.errors, status=status.HTTP_400_BAD_REQUEST)
    updated = actions.update_project_settings(membership.project, form, editor=request.user)
    return Response(ProjectSerializer(Project.objects.prefetch_related("categories").get(pk=updated.pk)).data)


# --- categories -------------------------------------------------------------------------------

CATEGORIES = ListQuery(orderings=("order", "id", "-id"))


@extend_schema(
    methods=["GET"],
    parameters=CATEGORIES.parameters(),
    responses={200: page_of(CategorySerializer), 400: BAD_INPUT, **ACCESS_ERRORS},
    description="The project's categories (any member), in key order.",
)
@extend_schema(
    methods=["POST"],
    request=CategoryNameSerializer,
    responses={201: CategorySerializer, 400: BAD_INPUT, **ACCESS_ERRORS},
    description="Add a category on the first free key 1..9 (admins; at most 9).",
)
@api_view(["GET", "POST"])
@parser_classes([JSONParser, FormParser])
def categories(request, slug):
    if request.method == "GET":
        project = get_membership(request.user, slug).project
        page, paginator = CATEGORIES.paginate(Category.objects.filter(project=project), request)
        return paginator.get_paginated_response(CategorySerializer(page, many=True).data)
    project = get_membership(request.user, slug, Role.ADMIN).project
    data = CategoryNameSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    try:
        category = actions.add_category(project, data.validated_data["name"].strip())
    except ValueError as exc:
        return Response({"name": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    return Response(CategorySerializer(category).data, status=status.HTTP_201_CREATED)


@extend_schema(
    request=CategoryNameSerializer,
    responses={200: CategorySerializer, 400: BAD_INPUT, **ACCESS_ERRORS,
               404: OpenApiResponse(ErrorSerializer, description="No such project or category in it.")},
    description="Rename a category (admins). Labels keep pointing at it: they store its id.",
)
@api_view(["PATCH"])
@parser_classes([JSONParser, FormParser])
def category(request, slug, category_id):
    project = get_membership(request.user, slug, Role.ADMIN).project
    found = get_object_or_404(Category, project=project, pk=category_id)
    data = CategoryNameSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    try:
        renamed = actions.rename_category(found, data.validated_data["name"].strip())
    except ValueError as exc:
        return Response({"name": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    return Response(CategorySerializer(renamed).data)


# --- members ----------------------------------------------------------------------------------

MEMBERS = ListQuery(filters={"role": "role"}, orderings=("id", "-id"))


@extend_schema(
    methods=["GET"],
    parameters=MEMBERS.parameters({"role": list(Role.values)}),
    responses={200: page_of(MemberSerializer), 400: BAD_INPUT, **ACCESS_ERRORS},
    description="The project's members and their roles (admins).",
)
@extend_schema(
    methods=["POST"],
    request=MemberAddSerializer,
    responses={201: MemberSerializer, 200: MemberSerializer, 400: BAD_INPUT, **ACCESS_ERRORS},
    description="Add an existing user with a role (admins); 200 if they were a member already "
    "(their role is left as it was: change it with PATCH).",
)
@api_view(["GET", "POST"])
@parser_classes([JSONParser, FormParser])
def members(request, slug):
    project = get_membership(request.user, slug, Role.ADMIN).project
    if request.method == "GET":
        page, paginator = MEMBERS.paginate(Membership.objects.filter(project=project).select_related("user"), request)
        return paginator.get_paginated_response(MemberSerializer(page, many=True).data)
    data = MemberAddSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    user = get_user_model().objects.filter(username=data.validated_data["username"]).first()
    if user is None:
        return Response({"username": ["No user with this username."]}, status=status.HTTP_400_BAD_REQUEST)
    existing = Membership.objects.filter(project=project, user=user).select_related("user").first()
    if existing is not None:
        return Response(MemberSerializer(existing).data)
    added = actions.add_member(project, user, data.validated_data["role"])
    return Response(MemberSerializer(added).data, status=status.HTTP_201_CREATED)


@extend_schema(
    methods=["PATCH"],
    request=MemberRoleSerializer,
    responses={200: MemberSerializer, 400: BAD_INPUT, **ACCESS_ERRORS, 409: REFUSED},
    description="Change a member's role (admins). The last admin cannot step down.",
)
@extend_schema(
    methods=["DELETE"],
    responses={204: OpenApiResponse(description="Removed; items they held go back to the pool."),
               **ACCESS_ERRORS, 409: REFUSED},
    description="Remove a member (admins). Their labels stay. The last admin cannot be removed.",
)
@api_view(["PATCH", "DELETE"])
@parser_classes([JSONParser, FormParser])
def member(request, slug, member_id):
    project = get_membership(request.user, slug, Role.ADMIN).project
    found = get_object_or_404(Membership.objects.select_related("user", "project"), project=project, pk=member_id)
    try:
        if request.method == "DELETE":
            actions.remove_member(found)
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = MemberRoleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changed = actions.change_role(found, data.validated_data["role"])
    except actions.MembershipError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return Response(MemberSerializer(changed).data)
