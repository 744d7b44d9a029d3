"""Metadata filters: `--filter field=value` parsing and normalising."""
import click
import pytest

from clip_search.search.filters import normalise_filters, parse_filters


def test_parse_filters_groups_values_by_field():
    assert parse_filters(["colour=red", " colour =green", "brand=Arla", "size=a=b", "empty="]) == {
        "colour": ["red", "green"], "brand": ["Arla"], "size": ["a=b"], "empty": [""]}
    assert parse_filters(()) == {} and parse_filters(None) == {}


@pytest.mark.parametrize("spec", ["colour", "=red", "  =red", ""])
def test_malformed_filters_are_a_usage_error_naming_the_spec(spec):
    with pytest.raises(click.BadParameter) as raised:
        parse_filters(["ok=1", spec])
    assert raised.value.message == f"filter {spec!r} is not of the form field=value"
    assert raised.value.param_hint == "--filter"


def test_normalise_filters():
    assert normalise_filters({"a": "x", "b": ["y", 2], "c": 3, "d": ("p",), "e": {True}}) == {
        "a": ["x"], "b": ["y", "2"], "c": ["3"], "d": ["p"], "e": ["True"]}
    assert normalise_filters(None) == {} and normalise_filters({}) == {}

