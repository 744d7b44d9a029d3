"""The HTTP contract suite against the native server (`clip-search serve`'s stack)."""
import pytest

from tests.http_suite import *  # noqa: F401,F403 - the shared suite's tests run here

pytestmark = pytest.mark.server
