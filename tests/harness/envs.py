"""The ``CELERY_*`` environments a deployment would inject, built for a running fleet.

Only the variables documented in docs/settings.md; ``celery_fleet.settings`` does the rest.
"""

from __future__ import annotations

from urllib.parse import quote

from .redis_procs import (
    APP_USER,
    HOST,
    SENTINEL_APP_USER,
    Auth,
    Listen,
    Node,
    RedisFleet,
)


def credentials(fleet: RedisFleet, node: Node, *, password: str | None = None) -> str:
    """``user:password@`` (ACL) or ``:password@`` (requirepass) for the app user."""
    secret = quote(password if password is not None else fleet.secrets.app, safe="")
    user = APP_USER if node.auth is Auth.ACL else ""
    return f"{user}:{secret}@"


def url(fleet: RedisFleet, node: Node, db: int, *, password: str | None = None) -> str:
    """The node's URL in the form its listener needs: redis://, rediss:// or socket://."""
    auth = credentials(fleet, node, password=password)
    if node.listen is Listen.UNIX:
        return f"socket://{auth}{node.unixsocket}?db={db}"
    scheme = "rediss" if node.listen is Listen.TLS else "redis"
    return f"{scheme}://{auth}{HOST}:{node.port}/{db}"


def sentinel_url(fleet: RedisFleet, db: int, *, password: str | None = None) -> str:
    """``sentinel://app:pw@h:p/db;sentinel://...``: the credentials are the data nodes'."""
    sentinels = fleet.sentinel_nodes(alive=False)
    data = next(n for n in fleet.nodes if n.kind == "redis")
    auth = credentials(fleet, data, password=password)
    return ";".join(f"sentinel://{auth}{HOST}:{s.port}/{db}" for s in sentinels)


def tls(fleet: RedisFleet, side: str = "BROKER", *, client_cert: bool = False) -> dict[str, str]:
    """``CELERY_<side>_SSL_*`` for the fleet's CA (and client certificate for mutual TLS);
    side is BROKER or REDIS_BACKEND."""
    env = {f"CELERY_{side}_SSL_CA_CERTS": str(fleet.pki.ca)}
    if client_cert:
        env[f"CELERY_{side}_SSL_CERTFILE"] = str(fleet.pki.client.cert)
        env[f"CELERY_{side}_SSL_KEYFILE"] = str(fleet.pki.client.key)
    return env


def sentinel(
    fleet: RedisFleet, *, broker_db: int = 0, backend_db: int = 1, client_cert: bool = False
) -> dict[str, str]:
    """Broker and result backend through the fleet's Sentinels, TLS everywhere, the
    Sentinels' password apart from the data nodes' credentials."""
    env = {
        "CELERY_BROKER_URL": sentinel_url(fleet, broker_db),
        "CELERY_RESULT_BACKEND": sentinel_url(fleet, backend_db),
        "CELERY_SENTINEL_MASTER_NAME": fleet.master_name,
        # The discover-only client user, as the roles hand it to workers and Flower.
        "CELERY_SENTINEL_USERNAME": SENTINEL_APP_USER,
        "CELERY_SENTINEL_PASSWORD": fleet.secrets.sentinel_app,
        **tls(fleet, client_cert=client_cert),
    }
    return env
