"""Environment -> Celery settings, secure by default.

``load(os.environ)`` returns the lowercase Celery settings the deployment means. Every
input is read, checked and normalised here, at load time, so that a mistake is an error
naming the variable and its fix, not a traceback deep in Kombu at the first publish.
The variables are documented in docs/settings.md.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from celery.app.defaults import _TO_NEW_KEY, NAMESPACES, flatten
from kombu.entity import Queue
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import urls

log = logging.getLogger("celery_fleet.settings")

PREFIX = "CELERY_"
# Default visibility timeout = task_time_limit + this: a task still running is never
# redelivered, and one in flight during a failover comes back in minutes, not an hour.
VISIBILITY_MARGIN = 300


class SettingsError(ValueError):
    """Bad input. ``variable`` names the environment variable at fault."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(message if message.startswith(variable) else f"{variable}: {message}")


# ---------------------------------------------------------------------------------------
# Production defaults. Each is a Celery setting, overridable as CELERY_<NAME>.
# Docs: https://docs.celeryq.dev/en/stable/userguide/configuration.html#<name-with-dashes>
# ---------------------------------------------------------------------------------------
PRODUCTION_DEFAULTS: dict[str, Any] = {
    # JSON only: pickle in a broker is remote code execution for whoever can write to it.
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "timezone": "UTC",
    "enable_utc": True,
    # Ack after the task ran; a worker killed mid-task gives the task back (at-least-once).
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    # Bounded prefetch: with acks_late a worker holds at most concurrency x 1 messages.
    "worker_prefetch_multiplier": 1,
    "worker_max_tasks_per_child": 1000,
    "task_soft_time_limit": 600,
    "task_time_limit": 900,
    # Off, as in Celery: together they cost about half the throughput of a small task
    # (python -m bench.run throughput; docs/benchmarks.md) and guarantee nothing. Each is
    # one variable away (docs/settings.md, "Opt-in extras"). Flower turns the workers'
    # task events on by remote control while it runs (its --enable_events).
    "task_track_started": False,
    # The real setting name (a common snippet says task_send_sent_signal, which Celery ignores).
    "task_send_sent_event": False,
    "worker_send_task_events": False,
    "result_extended": False,
    "result_compression": None,
    "result_expires": 3600,
    # Results survive a failover: retry the backend instead of failing the task.
    "result_backend_always_retry": True,
    "result_backend_max_retries": 20,
    "result_backend_max_sleep_between_retries_ms": 1000,
    # A publish that hits a failover is retried for ~20 s (Sentinel needs down-after +
    # an election to promote a replica) instead of raising after Celery's default 0.6 s.
    "task_publish_retry": True,
    "task_publish_retry_policy": {
        "max_retries": 20,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1,
    },
    "broker_pool_limit": 10,
    "broker_connection_retry": True,
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": 100,
    "broker_connection_timeout": 4.0,
    # Let running tasks finish when the broker connection drops (a failover). Measured on
    # real Sentinel failovers: with True, a cancelled task could end as TimeLimitExceeded
    # and never run again (tests/integration/test_failover.py); with False both finished.
    "worker_cancel_long_running_tasks_on_connection_loss": False,
    "redis_socket_timeout": 10.0,
    "redis_socket_connect_timeout": 5.0,
    "redis_retry_on_timeout": True,
    "redis_socket_keepalive": True,
    # Tried 5 against the network-partition stall (molecule ha): no measurable change.
    "redis_backend_health_check_interval": 25,
    "task_default_queue": "default",
    "task_queues": "default",
}

# Variables of this module that are not Celery setting names.
FLEET_KEYS = {
    "BROKER_SSL",
    "BROKER_SSL_CERT_REQS",
    "BROKER_SSL_CA_CERTS",
    "BROKER_SSL_CERTFILE",
    "BROKER_SSL_KEYFILE",
    "BROKER_SSL_CHECK_HOSTNAME",
    "REDIS_BACKEND_SSL",
    "REDIS_BACKEND_SSL_CERT_REQS",
    "REDIS_BACKEND_SSL_CA_CERTS",
    "REDIS_BACKEND_SSL_CERTFILE",
    "REDIS_BACKEND_SSL_KEYFILE",
    "REDIS_BACKEND_SSL_CHECK_HOSTNAME",
    "SENTINEL_MASTER_NAME",
    "SENTINEL_MIN_OTHER_SENTINELS",
    "SENTINEL_USERNAME",
    "SENTINEL_PASSWORD",
    "SENTINEL_SSL",
    "SENTINEL_SOCKET_TIMEOUT",
    "VISIBILITY_TIMEOUT",
    "BROKER_WAIT_REPLICAS",
    "BROKER_WAIT_TIMEOUT_MS",
}
# CELERY_* variables read by the celery command itself or by Celery internals.
NOT_SETTINGS = {
    "APP",
    "LOADER",
    "CONFIG_MODULE",
    "WORKDIR",
    "RDB_HOST",
    "RDB_PORT",
    "RDBSIG",
    "TRACE_APP",
    "BENCH",
    "CUSTOM_WORKER_POOL",
    "LOG_LEVEL",
    "LOG_FILE",
    "PID_FILE",
    "CHDIR",
}
# Names that users write because a blog post did; each maps to the real one.
KNOWN_MISTAKES = {
    "RESULT_BACKEND_USE_SSL": "CELERY_REDIS_BACKEND_USE_SSL (or CELERY_REDIS_BACKEND_SSL_*)",
    "TASK_SEND_SENT_SIGNAL": "CELERY_TASK_SEND_SENT_EVENT",
    "REDIS_USE_SSL": "CELERY_REDIS_BACKEND_USE_SSL (or CELERY_REDIS_BACKEND_SSL_*)",
    "BROKER_SSL_OPTIONS": "CELERY_BROKER_USE_SSL (or CELERY_BROKER_SSL_*)",
}

# Opt-in reliable fetch (celery_fleet.transport): the transport per broker URL scheme.
RELIABLE_FETCH_VAR = "CELERY_FLEET_RELIABLE_FETCH"
RELIABLE_TRANSPORTS = {
    "redis": "celery_fleet.transport:Transport",
    "rediss": "celery_fleet.transport:Transport",
    "socket": "celery_fleet.transport:Transport",
    "sentinel": "celery_fleet.transport:SentinelTransport",
}

# Settings this module parses itself (task_queues: "default,critical").
RAW_STRINGS = {"task_queues", "broker_url", "result_backend"}

CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
CELERY_OPTIONS = dict(flatten(NAMESPACES))
# Serializers whose decoding runs code chosen by whoever can write to the broker or the
# result backend (Kombu's docs: "pickle ... can be exploited"; PyYAML's full loader too).
UNSAFE_SERIALIZERS = {"pickle", "yaml", "application/x-python-serialize", "application/x-yaml"}
SERIALIZER_SETTINGS = (
    "accept_content",
    "result_accept_content",
    "task_serializer",
    "result_serializer",
    "event_serializer",
)
ALLOW_UNSAFE_VAR = "CELERY_FLEET_ALLOW_UNSAFE_SERIALIZERS"
# The largest --time-limit of the worker pools on this host (the celery role writes it).
LONGEST_VAR = "CELERY_FLEET_LONGEST_TIME_LIMIT"
# How workers and beat log: one JSON object per line (celery_fleet.logs), or Celery's text.
LOG_FORMAT_VAR = "CELERY_FLEET_LOG_FORMAT"
LOG_FORMATS = ("json", "text")
# Beat high availability (celery_fleet.beatlock): a lock in the broker, standby beats.
BEAT_LOCK_VAR = "CELERY_FLEET_BEAT_LOCK"
BEAT_LOCK_TTL_VAR = "CELERY_FLEET_BEAT_LOCK_TTL"
BEAT_LOCK_TTL_DEFAULT = 30.0
BEAT_LOCK_TTL_MIN = 3.0
BEAT_LOCK_SCHEDULER = "celery_fleet.beatlock:LockedScheduler"
TRUE = {"1", "true", "yes", "on", "y"}
FALSE = {"0", "false", "no", "off", "n", ""}


@dataclass(frozen=True)
class Tls:
    """TLS options for one side (broker or result backend)."""

    enabled: bool
    cert_reqs: str = "required"
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True

    def redis_kwargs(self) -> dict[str, Any]:
        """The ``ssl_*`` keyword arguments of redis-py's SSLConnection."""
        return {
            "ssl_cert_reqs": CERT_REQS[self.cert_reqs],
            "ssl_ca_certs": self.ca_certs,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_check_hostname": self.check_hostname,
        }


# ---------------------------------------------------------------------------------------
# Parsing helpers: each error names the variable.
# ---------------------------------------------------------------------------------------
def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise SettingsError(name, f"{raw!r} is not a boolean; use true or false")


def parse_number(name: str, raw: str, kind: Callable[[str], Any] = float) -> Any:
    value = raw.strip()
    if value.lower() in ("none", "null") and kind is not int:
        return None
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(name, f"{raw!r} is not {what}; set e.g. {name}=10") from None


def _parse_json(name: str, raw: str, want: type) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(name, f"is not valid JSON ({exc.msg}); quote it as JSON") from None
    if not isinstance(value, want):
        raise SettingsError(name, f"must be a JSON {want.__name__}")
    return value


def parse_setting(name: str, setting: str, raw: str) -> Any:
    """Type a generic Celery setting from its entry in Celery's own settings table."""
    option = CELERY_OPTIONS[setting]
    kind = option.type if isinstance(option.type, str) else "any"
    if kind == "bool":
        return parse_bool(name, raw)
    if kind == "int":
        if raw.strip().lower() in ("none", "null"):
            return None
        return parse_number(name, raw, int)
    if kind == "float":
        return parse_number(name, raw, float)
    if kind in ("list", "tuple"):
        if raw.strip().startswith("["):
            return _parse_json(name, raw, list)
        return [item.strip() for item in raw.split(",") if item.strip()]
    if kind == "dict":
        return _parse_json(name, raw, dict)
    if kind == "any" and raw.strip()[:1] in ("{", "["):
        return json.loads(raw)
    return raw


def check_file(name: str, path: str | None) -> None:
    """Open the file as this process will: a missing or unreadable file is named now."""
    if path is None:
        return
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise SettingsError(
            name, f"file {path!r} does not exist; point it at the PEM file"
        ) from None
    except PermissionError:
        raise SettingsError(
            name,
            f"file {path!r} is not readable by this user (uid {os.getuid()}); fix the owner "
            "or mode of the file and its folders (keys: 0600, owned by the service user)",
        ) from None
    except IsADirectoryError:
        raise SettingsError(name, f"{path!r} is a folder; point it at the PEM file") from None


# ---------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------
def _unknown(variable: str) -> SettingsError:
    suffix = variable[len(PREFIX) :]
    if suffix in KNOWN_MISTAKES:
        hint = KNOWN_MISTAKES[suffix]
        return SettingsError(variable, f"is not a Celery setting; did you mean {hint}?")
    old = _TO_NEW_KEY.get(variable) or _TO_NEW_KEY.get(suffix)
    if old:
        return SettingsError(
            variable, f"is the old name of {old}; use {PREFIX}{old.upper()} instead"
        )
    candidates = [PREFIX + k.upper() for k in CELERY_OPTIONS] + [PREFIX + k for k in FLEET_KEYS]
    close = difflib.get_close_matches(variable, candidates, n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}?" if close else "see docs/settings.md for the names"
    return SettingsError(variable, f"is not a Celery setting; {hint}")


def _tls(env: Mapping[str, str], prefix: str, url: urls.RedisUrl, inherit: Tls | None) -> Tls:
    """TLS for one side from ``<prefix>_SSL*``, the URL's ssl_* query and the JSON dict."""
    side = {
        "ssl_" + k[len(prefix) + 5 :].lower(): v
        for k, v in env.items()
        if k.startswith(prefix + "_SSL_")
    }
    use_ssl_var = prefix + "_USE_SSL"
    if env.get(use_ssl_var):
        for key, value in _parse_json(use_ssl_var, env[use_ssl_var], dict).items():
            key = "ssl_" + key.removeprefix("ssl_")
            side.setdefault(key, str(value))
    for key, value in url.ssl_query.items():
        if key in side and side[key] != value:
            raise SettingsError(
                f"{prefix}_{key.upper()}",
                f"conflicts with {key}={value!r} in the URL; keep one of the two",
            )
        side[key] = value

    enabled_var = f"{prefix}_SSL"
    if url.scheme == "rediss":
        enabled = True
    elif url.scheme == "sentinel":
        default = inherit.enabled if inherit else True
        raw = env.get(enabled_var)
        enabled = parse_bool(enabled_var, raw) if raw is not None else default
    else:
        enabled = False
    if not enabled:
        if side and url.scheme in ("redis", "socket"):
            names = ", ".join(sorted(f"{prefix}_{k.upper()}" for k in side))
            raise SettingsError(
                names.split(", ")[0],
                f"TLS options ({names}) with a plaintext {url.scheme}:// URL; use rediss:// "
                "(or sentinel:// with TLS), or remove them",
            )
        return Tls(enabled=False)

    if inherit is not None and inherit.enabled and not side:
        return inherit  # one set of certificates for both sides, checked once
    base = Tls(enabled=True)
    raw_reqs = side.pop("ssl_cert_reqs", None)
    if raw_reqs is not None:
        reqs = raw_reqs.strip().lower().removeprefix("ssl.").removeprefix("cert_")
        if reqs not in CERT_REQS:
            raise SettingsError(
                f"{prefix}_SSL_CERT_REQS",
                f"{raw_reqs!r} is not a certificate requirement; use required (default), "
                "or optional/none only if you accept man-in-the-middle attacks",
            )
        base = replace(base, cert_reqs=reqs)
    raw_check = side.pop("ssl_check_hostname", None)
    fields = {k.removeprefix("ssl_"): v for k, v in side.items()}
    unknown = set(fields) - {"ca_certs", "certfile", "keyfile"}
    if unknown:
        bad = f"{prefix}_SSL_{sorted(unknown)[0].upper()}"
        raise SettingsError(
            bad,
            "is not a TLS option; use _CA_CERTS, _CERTFILE, _KEYFILE, "
            "_CERT_REQS or _CHECK_HOSTNAME",
        )
    tls = replace(
        base,
        ca_certs=fields.get("ca_certs", base.ca_certs),
        certfile=fields.get("certfile", base.certfile),
        keyfile=fields.get("keyfile", base.keyfile),
    )
    if raw_check is not None:
        tls = replace(tls, check_hostname=parse_bool(f"{prefix}_SSL_CHECK_HOSTNAME", raw_check))
    if tls.cert_reqs == "none":
        if raw_check is not None and tls.check_hostname:
            raise SettingsError(
                f"{prefix}_SSL_CHECK_HOSTNAME",
                "hostname checking needs certificate verification; drop CERT_REQS=none",
            )
        tls = replace(tls, check_hostname=False)
    if tls.cert_reqs != "required":
        log.warning(
            "%s_SSL_CERT_REQS=%s: the server certificate is %s, so anyone on the path can "
            "impersonate the server and read every task and result (man-in-the-middle). Use "
            "required with %s_SSL_CA_CERTS unless you accept that risk.",
            prefix,
            tls.cert_reqs,
            "not verified" if tls.cert_reqs == "none" else "verified only if presented",
            prefix,
        )
    if tls.keyfile and not tls.certfile:
        raise SettingsError(
            f"{prefix}_SSL_KEYFILE",
            f"a client key without a certificate; set {prefix}_SSL_CERTFILE too",
        )
    for attr in ("ca_certs", "certfile", "keyfile"):
        check_file(f"{prefix}_SSL_{attr.upper()}", getattr(tls, attr))
    return tls


def _sentinel_options(
    env: Mapping[str, str], url: urls.RedisUrl, variable: str, tls: Tls
) -> dict[str, Any]:
    """``master_name``, ``min_other_sentinels`` and ``sentinel_kwargs`` for one side."""
    master = env.get(PREFIX + "SENTINEL_MASTER_NAME", "").strip()
    if not master:
        raise SettingsError(
            f"{PREFIX}SENTINEL_MASTER_NAME",
            f"{variable} is a sentinel:// URL but no master name is set; set "
            f"{PREFIX}SENTINEL_MASTER_NAME to the name in 'sentinel monitor NAME ...'",
        )
    timeout_var = PREFIX + "SENTINEL_SOCKET_TIMEOUT"
    timeout = parse_number(timeout_var, env.get(timeout_var, "1.0"))
    if timeout is not None and timeout < 0.5:
        log.warning(
            "%s=%s: below 0.5 s a TLS handshake to a busy Sentinel can time out and look "
            "like a dead Sentinel; 1.0 is a safer value",
            timeout_var,
            timeout,
        )
    ssl_var = PREFIX + "SENTINEL_SSL"
    sentinel_tls = parse_bool(ssl_var, env[ssl_var]) if ssl_var in env else tls.enabled
    # No retries per Sentinel: the list of Sentinels is the retry, and kombu/Celery retry on
    # top. redis-py 8's default (3 backoff retries) makes a wrong password take ~26 s.
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if env.get(PREFIX + "SENTINEL_USERNAME"):
        kwargs["username"] = env[PREFIX + "SENTINEL_USERNAME"]
    if env.get(PREFIX + "SENTINEL_PASSWORD"):
        kwargs["password"] = env[PREFIX + "SENTINEL_PASSWORD"]
    if sentinel_tls:
        # Without ssl=True here redis-py talks plaintext to the Sentinels (celery#8016).
        kwargs["ssl"] = True
        kwargs.update(tls.redis_kwargs() if tls.enabled else Tls(enabled=True).redis_kwargs())
    min_var = PREFIX + "SENTINEL_MIN_OTHER_SENTINELS"
    minimum = parse_number(min_var, env.get(min_var, "0"), int)
    if minimum >= len(url.endpoints):
        raise SettingsError(
            min_var,
            f"{minimum} other Sentinels can never be seen with "
            f"{len(url.endpoints)} listed in {variable}; lower it",
        )
    return {"master_name": master, "min_other_sentinels": minimum, "sentinel_kwargs": kwargs}


def _queues(name: str, raw: str) -> tuple[Queue, ...]:
    names = [q.strip() for q in raw.split(",") if q.strip()]
    if not names or any(":" in q or " " in q for q in names):
        raise SettingsError(name, "must be queue names separated by commas: default,critical")
    return tuple(Queue(q, routing_key=q) for q in names)  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------
def load(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return Celery settings (lowercase names) for the environment ``env``."""
    from . import amqp, cli_env  # both import this module

    env = dict(os.environ if env is None else env)
    cli_env.check(env)
    raw: dict[str, Any] = dict(PRODUCTION_DEFAULTS)
    for variable, value in sorted(env.items()):
        if not variable.startswith(PREFIX) or variable.startswith("CELERY_FLEET_"):
            continue
        suffix = variable[len(PREFIX) :]
        if suffix in FLEET_KEYS or suffix in NOT_SETTINGS:
            continue
        setting = suffix.lower()
        if setting in ("broker_use_ssl", "redis_backend_use_ssl"):
            continue  # folded into the TLS options below
        if setting not in CELERY_OPTIONS:
            raise _unknown(variable)
        raw[setting] = value if setting in RAW_STRINGS else parse_setting(variable, setting, value)

    broker_var = PREFIX + "BROKER_URL"
    if not env.get(broker_var, "").strip():
        raise SettingsError(
            broker_var,
            "is not set; set it to rediss://user:pass@host:6379/0 "
            "or sentinel://h1:26379;sentinel://h2:26379",
        )
    settings: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("broker_url",)}
    settings["task_queues"] = _queues(PREFIX + "TASK_QUEUES", str(raw["task_queues"]))

    if amqp.is_amqp(env[broker_var]):
        broker_tls = amqp.configure(env, raw, settings)
        visibility, longest = None, None
    else:
        broker_tls, visibility, longest = _redis_broker(env, raw, settings)

    backend_var = PREFIX + "RESULT_BACKEND"
    backend_raw = env.get(backend_var)
    if amqp.is_amqp_backend(backend_raw, env[broker_var]):
        raise amqp.refuse_backend(backend_var)
    if backend_raw is None:
        backend = _parse_url(env[broker_var], broker_var)
        backend.db += 1
    elif backend_raw.strip().lower() in ("", "disabled", "none"):
        backend = None
    else:
        backend = _parse_url(backend_raw, backend_var)
    if backend is None:
        settings["result_backend"] = None
        settings["task_ignore_result"] = raw.get("task_ignore_result", True)
        settings["task_track_started"] = False
        settings.pop("redis_backend_use_ssl", None)
        settings.pop("result_compression", None)
    else:
        backend_tls = _tls(env, PREFIX + "REDIS_BACKEND", backend, broker_tls)
        settings["result_backend"] = backend.render()
        if backend_tls.enabled:
            settings["redis_backend_use_ssl"] = backend_tls.redis_kwargs()
        options = dict(raw.get("result_backend_transport_options") or {})
        if backend.scheme == "sentinel":
            options = {**_sentinel_options(env, backend, backend_var, backend_tls), **options}
        settings["result_backend_transport_options"] = options
        if backend.scheme == "socket":
            # Celery passes socket_keepalive to UnixDomainSocketConnection, which rejects it.
            settings["redis_socket_keepalive"] = False

    if visibility is not None:
        _check_timeouts(settings, visibility, longest)
    _check_serializers(env, settings)
    log_format(env)
    _beat_scheduler(env, settings)
    return settings


def _redis_broker(
    env: Mapping[str, str], raw: Mapping[str, Any], settings: dict[str, Any]
) -> tuple[Tls, int, int | None]:
    """Broker settings for a Redis URL: TLS, visibility timeout, transport options."""
    broker_var = PREFIX + "BROKER_URL"
    broker = _parse_url(env[broker_var], broker_var)
    broker_tls = _tls(env, PREFIX + "BROKER", broker, None)
    settings["broker_url"] = broker.render()
    # Always explicit: for rediss:// with no options Kombu silently uses CERT_NONE.
    settings["broker_use_ssl"] = broker_tls.redis_kwargs() if broker_tls.enabled else False
    vt_var = PREFIX + "VISIBILITY_TIMEOUT"
    longest = _longest_time_limit(env, raw.get("task_time_limit"))
    default_vt = str(longest + VISIBILITY_MARGIN if longest else 3600)
    visibility = parse_number(vt_var, env.get(vt_var, default_vt), int)
    transport: dict[str, Any] = {
        "visibility_timeout": visibility,
        "socket_timeout": raw["redis_socket_timeout"],
        "socket_connect_timeout": raw["redis_socket_connect_timeout"],
        "retry_on_timeout": raw["redis_retry_on_timeout"],
        "socket_keepalive": raw["redis_socket_keepalive"],
        "health_check_interval": raw["redis_backend_health_check_interval"],
        # Sweep unacked messages whose visibility timeout ran out every ~10 s, not ~100 s.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }
    if raw.get("redis_max_connections"):
        transport["max_connections"] = raw["redis_max_connections"]
    if broker.scheme == "sentinel":
        transport.update(_sentinel_options(env, broker, broker_var, broker_tls))
    transport.update(raw.get("broker_transport_options") or {})
    settings["broker_transport_options"] = transport
    _reliable_fetch(env, broker, settings)
    return broker_tls, visibility, longest


def log_format(env: Mapping[str, str] | None = None) -> str:
    """``json`` (the default) or ``text``, from CELERY_FLEET_LOG_FORMAT."""
    raw = (os.environ if env is None else env).get(LOG_FORMAT_VAR, "")
    value = raw.strip().lower() or "json"
    if value not in LOG_FORMATS:
        raise SettingsError(
            LOG_FORMAT_VAR, f"{raw!r} is not a log format; use json (one object per line) or text"
        )
    return value


@dataclass(frozen=True)
class BeatLock:
    """``CELERY_FLEET_BEAT_LOCK`` and ``CELERY_FLEET_BEAT_LOCK_TTL`` (seconds)."""

    enabled: bool = False
    ttl: float = BEAT_LOCK_TTL_DEFAULT


def beat_lock(env: Mapping[str, str] | None = None) -> BeatLock:
    """Whether beat runs under the lock of celery_fleet.beatlock, and the lock's TTL."""
    env = os.environ if env is None else env
    enabled = parse_bool(BEAT_LOCK_VAR, env.get(BEAT_LOCK_VAR, "false"))
    raw = env.get(BEAT_LOCK_TTL_VAR, "").strip()
    ttl = BEAT_LOCK_TTL_DEFAULT if not raw else parse_number(BEAT_LOCK_TTL_VAR, raw)
    if ttl is None or ttl < BEAT_LOCK_TTL_MIN:
        raise SettingsError(
            BEAT_LOCK_TTL_VAR,
            f"{raw!r} is below {BEAT_LOCK_TTL_MIN:g} seconds: the holder renews every ttl/3 "
            f"and must get a round trip to Redis in between; use e.g. "
            f"{BEAT_LOCK_TTL_VAR}={BEAT_LOCK_TTL_DEFAULT:g}",
        )
    return BeatLock(enabled=enabled, ttl=float(ttl))


def _beat_scheduler(env: Mapping[str, str], settings: dict[str, Any]) -> None:
    """``CELERY_FLEET_BEAT_LOCK=true``: beat's scheduler becomes the locked one."""
    if not beat_lock(env).enabled:
        return
    chosen = settings.get("beat_scheduler")
    if chosen and chosen not in (BEAT_LOCK_SCHEDULER, CELERY_OPTIONS["beat_scheduler"].default):
        raise SettingsError(
            PREFIX + "BEAT_SCHEDULER",
            f"{chosen!r} conflicts with {BEAT_LOCK_VAR}=true, which uses "
            f"{BEAT_LOCK_SCHEDULER!r}; unset one of the two",
        )
    settings["beat_scheduler"] = BEAT_LOCK_SCHEDULER


def _reliable_fetch(
    env: Mapping[str, str], broker: urls.RedisUrl, settings: dict[str, Any]
) -> None:
    """``CELERY_FLEET_RELIABLE_FETCH=true``: consume through celery_fleet.transport, where a
    fetched message is never only in the worker's memory; ``CELERY_BROKER_WAIT_REPLICAS``:
    confirmed publish on the same transport (docs/delivery.md)."""
    replicas_var = PREFIX + "BROKER_WAIT_REPLICAS"
    timeout_var = PREFIX + "BROKER_WAIT_TIMEOUT_MS"
    replicas = parse_number(replicas_var, env.get(replicas_var, "0"), int)
    wait_ms = parse_number(timeout_var, env.get(timeout_var, "1000"), int)
    if replicas < 0:
        raise SettingsError(replicas_var, f"{replicas} is negative; use 0 (off) or 1, 2, ...")
    if wait_ms <= 0:
        raise SettingsError(
            timeout_var, f"{wait_ms} must be above 0 (WAIT with 0 would block forever)"
        )
    if not parse_bool(RELIABLE_FETCH_VAR, env.get(RELIABLE_FETCH_VAR, "false")):
        if replicas:
            raise SettingsError(
                replicas_var,
                f"confirmed publish is part of celery_fleet.transport; set "
                f"{RELIABLE_FETCH_VAR}=true too, or unset {replicas_var}",
            )
        return
    path = RELIABLE_TRANSPORTS[broker.scheme]
    chosen = settings.get("broker_transport")
    if chosen and chosen != path:
        raise SettingsError(
            PREFIX + "BROKER_TRANSPORT",
            f"{chosen!r} conflicts with {RELIABLE_FETCH_VAR}=true, which uses {path!r}; "
            "unset one of the two",
        )
    settings["broker_transport"] = path
    options = settings["broker_transport_options"]
    if replicas:
        options.setdefault("wait_replicas", replicas)
        options.setdefault("wait_timeout_ms", wait_ms)
    inflight = options.get("inflight_timeout", 60)
    if not isinstance(inflight, int | float) or isinstance(inflight, bool) or inflight <= 0:
        raise SettingsError(
            PREFIX + "BROKER_TRANSPORT_OPTIONS",
            f"inflight_timeout={inflight!r} must be a positive number of seconds",
        )


def _parse_url(value: str, variable: str) -> urls.RedisUrl:
    try:
        url = urls.parse(value, variable=variable)
    except urls.UrlError as exc:
        raise SettingsError(variable, str(exc)) from None
    if value.strip().lower().startswith(("socket://", "unix://")) and "BACKEND" in variable:
        log.warning(
            "%s: Celery has no 'socket' result backend (it says 'Unknown result backend'); "
            "celery-fleet hands Celery %s. Use that form if you configure Celery yourself.",
            variable,
            url.render(masked=True),
        )
    return url


def _check_serializers(env: Mapping[str, str], settings: Mapping[str, Any]) -> None:
    """Refuse pickle/yaml unless the operator opted in (then warn once per load)."""
    allowed = parse_bool(ALLOW_UNSAFE_VAR, env.get(ALLOW_UNSAFE_VAR, "false"))
    for setting in SERIALIZER_SETTINGS:
        value = settings.get(setting)
        names = [value] if isinstance(value, str) else list(value or ())
        unsafe = sorted({str(n).strip().lower() for n in names} & UNSAFE_SERIALIZERS)
        if not unsafe:
            continue
        variable = PREFIX + setting.upper()
        if not allowed:
            raise SettingsError(
                variable,
                f"{', '.join(unsafe)} lets anyone who can write to the broker run code in "
                f"every worker; use json, or set {ALLOW_UNSAFE_VAR}=true if every writer is "
                "trusted",
            )
        log.warning(
            "%s includes %s (%s=true): anyone who can write to the broker or the result "
            "backend can run code in the workers",
            variable,
            ", ".join(unsafe),
            ALLOW_UNSAFE_VAR,
        )


def _longest_time_limit(env: Mapping[str, str], task_time_limit: Any) -> int | None:
    """The longest hard time limit a worker of this deployment enforces: the setting, or a
    pool's own ``--time-limit`` (the celery role writes the largest as LONGEST_VAR)."""
    limits = [int(task_time_limit)] if task_time_limit else []
    if env.get(LONGEST_VAR, "").strip():
        limits.append(parse_number(LONGEST_VAR, env[LONGEST_VAR], int))
    return max(limits) if limits else None


def _check_timeouts(settings: Mapping[str, Any], visibility: int, longest: int | None) -> None:
    hard = settings.get("task_time_limit")
    if longest is None:
        log.warning(
            "%sTASK_TIME_LIMIT is unset: a task running longer than the visibility timeout "
            "(%s s) is delivered again while it still runs; set a time limit below it",
            PREFIX,
            visibility,
        )
    elif visibility <= longest:
        source = (
            f"{PREFIX}TASK_TIME_LIMIT={hard}" if hard == longest else f"{LONGEST_VAR}={longest}"
        )
        log.warning(
            "%sVISIBILITY_TIMEOUT=%s is not above %s: Redis redelivers a task that is still "
            "running after %s s, so long tasks run twice. Raise %sVISIBILITY_TIMEOUT above "
            "the longest task (or leave it unset: the longest limit + %s s).",
            PREFIX,
            visibility,
            source,
            visibility,
            PREFIX,
            VISIBILITY_MARGIN,
        )
    soft = settings.get("task_soft_time_limit")
    if soft is not None and hard is not None and soft >= hard:
        raise SettingsError(
            PREFIX + "TASK_SOFT_TIME_LIMIT",
            f"{soft} is not below {PREFIX}TASK_TIME_LIMIT={hard}; the soft limit must come "
            "first so that tasks can clean up",
        )


# ---------------------------------------------------------------------------------------
# Presentation: masked JSON for people, CELERY_* names for Django.
# ---------------------------------------------------------------------------------------
SECRET_WORDS = ("password", "secret", "token")


def masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy that is safe to print: no password, JSON-friendly values."""

    def clean(key: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(key, v) for v in value]
        if isinstance(value, Queue):
            return value.name
        if isinstance(value, ssl.VerifyMode):
            return value.name
        if isinstance(value, Retry):
            return "no retry per Sentinel (the Sentinel list is the retry)"
        if value is not None and any(word in key.lower() for word in SECRET_WORDS):
            return urls.MASK
        if isinstance(value, str) and "://" in value:
            return urls.mask(value)
        return value

    return {k: clean(k, v) for k, v in settings.items()}


def publish_urls(
    settings: Mapping[str, Any], environ: MutableMapping[str, str] = os.environ
) -> None:
    """Make the process environment carry the normalised URLs.

    Celery's ``Settings.broker_url``/``result_backend`` read ``CELERY_BROKER_URL`` and
    ``CELERY_RESULT_BACKEND`` from ``os.environ`` before any configuration, so the raw
    values would win over what ``load()`` checked and rewrote.
    """
    environ[PREFIX + "BROKER_URL"] = settings["broker_url"]
    if settings.get("result_backend"):
        environ[PREFIX + "RESULT_BACKEND"] = settings["result_backend"]
    else:
        environ.pop(PREFIX + "RESULT_BACKEND", None)


def django_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The same settings as ``CELERY_<NAME>`` names, for a Django settings.py."""
    settings = load(env)
    if env is None:
        publish_urls(settings)
    return {PREFIX + k.upper(): v for k, v in settings.items()}
