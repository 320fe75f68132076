import time

from django.http import HttpResponseBadRequest


class ServerTimingMiddleware:
    """Adds `Server-Timing: app;dur=<ms>` so browsers' dev tools and load tests see server time."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        response["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - start):.1f}"
        return response


class RefuseNulInQueryMiddleware:
    """A query-string parameter holding a NUL character answers 400 naming the parameter.

    PostgreSQL cannot hold NUL in text (nor in JSON text), so such a value reaching a filter would
    fail inside the database as a 500. No page or API route has a use for it. Form bodies are
    checked where they are parsed (forms and serializers), which keep their own field errors.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return HttpResponseBadRequest(
                    f"The query parameter {key.replace(chr(0), '')!r} holds a NUL character.",
                    content_type="text/plain; charset=utf-8",
                )
        return self.get_response(request)
