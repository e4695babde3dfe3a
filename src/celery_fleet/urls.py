"""Redis URL forms Celery and Kombu accept, parsed once, re-emitted in canonical form.

Kombu and Celery disagree on some spellings (a unix-socket result backend is
``redis+socket://``, not the ``socket://`` that the Celery docs' prose suggests), so the
settings module normalises every URL here and hands both libraries one spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

MASK = "***"
SSL_QUERY_KEYS = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
SCHEMES = ("redis", "rediss", "sentinel", "socket", "unix", "redis+socket")


class UrlError(ValueError):
    """A URL that no Redis client of Celery can use; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass
class RedisUrl:
    """One broker or backend URL: scheme, credentials, where, which db, SSL query options."""

    scheme: str  # redis | rediss | sentinel | socket
    username: str | None = None
    password: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    path: str | None = None  # unix socket path
    db: int = 0
    ssl_query: dict[str, str] = field(default_factory=dict)
    extra_query: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def render(self, *, masked: bool = False) -> str:
        """The URL Celery/Kombu get (SSL options are moved into the SSL dicts)."""
        auth = ""
        if self.username or self.password:
            user = quote(self.username or "", safe="")
            secret = MASK if masked else quote(self.password or "", safe="")
            auth = f"{user}:{secret}@" if self.password else f"{user}@"
        query = f"?{urlencode(self.extra_query)}" if self.extra_query else ""
        if self.scheme == "socket":
            params = {"virtual_host": str(self.db), **self.extra_query}
            return f"redis+socket://{auth}{self.path}?{urlencode(params)}"
        if self.scheme == "sentinel":
            return ";".join(
                f"sentinel://{auth}{_hostport(e)}/{self.db}{query}" for e in self.endpoints
            )
        return f"{self.scheme}://{auth}{_hostport(self.endpoints[0])}/{self.db}{query}"


def _hostport(e: Endpoint) -> str:
    host = f"[{e.host}]" if ":" in e.host else e.host
    return f"{host}:{e.port}"


def mask(url: str) -> str:
    """Hide the password of every ``;``-separated chunk, whatever the URL's form."""
    return re.sub(r"(://[^:/@;]*:)[^@;]*@", rf"\g<1>{MASK}@", url)


def parse(url: str, *, variable: str) -> RedisUrl:
    """Parse one (possibly ``;``-joined Sentinel) URL. Errors name ``variable``."""
    url = url.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise UrlError(
            f"{variable}: scheme {scheme or '(none)'!r} is not a Redis URL; use redis://, "
            "rediss:// (TLS), sentinel://host:26379;sentinel://... or "
            "socket:///path/to/redis.sock?db=N"
        )
    if scheme == "sentinel":
        return _parse_sentinel(url, variable)
    if ";" in url:
        raise UrlError(f"{variable}: only sentinel:// URLs can list several hosts with ';'")
    if scheme in ("socket", "unix", "redis+socket"):
        return _parse_socket(url, variable)
    parts = _split(url, variable)
    if "," in (parts.netloc or ""):
        raise UrlError(f"{variable}: one host per redis:// URL; for several use Sentinel")
    ssl_query, extra = _query(parts.query)
    if ssl_query and scheme == "redis":
        raise UrlError(
            f"{variable}: SSL options ({', '.join(sorted(ssl_query))}) with a plaintext "
            "redis:// URL; use rediss:// for TLS, or drop the ssl_* parameters"
        )
    return RedisUrl(
        scheme=scheme,
        username=_unq(parts.username),
        password=_unq(parts.password),
        endpoints=[Endpoint(parts.hostname or "localhost", _port(parts, 6379, variable))],
        db=_db(parts.path, extra.pop("virtual_host", None), variable),
        ssl_query=ssl_query,
        extra_query=extra,
    )


def _parse_sentinel(url: str, variable: str) -> RedisUrl:
    chunks = [c for c in url.split(";") if c.strip()]
    result = RedisUrl(scheme="sentinel")
    for chunk in chunks:
        chunk = chunk.strip()
        if not chunk.lower().startswith("sentinel://"):
            raise UrlError(f"{variable}: every ';'-separated part must start with sentinel://")
        if "," in chunk:
            raise UrlError(
                f"{variable}: Sentinel hosts are separated by ';', not ',' "
                "(sentinel://h1:26379;sentinel://h2:26379); with ',' only one host is used"
            )
        parts = _split(chunk, variable)
        ssl_query, extra = _query(parts.query)
        if ssl_query:
            raise UrlError(
                f"{variable}: ssl_* parameters in a sentinel:// URL are ignored by Celery's "
                "Sentinel result backend; set CELERY_BROKER_SSL_* / CELERY_REDIS_BACKEND_SSL_* "
                "instead"
            )
        db = _db(parts.path, extra.pop("virtual_host", None), variable)
        if result.endpoints and db != result.db:
            raise UrlError(f"{variable}: every Sentinel part must name the same db")
        result.db = db
        result.extra_query = extra
        result.username = result.username or _unq(parts.username)
        result.password = result.password or _unq(parts.password)
        result.endpoints.append(
            Endpoint(parts.hostname or "localhost", _port(parts, 26379, variable))
        )
    if not result.endpoints:
        raise UrlError(f"{variable}: a sentinel:// URL needs at least one host")
    return result


def _parse_socket(url: str, variable: str) -> RedisUrl:
    rest = url.split("://", 1)[1]
    auth, _, rest = rest.rpartition("@")
    path, _, query = rest.partition("?")
    if not path.startswith("/"):
        raise UrlError(
            f"{variable}: a socket URL needs an absolute path: socket:///run/redis/redis.sock"
        )
    user, _, password = auth.partition(":")
    ssl_query, extra = _query(query)
    if ssl_query:
        raise UrlError(f"{variable}: ssl_* parameters make no sense on a unix socket")
    db = extra.pop("virtual_host", None) or extra.pop("db", None)
    return RedisUrl(
        scheme="socket",
        username=_unq(user) or None,
        password=_unq(password) or None,
        path=path,
        db=_db(None, db, variable),
        extra_query=extra,
    )


def _split(url: str, variable: str):  # type: ignore[no-untyped-def]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise UrlError(f"{variable}: cannot parse the URL ({exc})") from None
    return parts


def _port(parts, default: int, variable: str) -> int:  # type: ignore[no-untyped-def]
    return int(parts.port or default)


def _query(query: str) -> tuple[dict[str, str], dict[str, str]]:
    pairs = dict(parse_qsl(query, keep_blank_values=True))
    ssl_query = {k: pairs.pop(k) for k in list(pairs) if k in SSL_QUERY_KEYS}
    return ssl_query, pairs


def _db(path: str | None, override: str | None, variable: str) -> int:
    raw = override if override is not None else (path or "").strip("/")
    if raw in ("", None):
        return 0
    try:
        db = int(raw)
    except ValueError:
        raise UrlError(f"{variable}: database {raw!r} is not a number (0-15)") from None
    if db < 0:
        raise UrlError(f"{variable}: database {db} must be 0 or more")
    return db


def _unq(value: str | None) -> str | None:
    return unquote(value) if value else None
