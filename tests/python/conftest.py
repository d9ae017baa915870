"""pytest setup for the hvd Python tests, run on every rank of an hvdrun job:

    hvdrun -np 2 /usr/bin/python3 -m pytest -x -q tests/python

Every rank runs the same tests in the same order. Each test gets a watchdog
(faulthandler, a C thread that needs neither the GIL nor the main thread, so it also
fires while a rank is blocked inside libhvd): a test that hangs dumps the Python stacks
and exits the rank, and hvdrun then stops the other ranks, so a failure on one rank
cannot leave the others waiting. HVD_TEST_TIMEOUT overrides the 60 s default.
"""
import faulthandler
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import hvd  # noqa: E402

TIMEOUT = float(os.environ.get("HVD_TEST_TIMEOUT", "60"))
_stacks_to = None


def _real_stderr(config):
    """The process's stderr before pytest's fd capture replaced fd 2 (the watchdog
    exits the process, so what it writes into the capture would be lost)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    try:
        return os.fdopen(os.dup(capman._global_capturing.err.targetfd_save), "w")
    except (AttributeError, OSError, TypeError):
        return sys.stderr


@pytest.fixture(scope="session", autouse=True)
def hvd_job(request):
    global _stacks_to
    _stacks_to = _real_stderr(request.config)
    hvd.init()
    yield
    hvd.shutdown()


@pytest.fixture(autouse=True)
def watchdog(request):
    faulthandler.dump_traceback_later(TIMEOUT, exit=True, file=_stacks_to)
    yield
    faulthandler.cancel_dump_traceback_later()
