"""Shared test settings: quiet Lightning, one intra-op thread, the search spaces to parametrise over.

Helpers that test files import (functions, callbacks, small settings) are in ``_helpers.py``; a
test file never imports from this file or from another test file.
"""

import logging
import warnings

import pytest
import torch

from _helpers import SPACE_CASES, SpaceCase
from lightning_dlstrat.spaces import SPACES, SearchSpace, get_space

logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning.fabric").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        yield


# --- slow tests ------------------------------------------------------------------------------------
# `pytest -m "not slow"` is the quick subset. Tests that start several processes (DDP, torchrun:
# "ddp" or "torchrun" in the test's name) take 8-50 s each on 2 cores and are slow by this rule,
# wherever they are; other long tests carry @pytest.mark.slow themselves.
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = getattr(item, "originalname", item.name)
        if "ddp" in name or "torchrun" in name:
            item.add_marker(pytest.mark.slow)


# --- threads ---------------------------------------------------------------------------------------
# The networks under test are small: a second intra-op thread gains nothing on them, and on a busy
# 2-core machine the threads' synchronisation made tests 5-100x slower (test_config's replayed run:
# reported at 116 s with torch's default threads; 6-7 s here with one). So every test, and every module- or
# session-scoped fixture (they are set up after this one), runs on one thread; a test that is
# about the thread count is marked ``@pytest.mark.threads`` and gets torch's default instead.
# Subprocesses get OMP_NUM_THREADS=1 from _helpers.dlstrat; ddp_spawn workers from Lightning.
@pytest.fixture(autouse=True, scope="session")
def _one_thread_session():
    default = torch.get_num_threads()
    torch.set_num_threads(1)
    yield default
    torch.set_num_threads(default)


@pytest.fixture(autouse=True)
def _one_thread(request, _one_thread_session):
    torch.set_num_threads(_one_thread_session if request.node.get_closest_marker("threads") else 1)
    yield
    torch.set_num_threads(1)  # whatever the test set


# --- search spaces: tests that take `space` run once per registered space ----------------------------
@pytest.fixture(params=list(SPACES))
def space(request) -> SearchSpace:
    """Each space of ``lightning_dlstrat.spaces.SPACES`` in turn: a new space is tested without editing the tests."""
    return get_space(request.param)


@pytest.fixture
def space_case(space) -> SpaceCase:
    """The small settings of ``space`` (``_helpers.SPACE_CASES``)."""
    if space.name not in SPACE_CASES:
        pytest.fail(f"the search space {space.name!r} is registered but has no small test settings: add a SpaceCase for it to SPACE_CASES in tests/_helpers.py")
    return SPACE_CASES[space.name]
