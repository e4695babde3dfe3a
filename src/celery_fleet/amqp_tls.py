"""Each node of an AMQP failover list is checked against its own host name.

``broker_use_ssl`` for a list of nodes carries ``server_hostname: None``: Kombu's pyamqp
transport then puts the host it connects to into that key (kombu/transport/pyamqp.py,
``establish_connection``; celery/kombu pull request 1366). It writes into the dict it was
given, which is the app's ``broker_use_ssl`` itself, so the key is no longer None
afterwards: after a failover to the next node, py-amqp checks that node's certificate
against the FIRST node's name and the handshake fails (or, with one certificate for all
nodes, passes for the wrong reason). The guard hands Kombu a copy of the dict per
connection attempt, so the shared one keeps None and every node gets its own name.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import pyamqp

_state: dict[str, Any] = {}


def guard_server_hostname() -> None:
    """Patch ``pyamqp.Transport.establish_connection`` (idempotent)."""
    if _state.get("original") is not None:
        return
    original = pyamqp.Transport.establish_connection
    _state["original"] = original

    def establish_connection(self: Any) -> Any:
        ssl = self.client.ssl
        if isinstance(ssl, dict) and "server_hostname" in ssl and ssl["server_hostname"] is None:
            self.client.ssl = dict(ssl)
        return original(self)  # type: ignore[no-untyped-call]

    pyamqp.Transport.establish_connection = establish_connection  # type: ignore[method-assign]
