import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# molecule/shared (fleet helpers) and tests/ (the real-process harness: `harness.worker`,
# `harness.pki`), as tests/conftest.py sees it. The verifier runs pytest from the scenario
# folder, so neither is on sys.path by itself.
sys.path.insert(0, str(REPO / "molecule" / "shared"))
sys.path.insert(1, str(REPO / "tests"))
