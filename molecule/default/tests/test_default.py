"""One TLS-only Redis node: what must be true, checked against the running container."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path

import fleet
import pytest
import redis
import sandbox

NODE = "cf-mol-default-redis-1"
EXAMPLE_SECRETS = fleet.PROJECT_DIR / "inventory.example" / "group_vars" / "all" / "secrets.yml"


def test_only_the_tls_port_listens(host) -> None:
    ports = {
        int(s.split(":")[-1])
        for s in host.socket.get_listening_sockets()
        if s.startswith("tcp") and "127.0.0.11" not in s  # Docker's embedded DNS
    }
    assert ports == {6379}


def test_secrets_are_private_files(host) -> None:
    for path in [
        "/etc/redis/server/redis.conf",
        "/etc/redis/server/users.acl",
        "/etc/redis/tls/server.key",
    ]:
        f = host.file(path)
        assert f.user == "redis"
        assert f.mode == 0o600, path
    acl = host.file("/etc/redis/server/users.acl").content_string
    for password in fleet.passwords():
        assert password not in acl  # SHA-256 hashes only


def test_config_has_the_broker_settings(host) -> None:
    conf = host.file("/etc/redis/server/redis.conf").content_string
    for line in [
        "port 0",
        "tls-port 6379",
        "tls-replication yes",
        "tls-auth-clients yes",
        'tls-protocols "TLSv1.2 TLSv1.3"',
        "maxmemory-policy noeviction",
        "appendonly yes",
        "appendfsync everysec",
        "aclfile /etc/redis/server/users.acl",
    ]:
        assert f"\n{line}\n" in conf, line
    assert "\nrequirepass" not in conf


def test_service_runs_sandboxed(host) -> None:
    svc = host.service("redis-server")
    assert svc.is_running
    assert svc.is_enabled
    props = svc.systemd_properties
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateUsers"] == "no"  # switched off for containers only
    assert "/etc/redis/server/redis.conf" in props["ExecStart"]


def test_redis_may_write_no_file_in_etc_but_its_own_config_folder() -> None:
    """Tried from inside the unit's sandbox as user redis: Debian's unit lets Redis write all
    of /etc/redis (the TLS files, the backup password); the role's drop-in narrows it to the
    folder of redis.conf, which CONFIG REWRITE needs (it still works, and keeps 0600)."""
    tried = sandbox.writes(
        NODE,
        "redis-server",
        "redis",
        [
            "/etc/redis/server/.probe",
            "/etc/redis/.probe",
            "/etc/redis/tls/.probe",
            "/etc/.probe",
        ],
    )
    assert tried == {
        "/etc/redis/server/.probe": "written",
        "/etc/redis/.probe": "EROFS",
        "/etc/redis/tls/.probe": "EROFS",
        "/etc/.probe": "EROFS",
    }
    assert fleet.admin(NODE).config_rewrite()
    mode = fleet.docker("exec", NODE, "stat", "-c", "%U %a", "/etc/redis/server/redis.conf")
    assert mode.strip() == "redis 600"


def test_validator_rejects_a_broken_config(host) -> None:
    host.run_test("cp /etc/redis/server/redis.conf /tmp/broken.conf")
    host.run_test("echo 'maxmemory-policy sometimes' >> /tmp/broken.conf")
    assert host.run("/usr/local/sbin/redis-check-config /tmp/broken.conf").rc != 0
    assert host.run("/usr/local/sbin/redis-check-config /etc/redis/server/redis.conf").rc == 0
    host.run_test("echo 'usr celery on' > /tmp/broken.acl")
    assert host.run("/usr/local/sbin/redis-check-config --acl /tmp/broken.acl").rc != 0
    assert host.run("/usr/local/sbin/redis-check-config --acl /etc/redis/server/users.acl").rc == 0


def test_plaintext_is_refused() -> None:
    with pytest.raises(redis.ConnectionError):
        fleet.client(
            NODE, tls=False, username="celery", password=fleet.group_vars()["redis_app_password"]
        ).ping()


def test_a_client_without_certificate_is_refused() -> None:
    with pytest.raises(redis.ConnectionError):
        fleet.client(
            NODE, cert=None, username="celery", password=fleet.group_vars()["redis_app_password"]
        ).ping()


def test_a_server_from_another_ca_is_refused(tmp_path: Path) -> None:
    with pytest.raises(redis.ConnectionError) as err:
        fleet.client(
            NODE,
            ca=fleet.other_ca(tmp_path),
            username="celery",
            password=fleet.group_vars()["redis_app_password"],
        ).ping()
    assert "certificate verify failed" in str(err.value)


def test_the_certificate_matches_the_ip_clients_use() -> None:
    assert fleet.app(NODE).ping()  # ssl_check_hostname=True against the IP


def test_tls_below_1_2_is_refused() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(fleet.ca_file())
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    import socket

    with (
        socket.create_connection((fleet.address(NODE), 6379), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw, server_hostname=fleet.address(NODE))


def test_the_default_user_is_refused() -> None:
    with pytest.raises(redis.AuthenticationError):
        fleet.client(NODE).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        fleet.client(NODE, username="default", password="").ping()


def test_a_wrong_password_is_refused() -> None:
    with pytest.raises(redis.AuthenticationError):
        fleet.client(NODE, username="celery", password="wrong-password-123456").ping()


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "GET", "maxmemory"),
        ("FLUSHALL",),
        ("SHUTDOWN", "NOSAVE"),
        ("ACL", "LIST"),
        ("ACL", "SETUSER", "x"),
        ("MONITOR",),
        ("DEBUG", "SLEEP", "0"),
        ("KEYS", "*"),
    ],
)
def test_the_app_user_cannot_run_dangerous_commands(command: tuple[str, ...]) -> None:
    verdict = fleet.admin(NODE).execute_command("ACL", "DRYRUN", "celery", *command)
    assert b"no permissions" in verdict, verdict
    with pytest.raises(redis.ResponseError):  # NOPERM (DEBUG is also off for everyone)
        fleet.app(NODE).execute_command(*command)


def test_the_app_user_can_do_celery_work() -> None:
    r = fleet.app(NODE)
    r.delete("mol:queue")
    r.lpush("mol:queue", "task-1")
    assert r.brpop(["mol:queue"], timeout=1) == (b"mol:queue", b"task-1")
    # Pub/Sub only on Celery's channels (results, pidbox, events); any other is refused.
    assert r.publish("celery-task-meta-mol", "hello") == 0
    assert r.publish("/0.celeryev/worker.heartbeat", "hello") == 0
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.publish("mol:events", "hello")
    assert r.eval("return redis.call('INCR', KEYS[1])", 1, "mol:counter") >= 1
    with r.pipeline() as pipe:
        pipe.multi()
        pipe.set("mol:key", "v")
        pipe.expire("mol:key", 60)
        assert pipe.execute() == [True, True]


def test_the_monitor_user_is_read_only() -> None:
    gv = fleet.group_vars()
    mon = fleet.client(
        NODE,
        username=gv.get("redis_monitor_user", "monitor"),
        password=gv["redis_monitor_password"],
    )
    assert "redis_version" in mon.info()
    mon.llen("mol:queue")
    with pytest.raises(redis.exceptions.NoPermissionError):
        mon.set("mol:key", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        mon.flushall()


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_preflight_refuses_bad_input_before_any_change() -> None:
    for extra, variable in [
        (["-e", "redis_app_password=CHANGE_ME-app-0000000000"], "redis_app_password"),
        (["-e", "redis_maxmemory_policy=allkeys-lru"], "redis_maxmemory_policy"),
        # the placeholders shipped in inventory.example are refused
        (["-e", f"@{EXAMPLE_SECRETS}"], "redis_admin_password"),
        # a user-supplied server certificate whose SANs miss the address clients use
        (
            [
                "-e",
                "pki_ca_mode=external",
                "-e",
                f"pki_server_cert_src={fleet.client_cert()[0]}",
                "-e",
                f"pki_server_key_src={fleet.client_cert()[1]}",
            ],
            "pki_server_cert_src",
        ),
    ]:
        result = fleet.converge([*extra, "--tags", "pki_preflight,redis_preflight,redis_configure"])
        assert result.returncode != 0, result.stdout[-2000:]
        assert f"{variable} " in result.stdout + result.stderr
        assert fleet.recap(result.stdout)[NODE]["changed"] == 0


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_certificates_near_expiry_are_renewed_and_loaded_without_dropping_clients() -> None:
    """The certificates have 365 days left; renewing 400 days before expiry makes them due.
    (pki_force_renew=true takes the same path on demand.)"""
    before = fleet.app(NODE)
    before.ping()
    old = fleet.admin(NODE).connection_pool.get_connection()
    old.connect()
    serial_before, key_before = _server_certificate()
    due = ["-e", "pki_cert_valid_days=500", "-e", "pki_renew_before_days=400"]
    result = fleet.converge([*due, "--tags", "pki,redis_service"])
    assert result.returncode == 0, result.stdout[-3000:]
    for password in fleet.passwords():  # a converge that changes things prints no secret
        assert password not in result.stdout + result.stderr
    serial_after, key_after = _server_certificate()
    assert serial_after != serial_before  # the new certificate is served ...
    assert key_after != key_before  # ... with a new key (a leaked old key is worthless) ...
    old.send_command("PING")
    assert old.read_response() in (b"PONG", "PONG", True)  # ... and the old connection lives on


def _server_certificate() -> tuple[int, bytes]:
    """Serial number and public key of the certificate the node serves."""
    import socket

    ctx = ssl.create_default_context(cafile=fleet.ca_file())
    certfile, keyfile = fleet.client_cert()
    ctx.load_cert_chain(certfile, keyfile)
    with (
        socket.create_connection((fleet.address(NODE), 6379), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=fleet.address(NODE)) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    key = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert.serial_number, key


ROTATED = {
    "redis_app_password": "mol-AppNext-8c1e3a5f7b9d2e46",
    "redis_admin_password": "mol-AdminNext-3f5a7c9e1b2d4f68",
    "redis_replication_password": "mol-ReplNext-6b8d0f2a4c6e8a13",
}


def _converge_with(tmp_path: Path, name: str, variables: dict[str, str]) -> dict[str, int]:
    """Converge role redis with extra vars from a file (no password on the command line)."""
    extra = tmp_path / f"{name}.json"
    extra.write_text(json.dumps(variables))
    result = fleet.converge(["-e", f"@{extra}", "--tags", "redis"])
    assert result.returncode == 0, result.stdout[-3000:]
    for password in [*fleet.passwords(), *ROTATED.values()]:
        assert password not in result.stdout + result.stderr
    changed = re.findall(r"TASK \[([^\]]+)\][^\n]*\n(?:[^\n]*\n)?changed:", result.stdout)
    print(f"{name}: changed {changed}")
    # Neither the ACL LOAD fallback (it drops every client on Redis 7.0) nor a restart.
    for fallback in ("(ACL LOAD)", "Restart Redis when", "RUNNING HANDLER [redis : Restart redis]"):
        assert not [task for task in changed if fallback in task], changed
    assert "RUNNING HANDLER [redis : Restart redis]" not in result.stdout
    return fleet.recap(result.stdout)[NODE]


def _logs_in(username: str, password: str) -> bool:
    try:
        return bool(fleet.client(NODE, username=username, password=password).ping())
    except redis.AuthenticationError:
        return False


def _masterauth_is(password: str) -> bool:
    gv = fleet.group_vars()
    admin = fleet.client(NODE, username="admin", password=gv["redis_admin_password"])
    if not _logs_in("admin", gv["redis_admin_password"]):
        admin = fleet.client(NODE, username="admin", password=ROTATED["redis_admin_password"])
    return admin.config_get("masterauth")["masterauth"] == password


@pytest.mark.timeout(2 * fleet.CONVERGE_TEST_TIMEOUT)
def test_passwords_rotate_without_a_restart_or_a_dropped_client(tmp_path: Path) -> None:
    """docs/operations.md, "Rotate a password": the app, admin and replication passwords
    rotated at once (new + previous, then new alone), then rotated back the same way."""
    gv = fleet.group_vars()
    old = {name: gv[name] for name in ROTATED}
    held = fleet.app(NODE)
    held_id = held.client_id()
    pid = fleet.admin(NODE).info("server")["process_id"]

    # Step 1: new passwords, the old ones accepted too.
    step1 = {**ROTATED, **{f"{name}_previous": old[name] for name in ROTATED}}
    assert _converge_with(tmp_path, "step1", step1)["changed"] > 0
    assert _logs_in("celery", old["redis_app_password"])
    assert _logs_in("celery", ROTATED["redis_app_password"])
    assert _logs_in("admin", old["redis_admin_password"])
    assert _logs_in("admin", ROTATED["redis_admin_password"])
    assert _masterauth_is(ROTATED["redis_replication_password"])  # set live ...
    assert fleet.admin(NODE).info("server")["process_id"] == pid  # ... without a restart
    assert held.client_id() == held_id  # the connection of the old password is kept

    # Step 3: the previous passwords cleared; a second run changes nothing.
    assert _converge_with(tmp_path, "step3", ROTATED)["changed"] > 0
    assert not _logs_in("celery", old["redis_app_password"])
    assert not _logs_in("admin", old["redis_admin_password"])
    assert _logs_in("celery", ROTATED["redis_app_password"])
    assert held.client_id() == held_id  # authenticated before: still connected
    assert _converge_with(tmp_path, "step3-again", ROTATED)["changed"] == 0

    # Back to the inventory's passwords, the same way.
    back = {**old, **{f"{name}_previous": ROTATED[name] for name in ROTATED}}
    assert _converge_with(tmp_path, "back1", back)["changed"] > 0
    assert _converge_with(tmp_path, "back3", {})["changed"] > 0
    assert not _logs_in("celery", ROTATED["redis_app_password"])
    assert _logs_in("celery", old["redis_app_password"])
    assert _masterauth_is(old["redis_replication_password"])
    assert fleet.admin(NODE).info("server")["process_id"] == pid


@pytest.mark.timeout(fleet.CONVERGE_TEST_TIMEOUT)
def test_requirepass_mode_for_simple_setups() -> None:
    """Last: switches the node to one shared password (no ACL file) and checks it."""
    password = "mol-Requirepass-5d7e9f1a3b5c7d92"
    result = fleet.converge(
        [
            "-e",
            "redis_auth_mode=requirepass",
            "-e",
            f"redis_requirepass={password}",
            "--tags",
            "redis",
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert password not in result.stdout + result.stderr
    assert fleet.client(NODE, password=password).ping()
    with pytest.raises(redis.AuthenticationError):
        fleet.client(NODE).ping()
    with pytest.raises(redis.AuthenticationError):
        fleet.client(NODE, password="wrong-password-123456").ping()
    with pytest.raises(redis.ConnectionError):
        fleet.client(NODE, tls=False, password=password).ping()


def test_tls_quality_by_testssl(tmp_path: Path) -> None:
    """testssl.sh (Debian package) against the TLS port: nothing below TLS 1.2, no NULL,
    export, RC4, 3DES or obsolete CBC cipher, nothing it rates LOW or worse."""
    import json
    import shutil
    import subprocess

    binary = shutil.which("testssl") or shutil.which("testssl.sh")
    assert binary, "testssl.sh is not installed: run `bash .ci/bootstrap.sh`"
    report = tmp_path / "testssl.json"
    subprocess.run(
        [
            binary,
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--protocols",
            "--std",
            "--jsonfile",
            str(report),
            f"{fleet.address(NODE)}:6379",
        ],
        check=False,
        capture_output=True,
        timeout=300,
    )
    findings = {f["id"]: f for f in json.loads(report.read_text())}
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[old]["finding"] == "not offered", findings[old]
    assert findings["TLS1_2"]["finding"].startswith("offered")
    bad = [f for f in findings.values() if f["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")]
    assert not bad, bad
