"""Helpers for the molecule verifiers: inventory data, TLS clients from the controller,
re-running the converge playbook. Real servers only; nothing here is mocked."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

MOLECULE_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = MOLECULE_DIR.parent
# tests/: the real-process harness (`harness.pki`, `harness.worker`), importable as pytest
# sees it from the repository root (the verifier runs pytest from the scenario folder).
TESTS_DIR = PROJECT_DIR / "tests"


def scenario_name() -> str:
    return os.environ.get("MOLECULE_SCENARIO_NAME", "default")


def _load(path: Path) -> dict[str, Any]:
    with path.open() as stream:
        data = yaml.safe_load(stream) or {}
    assert isinstance(data, dict)
    return data


def group_vars() -> dict[str, Any]:
    base = _load(MOLECULE_DIR / "base.yml")
    scenario = _load(MOLECULE_DIR / scenario_name() / "molecule.yml")
    merged: dict[str, Any] = dict(base["provisioner"]["inventory"]["group_vars"]["all"])
    merged.update(
        scenario.get("provisioner", {}).get("inventory", {}).get("group_vars", {}).get("all", {})
    )
    return merged


def host_vars() -> dict[str, dict[str, Any]]:
    scenario = _load(MOLECULE_DIR / scenario_name() / "molecule.yml")
    hv = scenario.get("provisioner", {}).get("inventory", {}).get("host_vars", {})
    assert isinstance(hv, dict)
    return hv


def platforms() -> list[dict[str, Any]]:
    scenario = _load(MOLECULE_DIR / scenario_name() / "molecule.yml")
    result = scenario["platforms"]
    assert isinstance(result, list)
    return result


def hosts_in(group: str) -> list[str]:
    return [p["name"] for p in platforms() if group in p.get("groups", [])]


def address(host: str) -> str:
    value = host_vars()[host]["fleet_address"]
    assert isinstance(value, str)
    return value


def passwords() -> list[str]:
    return [str(v) for k, v in group_vars().items() if k.endswith("password")]


def pki_dir() -> Path:
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pki"


def ca_file() -> str:
    """What the hosts trust: role pki's trust bundle (the CA, and the next or the previous one
    during a CA rollover), or the CA itself before the role wrote a bundle."""
    bundle = pki_dir() / "ca-bundle.pem"
    return str(bundle if bundle.exists() else pki_dir() / "ca" / "ca.pem")


def client_cert(name: str = "celery") -> tuple[str, str]:
    return str(pki_dir() / "certs" / f"{name}.pem"), str(pki_dir() / "certs" / f"{name}.key")


def client(
    host: str,
    port: int = 6379,
    *,
    username: str | None = None,
    password: str | None = None,
    cert: str | None = "celery",
    ca: str | None = None,
    tls: bool = True,
    check_hostname: bool = True,
) -> redis.Redis:
    """A redis-py client from the controller to a node's address, TLS with verification."""
    kwargs: dict[str, Any] = {
        "host": address(host),
        "port": port,
        "username": username,
        "password": password,
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
        "retry_on_timeout": False,
        "retry": Retry(NoBackoff(), 0),
    }
    if tls:
        kwargs.update(
            ssl=True,
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            ssl_ca_certs=ca or ca_file(),
            ssl_check_hostname=check_hostname,
        )
        if cert:
            certfile, keyfile = client_cert(cert)
            kwargs.update(ssl_certfile=certfile, ssl_keyfile=keyfile)
    return redis.Redis(**kwargs)


def app(host: str) -> redis.Redis:
    gv = group_vars()
    return client(
        host, username=gv.get("redis_app_user", "celery"), password=gv["redis_app_password"]
    )


def admin(host: str) -> redis.Redis:
    gv = group_vars()
    return client(
        host, username=gv.get("redis_admin_user", "admin"), password=gv["redis_admin_password"]
    )


def replicates_from(host: str, primary: str) -> bool:
    """``host`` is a replica of ``primary`` with its link up (INFO replication)."""
    info = admin(host).info("replication")
    return bool(
        info["role"] == "slave"
        and info["master_host"] == address(primary)
        and info["master_link_status"] == "up"
    )


def _sentinel_login(host: str, user: str, default: str, password: str) -> redis.Redis:
    gv = group_vars()
    return client(host, 26379, username=gv.get(user, default), password=gv[password])


def sentinel(host: str) -> redis.Redis:
    """The Sentinel's administrator (what Ansible and operators use)."""
    return _sentinel_login(host, "redis_sentinel_admin_user", "admin", "redis_sentinel_password")


def sentinel_client(host: str) -> redis.Redis:
    """The Sentinel's client user: what workers, beat and Flower hold."""
    return _sentinel_login(
        host, "redis_sentinel_client_user", "discover", "redis_sentinel_client_password"
    )


def other_ca(tmp: Path) -> str:
    """A CA that signed nothing on the nodes: the server's certificate must fail against it.
    The test harness's throwaway PKI (tests/harness/pki.py) makes it."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.append(str(TESTS_DIR))
    from harness.pki import Pki

    return str(Pki.create(tmp / "pki").other_ca)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # the servers are expected to be down for a while
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def wait_for_quorum(nodes: list[str], master: str, after: str, timeout: float = 60) -> None:
    """Every node's Sentinel answers CKQUORUM for ``master`` with OK and all of the nodes'
    Sentinels usable (``OK 3 usable Sentinels...`` for three): a quorum and a majority to
    authorise a failover, checked after ``after`` (a failover, a restore)."""
    expected = f"OK {len(nodes)} usable".encode()

    def ok(node: str) -> bool:
        answer = sentinel(node).execute_command("SENTINEL", "CKQUORUM", master)
        return isinstance(answer, bytes) and answer.startswith(expected)

    for node in nodes:
        wait_for(partial(ok, node), timeout, f"CKQUORUM OK on {node} after {after}")


# A converge of the fleet scenario ran past pytest's 300 s on a cold machine while molecule
# default and ha ran in the other lane. Tests that converge get CONVERGE_TEST_TIMEOUT (more
# than twice the slowest converge seen; each converge prints its duration in the test log).
# Slowest seen: the rabbitmq scenario's converge after its failover (site.yml: Redis,
# RabbitMQ and Celery) took 427 s, its test 471 s, at load average 12 on 2 cores.
CONVERGE_TIMEOUT = 900
CONVERGE_TEST_TIMEOUT = 1000


def converge(
    extra_args: list[str] | None = None, playbook: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the scenario's converge playbook again (or ``playbook``, e.g. one layer's), with
    molecule's inventory and config."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(ephemeral / "ansible.cfg"))
    env["ANSIBLE_ROLES_PATH"] = str(PROJECT_DIR / "roles")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    cmd = [
        "ansible-playbook",
        "--inventory",
        str(ephemeral / "inventory"),
        str(playbook or MOLECULE_DIR / scenario_name() / "converge.yml"),
        *(extra_args or []),
    ]
    start = time.monotonic()
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=CONVERGE_TIMEOUT, check=False
    )
    print(f"converge {' '.join(extra_args or [])}: {time.monotonic() - start:.0f} s")
    return result


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    result: dict[str, dict[str, int]] = {}
    for line in output.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line)
        if match:
            result[match.group(1)] = {
                k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))
            }
    return result


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout
