"""Metadata filters: the one grammar (`field=value` or `field:value`) the CLI, the API and the page
share."""
import pytest

from clip_search.errors import RequestError
from clip_search.search.errors import QueryError, SearchError
from clip_search.search.filters import normalise_filters, parse_filters


def test_parse_filters_groups_values_by_field():
    assert parse_filters(["colour=red", " colour =green", "brand=Arla", "size=a=b", "empty="]) == {
        "colour": ["red", "green"], "brand": ["Arla"], "size": ["a=b"], "empty": [""]}
    assert parse_filters(()) == {} and parse_filters(None) == {} and parse_filters([]) == {}


def test_colon_and_equals_are_one_grammar_and_the_first_separator_ends_the_field():
    # The CLI's `=` and the API's/page's `:` mean the same; values keep every later separator.
    assert parse_filters(["colour:red", "colour=green", "category:Juice:Orange", "size=a:b", "url:http://x/y?a=1",
                          "note= spaced value "]) == {
        "colour": ["red", "green"], "category": ["Juice:Orange"], "size": ["a:b"], "url": ["http://x/y?a=1"],
        "note": [" spaced value "]}
    assert parse_filters("brand:Arla") == {"brand": ["Arla"]}  # one spec, as a JSON body may give it


def test_a_json_object_is_taken_as_field_to_values():
    assert parse_filters({"brand": "Arla", "size": [1, 2.5], "organic": True}) == {
        "brand": ["Arla"], "size": ["1", "2.5"], "organic": ["True"]}


@pytest.mark.parametrize("spec", ["colour", "=red", "  =red", ":red", "", " :x=y"])
def test_malformed_filters_are_a_query_error_naming_the_spec_and_the_form(spec):
    with pytest.raises(QueryError) as raised:
        parse_filters(["ok=1", spec])
    assert raised.value.message == f"filter {spec!r} is not of the form field=value (or field:value)"
    # The CLI prints it as an Error: line; the app answers it as a 400.
    assert isinstance(raised.value, SearchError) and isinstance(raised.value, RequestError)
    assert raised.value.status_code == 400


@pytest.mark.parametrize("value, words", [
    (7, "a filter must be field=value (or field:value), a list of them, or {\"field\": value}"),
    ([3], "a filter must be a string field=value (or field:value), not int"),
    ({"brand": {"a": 1}}, "filter 'brand': values must be strings or numbers"),
    ({"brand": [None]}, "filter 'brand': values must be strings or numbers"),
    ({"": "x"}, "filter field '' must be a non-empty name"),
])
def test_filters_of_the_wrong_shape_are_refused(value, words):
    with pytest.raises(QueryError) as raised:
        parse_filters(value)
    assert raised.value.message == words


def test_normalise_filters():
    assert normalise_filters({"a": "x", "b": ["y", 2], "c": 3, "d": ("p",), "e": {True}}) == {
        "a": ["x"], "b": ["y", "2"], "c": ["3"], "d": ["p"], "e": ["True"]}
    assert normalise_filters(None) == {} and normalise_filters({}) == {}

