"""A database outage answers 503 with a page that says so, instead of a 500 and a stack trace."""
import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import JsonResponse
from django.template.response import SimpleTemplateResponse

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "5"


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)) or not _is_outage(exception):
            return None
        log.warning("Database unavailable on %s: %s", request.path, exception)
        if request.path.startswith("/api/"):
            response = JsonResponse(
                {"detail": "The database is unavailable. Nothing was saved; retry in a few seconds."}, status=503
            )
        else:
            response = SimpleTemplateResponse("503.html", status=503).render()
        response["Retry-After"] = RETRY_AFTER_SECONDS
        return response


def _is_outage(exception: DatabaseError) -> bool:
    # SQLite's "database is locked" is contention, not an outage; everything else in these two
    # classes means the server is gone or refusing connections.
    return "database is locked" not in str(exception)
