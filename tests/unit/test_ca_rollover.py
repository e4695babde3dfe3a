"""Role pki's CA rollover on the controller (tasks_from: rollover, bundle, issue), run by
ansible-playbook on localhost with real keys and certificates (community.crypto) in a
temporary PKI folder: each step leaves the trust bundle it promises, a certificate of the old
CA is issued again after the switch, the finish refuses while one is left, and a step out
of order is refused naming where the rollover is. The hosts' side (every node trusting the
bundle, a writer never refused) is molecule ha's test_pki_rotation.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cryptography import x509

from harness import playbook as ansible

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def run(tmp_path: Path, *tasks: str, step: str = "") -> tuple[int, str]:
    """Role pki's entry points ``tasks`` on localhost with its PKI folder in tmp_path."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.include_role": {"name": "pki", "tasks_from": t},
                            "vars": {"pki_issue_name": "leaf", "pki_issue_kind": "client"},
                        }
                        for t in tasks
                    ],
                }
            ]
        )
    )
    extra = {
        "pki_local_dir": str(tmp_path / "pki"),
        "pki_rollover_step": step,
        "fleet_no_log": False,
        "ansible_python_interpreter": sys.executable,
    }
    result = ansible.run("-i", "localhost,", "-c", "local", "-e", json.dumps(extra), str(playbook))
    return result.returncode, result.stdout + result.stderr


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def key_id(path: Path) -> bytes:
    return cert(path).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def signer_id(path: Path) -> bytes | None:
    aki = cert(path).extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return aki.key_identifier


def test_the_three_steps_on_the_controller(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    rc, out = run(tmp_path, "ca", "bundle", "issue")
    assert rc == 0, out
    old = key_id(pki / "ca" / "ca.pem")
    assert (pki / "ca-bundle.pem").read_bytes().count(PEM_BEGIN) == 1
    assert signer_id(pki / "certs" / "leaf.pem") == old

    rc, out = run(tmp_path, "rollover", step="switch")
    assert rc != 0
    assert "none started" in out, out

    rc, out = run(tmp_path, "rollover", step="begin")
    assert rc == 0, out
    nxt = key_id(pki / "ca-next" / "ca.pem")
    assert nxt != old
    assert "celery-fleet CA 20" in cert(pki / "ca-next" / "ca.pem").subject.rfc4514_string()
    assert (pki / "ca-bundle.pem").read_bytes().count(PEM_BEGIN) == 2
    rc, out = run(tmp_path, "rollover", step="begin")
    assert rc != 0
    assert "next is STEP=switch" in out, out

    rc, out = run(tmp_path, "rollover", "ca", "bundle", "issue", step="switch")
    assert rc == 0, out
    assert key_id(pki / "ca" / "ca.pem") == nxt
    assert key_id(pki / "ca-previous" / "ca.pem") == old
    assert not (pki / "ca-next").exists()
    # The CA that exists is not re-signed under the role's default name.
    assert "celery-fleet CA 20" in cert(pki / "ca" / "ca.pem").subject.rfc4514_string()
    assert signer_id(pki / "certs" / "leaf.pem") == nxt  # issued again by the new CA
    assert (pki / "ca-bundle.pem").read_bytes().count(PEM_BEGIN) == 2
    rc, out = run(tmp_path, "rollover", step="switch")  # run again: nothing moves twice
    assert rc == 0, out
    assert key_id(pki / "ca" / "ca.pem") == nxt

    # A certificate the old CA signed is still there: the finish must not cut it off.
    (pki / "certs" / "gone-host.pem").write_bytes((pki / "ca-previous" / "ca.pem").read_bytes())
    rc, out = run(tmp_path, "rollover", step="finish")
    assert rc != 0
    assert "Still signed by the previous CA: gone-host.pem" in " ".join(out.split()), out
    assert (pki / "ca-previous" / "ca.key").exists()
    (pki / "certs" / "gone-host.pem").unlink()

    rc, out = run(tmp_path, "rollover", step="finish")
    assert rc == 0, out
    assert not (pki / "ca-previous").exists()
    retired = list(pki.glob("ca-retired-*.pem"))
    assert len(retired) == 1
    assert key_id(retired[0]) == old
    assert (pki / "ca-bundle.pem").read_bytes() == (pki / "ca" / "ca.pem").read_bytes()


@pytest.mark.parametrize("step", ["", "later"])
def test_an_unknown_step_is_refused(tmp_path: Path, step: str) -> None:
    rc, out = run(tmp_path, "rollover", step=step)
    assert rc != 0
    assert f"pki_rollover_step is {step}: use begin, then switch, then finish" in " ".join(
        out.split()
    ), out
