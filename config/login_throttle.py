"""Login throttling: after too many failed logins for one username, or from one client address,
further attempts are refused for a while (HTTP 429 with Retry-After and a message saying when).

Counts live in Django's cache (Redis in production, so every web process shares them). Only
failures count; a successful login clears its username's count. The login page, the admin's
login and the API token endpoint all go through here. Knobs (environment, see settings):
LOGIN_FAILURE_LIMIT, LOGIN_FAILURE_IP_LIMIT, LOGIN_FAILURE_WINDOW, LOGIN_LOCKOUT_SECONDS,
LOGIN_CLIENT_IP_HEADER.
"""

import hashlib
import math
import time
import unicodedata
from functools import wraps

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpResponse
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.settings import api_settings

PREFIX = "login-failures"


def client_ip(request) -> str:
    header = settings.LOGIN_CLIENT_IP_HEADER
    if header:  # set only behind a proxy that overwrites this header (a client could forge it otherwise)
        value = request.META.get(header, "").split(",")[0].strip()
        if value:
            return value
    return request.META.get("REMOTE_ADDR", "")


def normalise_username(username: str) -> str:
    """The account a username names, as the throttle counts it: NFKC (what Django's login form does
    before authenticating, so "ｖｉｃｔｉｍ" logs in as "victim"), then casefold, then NFKC again
    (casefolding can undo the normal form). A spelling the login form folds together is one count."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold()).strip()


def _keys(request, username: str) -> list[tuple[str, int]]:
    """(cache key, limit) for the username and for the client address."""
    name = hashlib.sha256(normalise_username(username).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    ip = hashlib.sha256(client_ip(request).encode()).hexdigest()[:32]
    return [
        (f"{PREFIX}:user:{name}", settings.LOGIN_FAILURE_LIMIT),
        (f"{PREFIX}:ip:{ip}", settings.LOGIN_FAILURE_IP_LIMIT),
    ]


def retry_after(request, username: str) -> int:
    """Seconds until a login for `username` from this client may be tried again; 0: now."""
    now = time.time()
    until = max((cache.get(f"{key}:until") or 0 for key, _ in _keys(request, username)), default=0)
    return math.ceil(until - now) if until > now else 0


def record_failure(request, username: str) -> None:
    window, lockout = settings.LOGIN_FAILURE_WINDOW, settings.LOGIN_LOCKOUT_SECONDS
    for key, limit in _keys(request, username):
        if cache.add(key, 1, window):
            count = 1
        else:
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, window)
                count = 1
        if count >= limit:
            cache.set(f"{key}:until", time.time() + lockout, lockout)
            cache.delete(key)  # a fresh count once the lockout ends


def record_success(request, username: str) -> None:
    key, _ = _keys(request, username)[0]
    cache.delete_many([key, f"{key}:until"])


def clear_all() -> None:
    """Forget every count (tests; or an admin lifting lockouts: `cache.clear()` also works)."""
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern(f"{PREFIX}:*")
    elif hasattr(cache, "_cache") and hasattr(cache._cache, "get_client"):  # Django's RedisCache
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"*{PREFIX}:*"))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


def message(wait: int) -> str:
    minutes = math.ceil(wait / 60)
    when = f"{minutes} minute{'s' if minutes != 1 else ''}" if wait >= 60 else f"{wait} seconds"
    return f"Too many failed login attempts for this account or from this address. Try again in {when}."


def throttled_login(view):
    """Wrap a Django login view (POST success redirects, failure re-renders the form with 200)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username", "")
        wait = retry_after(request, username)
        if wait:
            return _refused(request, view, wait, *args, **kwargs)
        response = view(request, *args, **kwargs)
        if response.status_code == 200:
            record_failure(request, username)
        elif response.status_code in (301, 302, 303):
            record_success(request, username)
        return response

    return wrapper


def _refused(request, view, wait, *args, **kwargs):
    if getattr(view, "view_class", None) is not None and issubclass(view.view_class, auth_views.LoginView):
        # The login page again (unbound form, nothing authenticated), with the message.
        request.method = "GET"
        response = view(request, *args, **kwargs)
        response.context_data["throttled"] = message(wait)
        response.status_code = 429
    else:
        response = HttpResponse(message(wait), status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(wait)
    return response


login_view = throttled_login(auth_views.LoginView.as_view())
admin_login_view = throttled_login(admin.site.login)


class ThrottledObtainAuthToken(ObtainAuthToken):
    """POST api/auth/token/ with username and password -> {"token": ...}; throttled like the login page."""

    parser_classes = (
        api_settings.DEFAULT_PARSER_CLASSES
    )  # ObtainAuthToken's own JSON parser has no depth limit

    def post(self, request, *args, **kwargs):
        username = request.data.get("username", "") if hasattr(request.data, "get") else ""
        username = username if isinstance(username, str) else ""
        wait = retry_after(request, username)
        if wait:
            raise Throttled(wait=wait, detail=message(wait))
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            record_failure(request, username)
            raise ValidationError(serializer.errors)
        record_success(request, username)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})


obtain_auth_token = ThrottledObtainAuthToken.as_view()
