"""Error answers: JSON under /api/, styled pages (templates/4xx.html, 500.html) everywhere else.

The page handlers that know about projects live in annotator/views.py (studio/urls.py names them);
this module holds what needs no app: the API's JSON shape, the 500 handler (no database, no request
context: templates/500.html extends nothing) and the middleware that gives require_POST's empty 405
a page.
"""

from django.http import JsonResponse
from django.shortcuts import render
from django.template import loader
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import requires_csrf_token

API_PREFIX = "/api/"

TITLES = {
    400: "Bad request.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    500: "Server error.",
}


def is_api(request) -> bool:
    """Requests whose answers are JSON, in success and in error (DRF formats its own views' errors)."""
    return request.path.startswith(API_PREFIX)


def api_error(status: int, detail: str = "") -> JsonResponse:
    """The shape DRF gives its own errors: {"detail": "..."}."""
    return JsonResponse({"detail": detail or TITLES[status]}, status=status)


@requires_csrf_token
def server_error(request):
    """500: JSON for the API, else templates/500.html rendered without a request context (the fault may
    lie in the database, the session or a context processor)."""
    if is_api(request):
        return api_error(500)
    from django.http import HttpResponseServerError

    return HttpResponseServerError(loader.get_template("500.html").render())


def page_above(request) -> str:
    """The nearest page above an action's URL: /p/x/tasks/5/submit/ -> /p/x/tasks/5/ (the form it came
    from), /p/x/review/label/7/ -> /p/x/review/; at worst the site's root."""
    prefix = request.path[: len(request.path) - len(request.path_info)]
    parts = request.path_info.rstrip("/").split("/")
    while len(parts) > 1:
        parts.pop()
        candidate = "/".join(parts) + "/"
        try:
            resolve(candidate)
        except Resolver404:
            continue
        return prefix + candidate
    return prefix + "/"


class MethodNotAllowedPageMiddleware:
    """require_POST (and its kind) answers 405 with an empty body: the browser then shows its own bare
    error page, e.g. after reopening a form's submit URL. Give such answers templates/405.html, which
    says what happened and links back. API answers are left alone (DRF writes JSON 405s itself), as is
    any 405 that already has a body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code != 405 or is_api(request) or getattr(response, "streaming", False):
            return response
        if response.content:
            return response
        allowed = [m.strip() for m in response.get("Allow", "").split(",") if m.strip()]
        context = {"method": request.method, "allowed": allowed, "back": page_above(request)}
        page = render(request, "405.html", context, status=405)
        page["Allow"] = response.get("Allow", "")
        return page
