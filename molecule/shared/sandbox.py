"""Try writes for real from inside a running unit's sandbox: the file system as its process
sees it (the unit's mount namespace: ProtectSystem=strict, ReadWritePaths=) and its user.

No command is executed inside the namespace (Debian's Redis units set NoExecPaths=/, so a
shell there could not even start), and the containers' root lacks CAP_SYS_PTRACE, which
opening another user's namespace takes: a Python process on the Docker host (root, as the
test run is) joins the unit process's mount namespace with setns(2), drops to the unit's
uid and gid and opens each path with O_CREAT|O_EXCL, in-process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

# Everything the probe imports is loaded before setns: after it, the namespace's noexec
# mounts would refuse to map an extension module.
_PROBE = r"""
import ctypes, errno, json, os, sys
pid, uid, gid, paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
if libc.setns(fd, 0x00020000) != 0:  # CLONE_NEWNS
    raise OSError(ctypes.get_errno(), "setns into the unit's mount namespace")
os.chdir("/")
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
result = {}
for path in paths:
    try:
        created = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        result[path] = errno.errorcode[err.errno]
    else:
        os.close(created)
        os.unlink(path)
        result[path] = "written"
print(json.dumps(result))
"""


def _run(*cmd: str) -> str:
    return subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def _host_pid(container: str, pid: str) -> str:
    """The Docker host's PID of the container's process PID (NSpid in /proc/N/status)."""
    for line in _run("docker", "top", container, "-eo", "pid").splitlines()[1:]:
        status = Path(f"/proc/{line.strip()}/status")
        nspid = re.search(r"^NSpid:\s+(.*)$", status.read_text(), re.MULTILINE)
        if nspid and nspid[1].split()[-1] == pid:
            return line.strip()
    raise AssertionError(f"no host process for PID {pid} of {container}")


def writes(container: str, unit: str, user: str, paths: list[str]) -> dict[str, str]:
    """For each path: "written" (created and removed again) or the errno name (EROFS: the
    sandbox refused; EACCES: the file mode did)."""
    pid = _run("docker", "exec", container, "systemctl", "show", "-P", "MainPID", unit)
    assert pid not in ("", "0"), f"{unit} is not running on {container}"
    uid = _run("docker", "exec", container, "id", "-u", user)
    gid = _run("docker", "exec", container, "id", "-g", user)
    host_pid = _host_pid(container, pid)
    result: dict[str, str] = json.loads(
        _run(sys.executable, "-c", _PROBE, host_pid, uid, gid, *paths)
    )
    return result
