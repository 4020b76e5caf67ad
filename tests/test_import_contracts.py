"""The layering written down in pyproject.toml ([tool.importlinter]) holds: `lint-imports` keeps every contract
(no import cycles; gdn below service below worker; the layers inside each package)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO_ROOT


def lint_imports() -> str:
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "lint-imports not found: install the dev extra (pip install -e '.[dev]')"
    return found


def test_import_contracts_are_kept():
    r = subprocess.run([lint_imports(), "--no-cache", "--no-logo"], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout
