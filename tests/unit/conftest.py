"""Unit fixtures: throwaway PEM files (contents never parsed here, so no key material)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca.crt", "client.crt", "client.key"):
        path = tmp_path / name
        path.write_text("placeholder, never loaded by the settings module\n")
        path.chmod(0o600)
        files[name.replace(".", "_")] = str(path)
    return files
