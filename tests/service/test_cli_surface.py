"""The `deltamu` command's surface: help on every option, client commands that never import torch."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from service.cli import build_parser
from helpers import REPO_ROOT


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_and_argument_has_help():
    actions = list(_walk(build_parser(), "deltamu"))
    assert len(actions) > 50
    missing = [f"{path} {action.option_strings or action.dest}" for path, action in actions
               if not (action.help or "").strip()]
    assert not missing, missing


@pytest.mark.parametrize("argv", [["--help"], ["jobs", "--help"], ["submit", "--help"], ["recommendation", "--help"],
                                  ["status", "--help"]])
def test_client_commands_import_no_torch(argv):
    code = ("import sys\nfrom service.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: deltamu" in r.stdout
