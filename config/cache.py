"""The Django cache on Redis, degrading to 'no cache' while Redis is unreachable.

Nothing the app keeps in the cache is the only copy of anything (dashboard aggregates, rate
counters): a lost Redis must cost speed, never a 500. So a connection error or a timeout reads
as a miss and a write is dropped, with one warning per minute in the log; the next call tries
Redis again, so the cache comes back by itself with the server. The socket timeouts (OPTIONS in
settings) bound how long one call can wait on a Redis that is there but not answering.
"""

import logging
import time

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class ResilientRedisCache(RedisCache):
    _last_warning = 0.0

    def _unavailable(self, op: str, exc: Exception, default=None):
        now = time.monotonic()
        if now - ResilientRedisCache._last_warning > 60:
            ResilientRedisCache._last_warning = now
            log.warning("cache unavailable (%s: %s); serving without it", op, exc)
        return default


def _guard(name: str, default_from=None, default=None):
    method = getattr(RedisCache, name)

    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except UNAVAILABLE as exc:
            fallback = default
            if default_from is not None:  # get(key, default) / get_many -> {}
                fallback = default_from(args, kwargs)
            return self._unavailable(name, exc, fallback)

    guarded.__name__ = name
    guarded.__doc__ = method.__doc__
    return guarded


def _get_default(args, kwargs):
    return kwargs.get("default", args[1] if len(args) > 1 else None)


for _name, _from, _default in [
    ("get", _get_default, None),
    ("get_many", None, {}),
    ("has_key", None, False),
    ("set", None, None),
    ("add", None, False),
    ("set_many", None, []),
    ("touch", None, False),
    ("delete", None, False),
    ("delete_many", None, None),
    ("incr", None, None),
    ("clear", None, None),
]:
    setattr(ResilientRedisCache, _name, _guard(_name, _from, _default))
