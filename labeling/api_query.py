"""Filters, ordering and cursor pages for API list endpoints, all from an allow-list.

A query parameter is either paging (`cursor`, `page_size`), `ordering`, or a filter the endpoint
names; anything else is a 400 that lists what is allowed. Filters map a public name to a fixed
lookup, so a caller can never reach into another table with a `__` path of their own."""
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

PAGING = {"cursor", "page_size", "format"}


class ListQuery:
    def __init__(self, filters: dict[str, str] | None = None, orderings: tuple[str, ...] = ("id", "-id")):
        self.filters = filters or {}  # public name -> ORM lookup (fixed by us, never by the caller)
        self.orderings = orderings  # the first is the default

    def apply(self, queryset, params):
        """The filtered queryset and the ordering for the cursor. Raises ValidationError (400)."""
        unknown = sorted(set(params) - PAGING - set(self.filters) - {"ordering"})
        if unknown:
            allowed = ", ".join(sorted(self.filters)) or "none"
            message = (f"Unknown parameter {unknown[0]!r}. Filters allowed here: {allowed}; "
                       f"ordering: {', '.join(self.orderings)}.")
            raise ValidationError({unknown[0]: [message]})
        for name, lookup in self.filters.items():
            if name in params:
                queryset = queryset.filter(**{lookup: params[name]})
        ordering = params.get("ordering", self.orderings[0])
        if ordering not in self.orderings:
            raise ValidationError({"ordering": [f"Order by one of: {', '.join(self.orderings)}."]})
        return queryset, ordering

    def paginate(self, queryset, request, page_size: int = 50):
        """One cursor page (never OFFSET) of the filtered, ordered queryset, and its paginator."""
        queryset, ordering = self.apply(queryset, request.query_params)
        paginator = CursorPagination()
        paginator.page_size = page_size
        paginator.max_page_size = 1000
        paginator.page_size_query_param = "page_size"
        # The id breaks ties so a page boundary inside equal values neither skips nor repeats rows.
        tie = "-id" if ordering.startswith("-") else "id"
        paginator.ordering = (ordering,) if ordering.lstrip("-") == "id" else (ordering, tie)
        try:
            page = paginator.paginate_queryset(queryset, request)
        except NotFound as exc:  # DRF's answer to a cursor it cannot decode: it is input to fix
            raise ValidationError({"cursor": ["Invalid cursor: use a page's next or previous link as it is."]}) from exc
        return page, paginator

    def parameters(self, choices: dict[str, list[str]] | None = None) -> list[OpenApiParameter]:
        """The schema's description of the same allow-list."""
        choices = choices or {}
        return [
            OpenApiParameter("cursor", str, description="The cursor from the previous page's `next` link."),
            OpenApiParameter("page_size", int, description="Rows per page (at most 1000)."),
            OpenApiParameter("ordering", str, enum=list(self.orderings), description="Sort order."),
            *(OpenApiParameter(name, str, enum=choices.get(name)) for name in self.filters),
        ]
