"""`celery-fleet doctor`: check a running deployment from the app's own env file.

Each check yields ``Result(check, status, detail)``: ``ok``, ``finding`` (something is
wrong or risky) or ``error`` (could not be checked). Exit status: 0 healthy, 1 findings,
2 cannot check (bad settings, or nothing reachable at all).
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from cryptography import x509

from . import amqp, beat, beatlock, urls
from .amqp import is_amqp
from .settings import BEAT_LOCK_SCHEDULER, load
from .settings.backend import backend_url

BROKER_VAR = "CELERY_BROKER_URL"
EXPIRY_WARNING_DAYS = 30
MAX_LAG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Result:
    check: str
    status: str  # ok | finding | error
    detail: str


@dataclass(frozen=True)
class Options:
    expect_workers: Sequence[str] = ()
    flower_url: str | None = None
    flower_auth: str | None = None  # "user:password"
    timeout: float = 5.0


def ok(check: str, detail: str) -> Result:
    return Result(check, "ok", detail)


def finding(check: str, detail: str) -> Result:
    return Result(check, "finding", detail)


def error(check: str, detail: str) -> Result:
    return Result(check, "error", detail)


class Deployment:
    """What the env file says about where Redis is and how to talk to it.

    With a Redis broker, the Redis side (``url``, ``tls``, ``transport``) is the broker.
    With an AMQP broker (``amqp`` set) it is the result backend, and ``redis`` is False when
    results are disabled."""

    def __init__(self, env: Mapping[str, str], timeout: float) -> None:
        self.settings = load(env)
        self.timeout = timeout
        self.amqp: amqp.AmqpUrl | None = None
        self.redis = True
        if is_amqp(env[BROKER_VAR]):
            self.amqp = amqp.parse(env[BROKER_VAR], variable=BROKER_VAR)
            backend = backend_url(env, BROKER_VAR)
            self.redis = backend is not None
            self.url = backend or urls.RedisUrl(scheme="rediss")
            self.tls: dict[str, Any] = self.settings.get("redis_backend_use_ssl") or {}
            self.transport = self.settings.get("result_backend_transport_options") or {}
            return
        self.url = urls.parse(env[BROKER_VAR], variable=BROKER_VAR)
        self.tls = self.settings["broker_use_ssl"] or {}
        self.transport = self.settings["broker_transport_options"]

    def _client(self, host: str, port: int, **overrides: Any) -> redis.Redis:
        kwargs: dict[str, Any] = {
            "host": host,
            "port": port,
            "db": self.url.db,
            "username": self.url.username,
            "password": self.url.password,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }
        if self.tls:
            kwargs.update(ssl=True, **self.tls)
        kwargs.update(overrides)
        return redis.Redis(**kwargs)

    def data_client(self, host: str, port: int, **overrides: Any) -> redis.Redis:
        if self.url.scheme == "socket":
            return redis.Redis(
                unix_socket_path=self.url.path,
                db=self.url.db,
                username=self.url.username,
                password=self.url.password,
                socket_timeout=self.timeout,
                **overrides,
            )
        return self._client(host, port, **overrides)

    def sentinel_client(self, host: str, port: int) -> redis.Redis:
        kw = dict(self.transport.get("sentinel_kwargs") or {})
        kw.setdefault("socket_timeout", self.timeout)
        kw["socket_connect_timeout"] = max(kw.get("socket_connect_timeout") or 0, self.timeout)
        kw["socket_timeout"] = max(kw.get("socket_timeout") or 0, self.timeout)
        return redis.Redis(host=host, port=port, **kw)

    def data_nodes(self) -> tuple[list[tuple[str, int]], list[Result]]:
        """Primary first, then replicas (from the Sentinels when there are some)."""
        if self.url.scheme != "sentinel":
            e = self.url.endpoints[0] if self.url.endpoints else urls.Endpoint("", 0)
            return [(e.host, e.port)], []
        master = self.transport["master_name"]
        results: list[Result] = []
        views: dict[tuple[str, int], tuple[str, int]] = {}
        replicas: set[tuple[str, int]] = set()
        down: set[str] = set()
        for e in self.url.endpoints:
            name = f"sentinel {e.host}:{e.port}"
            if (self.transport.get("sentinel_kwargs") or {}).get("ssl"):
                results.append(check_tls(self, e.host, e.port, f"tls {e.host}:{e.port}"))
            try:
                s = self.sentinel_client(e.host, e.port)
                addr = _cmd(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", master)
                views[(e.host, e.port)] = (_s(addr[0]), int(addr[1]))
                quorum = _s(_cmd(s, "SENTINEL", "CKQUORUM", master))
                results.append(ok(name, f"{quorum}; primary {_s(addr[0])}:{int(addr[1])}"))
                for r in _cmd(s, "SENTINEL", "REPLICAS", master):
                    info = _pairs(r)
                    if "s_down" in info.get("flags", ""):
                        down.add(f"{info['ip']}:{info['port']}")
                    else:
                        replicas.add((info["ip"], int(info["port"])))
            except redis.ResponseError as exc:
                results.append(finding(name, f"{exc}"))
            except (redis.RedisError, OSError) as exc:
                results.append(finding(name, f"unreachable: {_why(exc)}"))
        primaries = set(views.values())
        if not views:
            return [], results
        if len(primaries) > 1:
            seen = ", ".join(f"{h}:{p} says {a[0]}:{a[1]}" for (h, p), a in views.items())
            results.append(finding("sentinel agreement", f"Sentinels disagree: {seen}"))
        else:
            results.append(ok("sentinel agreement", f"{len(views)} Sentinels agree"))
        primary = next(iter(primaries))
        for node in sorted(down):
            results.append(finding(f"redis {node}", "down (Sentinels flag it s_down)"))
        if not replicas - {primary}:
            results.append(
                finding("replication", "the primary has no healthy replica: no failover")
            )
        return [primary, *sorted(replicas - {primary})], results


def check_config(dep: Deployment) -> Iterator[Result]:
    s = dep.settings
    if dep.url.scheme in ("redis",) or (dep.url.scheme == "sentinel" and not dep.tls):
        yield finding("config tls", "broker traffic is plaintext; use rediss:// or Sentinel TLS")
    for key in ("broker_use_ssl", "redis_backend_use_ssl"):
        reqs = (s.get(key) or {}).get("ssl_cert_reqs")
        if reqs is not None and reqs != ssl.CERT_REQUIRED:
            yield finding(f"config {key}", f"ssl_cert_reqs={reqs.name}: no MITM protection")
    vt = dep.transport.get("visibility_timeout", 3600)
    limit = s.get("task_time_limit")
    if limit is None or vt <= limit:
        yield finding(
            "config visibility_timeout",
            f"{vt} s is not above task_time_limit={limit}: long tasks run twice",
        )
    else:
        yield ok("config", "TLS verified, visibility timeout above the task time limit")


def check_tls(
    dep: Deployment, host: str, port: int, check: str, options: Mapping[str, Any] | None = None
) -> Result:
    """Handshake as the app does, and read the server certificate's expiry. ``options``:
    redis-py's ``ssl_*`` options (default: the Redis side's)."""
    opts = dep.tls if options is None else options
    context = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"))
    context.check_hostname = bool(opts.get("ssl_check_hostname", True))
    context.verify_mode = opts.get("ssl_cert_reqs", ssl.CERT_REQUIRED)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if opts.get("ssl_certfile"):
        context.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"))
    try:
        with (
            socket.create_connection((host, port), timeout=dep.timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
    except (OSError, ssl.SSLError) as exc:
        return finding(check, f"TLS handshake with {host}:{port} failed: {_why(exc)}")
    if der is None:
        return finding(check, f"{host}:{port} presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    days = (cert.not_valid_after_utc - datetime.now(UTC)).days
    detail = f"{version}, certificate expires in {days} days"
    if days < EXPIRY_WARNING_DAYS:
        return finding(check, detail + f" (renew: below {EXPIRY_WARNING_DAYS})")
    return ok(check, detail)


def check_node(
    dep: Deployment, host: str, port: int, primary: bool, *, broker: bool = True
) -> Iterator[Result]:
    """TLS, authentication, the app user's PING, role and replication; with ``broker`` the
    memory policy too (an evicting result backend loses results, not tasks)."""
    name = f"redis {host}:{port}" if broker else f"result backend {host}:{port}"
    if dep.tls and dep.url.scheme != "socket":
        yield check_tls(dep, host, port, f"tls {host}:{port}")
    try:
        anon = dep.data_client(host, port, username=None, password=None)
        anon.ping()
        yield finding(f"auth {host}:{port}", "accepts clients without a password")
    except redis.AuthenticationError:
        yield ok(f"auth {host}:{port}", "refuses unauthenticated clients")
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "NOPERM" in str(exc):
            yield ok(f"auth {host}:{port}", "refuses unauthenticated clients")
        else:
            yield finding(f"auth {host}:{port}", f"unexpected answer: {exc}")
    except (redis.RedisError, OSError) as exc:
        yield finding(f"auth {host}:{port}", f"cannot connect: {_why(exc)}")
    try:
        client = dep.data_client(host, port)
        client.ping()
    except (redis.RedisError, OSError) as exc:
        yield finding(name, f"the app's credentials fail: {_why(exc)}")
        return
    try:
        info = client.info("replication")
        memory = client.info("memory")
    except redis.ResponseError as exc:
        yield ok(name, f"app user authenticated; role not readable ({exc})")
        return
    role = info.get("role")
    expected = "master" if primary else "slave"
    if role != expected:
        yield finding(name, f"role {role}, expected {expected}")
    elif primary:
        lags = [
            f"{v['ip']}:{v['port']} lag {info.get('master_repl_offset', 0) - v['offset']} B"
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict)
        ]
        yield ok(name, f"primary, {info.get('connected_slaves', 0)} replicas: {', '.join(lags)}")
        for lag in lags:
            if int(lag.split(" lag ")[1].split()[0]) > MAX_LAG_BYTES:
                yield finding(name, f"replica behind by more than {MAX_LAG_BYTES} B: {lag}")
    else:
        link = info.get("master_link_status")
        verdict = ok if link == "up" else finding
        yield verdict(name, f"replica of {info.get('master_host')}, link {link}")
    policy = memory.get("maxmemory_policy")
    if broker and primary and policy not in (None, "noeviction"):
        yield finding(name, f"maxmemory-policy {policy}: an evicting broker drops tasks")


def check_workers(dep: Deployment, expected: Sequence[str], timeout: float) -> Iterator[Result]:
    from celery import Celery

    app = Celery("celery-fleet-doctor", set_as_current=False)
    app.conf.update(dep.settings)
    try:
        replies = app.control.inspect(timeout=timeout).ping() or {}
    except Exception as exc:
        yield finding("workers", f"inspect ping failed: {_why(exc)}")
        return
    answered = set(replies)
    missing = [w for w in expected if w not in answered]
    if missing:
        # A worker whose every pool slot is busy may miss a ping (celery#4079); its
        # heartbeat events still flow. Busy is not dead.
        alive = _heartbeats(app, set(missing), timeout)
        for w in missing:
            if w in alive:
                yield ok(f"worker {w}", "busy: no ping reply, but heartbeats arrive")
            else:
                yield finding(f"worker {w}", "no ping reply and no heartbeat")
    for w in sorted(answered):
        yield ok(f"worker {w}", "pong")
    if not expected and not answered:
        yield finding("workers", "no worker answered")


def _heartbeats(app: Any, names: set[str], timeout: float) -> set[str]:
    seen: set[str] = set()

    def on_heartbeat(event: Mapping[str, Any]) -> None:
        seen.add(str(event.get("hostname")))

    deadline = time.monotonic() + max(timeout, 3.0)
    try:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"worker-heartbeat": on_heartbeat})
            while time.monotonic() < deadline and not names <= seen:
                try:
                    receiver.capture(limit=1, timeout=1.0, wakeup=False)
                except TimeoutError:
                    continue
    except Exception:  # the ping result already said what matters
        return seen
    return seen


def check_beat(dep: Deployment, host: str, port: int) -> Result:
    """One beat alive; with the beat lock (CELERY_FLEET_BEAT_LOCK=true) any number, of which
    the one holding ``celery-fleet:beat-lock`` sends and the others stand by."""
    locked = dep.settings.get("beat_scheduler") == BEAT_LOCK_SCHEDULER
    try:
        client = dep.data_client(host, port)
        keys = sorted(_s(k) for k in client.scan_iter(match=beat.KEY_PREFIX + "*"))
        token = client.get(beatlock.LOCK_KEY) if locked else None
    except (redis.RedisError, OSError) as exc:
        return finding("beat", f"cannot read liveness keys: {_why(exc)}")
    hosts = [k.removeprefix(beat.KEY_PREFIX) for k in keys]
    if not hosts:
        return finding("beat", "no beat alive: periodic tasks are not being sent")
    if locked:
        active = beatlock.holder(token)
        if active is None:
            return finding(
                "beat",
                f"{len(hosts)} beat(s) alive ({', '.join(hosts)}) but none holds "
                f"{beatlock.LOCK_KEY}: no periodic task is sent (a takeover takes up to the "
                "lock's TTL; if this lasts, read the beats' logs)",
            )
        standby = [h for h in hosts if h != active]
        if active not in hosts:
            return finding(
                "beat", f"{beatlock.LOCK_KEY} is held by {active}, whose beat is not alive"
            )
        return ok("beat", f"active on {active}, standby on {', '.join(standby) or 'no other host'}")
    if len(hosts) == 1:
        return ok("beat", f"one beat alive on {hosts[0]}")
    return finding("beat", f"{len(hosts)} beats alive ({', '.join(hosts)}): tasks run twice")


def check_flower(dep: Deployment, url: str, auth: str | None) -> Iterator[Result]:
    context = ssl.create_default_context(cafile=dep.tls.get("ssl_ca_certs"))
    target = url.rstrip("/") + "/api/workers"

    def get(headers: dict[str, str]) -> int:
        request = urllib.request.Request(target, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=dep.timeout, context=context) as r:  # noqa: S310
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    try:
        anonymous = get({})
        if anonymous in (401, 403):
            yield ok("flower auth", f"refuses requests without credentials ({anonymous})")
        else:
            yield finding("flower auth", f"answers {anonymous} without credentials")
        if auth:
            token = base64.b64encode(auth.encode()).decode()
            status = get({"Authorization": f"Basic {token}"})
            verdict = ok if status == 200 else finding
            yield verdict("flower", f"answers {status} with credentials")
    except (urllib.error.URLError, OSError) as exc:
        yield finding("flower", f"unreachable at {url}: {_why(exc)}")


def run(env: Mapping[str, str], options: Options) -> list[Result]:
    """All checks, in the order an operator reads them."""
    dep = Deployment(env, options.timeout)
    if dep.amqp is not None:
        from . import doctor_amqp

        return doctor_amqp.run(dep, options)
    results = list(check_config(dep))
    nodes, sentinel_results = dep.data_nodes()
    results += sentinel_results
    if not nodes:
        results.append(error("redis", "no Sentinel answered: cannot find the primary"))
        return results
    for index, (host, port) in enumerate(nodes):
        results += check_node(dep, host, port, primary=index == 0)
    results += check_workers(dep, options.expect_workers, options.timeout)
    results.append(check_beat(dep, *nodes[0]))
    if options.flower_url:
        results += check_flower(dep, options.flower_url, options.flower_auth)
    return results


def exit_status(results: Sequence[Result]) -> int:
    statuses = {r.status for r in results}
    if "error" in statuses:
        return 2
    return 1 if "finding" in statuses else 0


def render(results: Sequence[Result]) -> str:
    width = max(len(r.check) for r in results) if results else 5
    marks = {"ok": "ok", "finding": "FINDING", "error": "ERROR"}
    lines = [f"{'check'.ljust(width)}  status   detail"]
    lines += [f"{r.check.ljust(width)}  {marks[r.status]:<7}  {r.detail}" for r in results]
    return "\n".join(lines)


def as_json(results: Sequence[Result]) -> list[dict[str, str]]:
    return [asdict(r) for r in results]


def _cmd(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _pairs(flat: Any) -> dict[str, str]:
    if isinstance(flat, dict):
        return {_s(k): _s(v) for k, v in flat.items()}
    items = [_s(x) for x in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _why(exc: BaseException) -> str:
    return urls.mask(f"{type(exc).__name__}: {exc}")
