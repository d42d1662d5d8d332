"""One access helper per object: 404 for projects you are not in, 403 for a role you lack."""
from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership, Project, Role


def get_membership(user, slug: str, role: str = Role.ANNOTATOR) -> Membership:
    """The user's membership in project `slug`, with at least `role`.

    Non-members get 404 (they may not even learn the project exists); members without the
    role get 403. Superusers act as admins of every project.
    """
    if not user.is_authenticated:
        raise Http404("No such project.")
    membership = (
        Membership.objects.select_related("project", "user").filter(user=user, project__slug=slug).first()
    )
    if membership is None:
        if not user.is_superuser:
            raise Http404("No such project.")
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise Http404("No such project.")
        # Superusers administer every project; a membership gives them a queue position too.
        membership, _ = Membership.objects.select_related("project", "user").get_or_create(
            user=user, project=project, defaults={"role": Role.ADMIN}
        )
    if not membership.has_role(role):
        raise PermissionDenied(f"This needs the {role} role in {membership.project.name}.")
    return membership


def projects_for(user):
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)
