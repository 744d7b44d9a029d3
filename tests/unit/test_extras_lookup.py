"""extras.py: an extra's name is checked (a typo is a KeyError listing the real ones, never a silent
pass), and `available` answers for the installed environment (this venv has every extra)."""
import pytest

from clip_search import extras


def test_an_unknown_extra_is_refused_listing_the_known_ones():
    with pytest.raises(KeyError) as error:
        extras.require("serving")
    assert error.value.args[0] == ("unknown extra 'serving'; known: app, opensearch, openvino, package, pgvector, "
                                   "publish, serve")


def test_available_answers_for_the_whole_extra_or_the_modules_named():
    assert extras.available("serve") and extras.available("app")
    assert extras.available("package", "torch")
    assert not extras.available("serve", "clip_search_no_such_module")
    assert extras.missing("serve", ("mms", "clip_search_no_such_module")) == "clip_search_no_such_module"
