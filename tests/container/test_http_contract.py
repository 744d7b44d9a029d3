"""The HTTP contract suite (tests/http_suite.py) against the built image, run as SageMaker runs it."""
import pytest

from tests.http_suite import *  # noqa: F401,F403 - the shared suite's tests run here

pytestmark = pytest.mark.container
