import time


class ServerTimingMiddleware:
    """Adds `Server-Timing: app;dur=<ms>` so browsers' dev tools and load tests see server time."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        response["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - start):.1f}"
        return response
