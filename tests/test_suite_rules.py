"""The test suite's own rules (tests/conftest.py): one intra-op thread unless a test is marked
``threads``, and no test file importing another test file or conftest.py (shared helpers are in
tests/_helpers.py)."""

import ast
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent


def test_tests_run_on_one_thread():
    assert torch.get_num_threads() == 1


@pytest.mark.threads
def test_the_threads_marker_gives_torchs_default_count(_one_thread_session):
    assert torch.get_num_threads() == _one_thread_session  # what torch chose before the suite set one


def imported_modules(path: Path) -> set[str]:
    """The top-level names of the modules ``path`` imports, anywhere in the file (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_file_imports_another_test_file_or_conftest():
    offenders = {}
    for path in sorted(TESTS.glob("*.py")):
        bad = {name for name in imported_modules(path) if name == "conftest" or name.startswith("test_")}
        if bad:
            offenders[path.name] = sorted(bad)
    assert not offenders, offenders
    assert "_helpers" in imported_modules(TESTS / "test_gan.py")  # the check sees imports at all
