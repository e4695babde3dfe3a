"""Free loopback ports. Several pytest-xdist workers and other suites share the machine,
so a port is only a candidate: whoever binds it must retry on "Address already in use"."""

from __future__ import annotations

import random
import socket

# Below the kernel's ephemeral range (32768+), so outgoing connections do not take ours.
LOW, HIGH = 20000, 32000
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (never the same twice in this process)."""
    for _ in range(200):
        port = random.randint(LOW, HIGH)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} between {LOW} and {HIGH}")
