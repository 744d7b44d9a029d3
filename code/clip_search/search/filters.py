"""Metadata filters, one grammar for the CLI (`--filter`), the HTTP API (`filter=`) and the page.

A filter is `FIELD=VALUE` or `FIELD:VALUE`: the first `=` or `:` ends the field name (blanks around
it are dropped), everything after it is the value, kept as typed (`size=a=b` is size "a=b",
`category:Juice:Orange` is category "Juice:Orange"). Repeat filters to combine them: values of one
field are ORed, fields ANDed. JSON bodies may also give {"field": value or [values]}. Values compare
as strings. docs/search.md ("Filters") is the user's description of this.
"""
from clip_search.search.errors import QueryError, UnsupportedQuery

SEPARATORS = "=:"
FORM = "field=value (or field:value)"


def parse_filter(spec) -> tuple[str, str]:
    """`FIELD=VALUE` or `FIELD:VALUE` -> (field, value); QueryError names the spec otherwise."""
    if not isinstance(spec, str):
        raise QueryError(f"a filter must be a string {FORM}, not {type(spec).__name__}")
    cut = min((at for at in (spec.find(sep) for sep in SEPARATORS) if at >= 0), default=-1)
    field = spec[:cut].strip() if cut >= 0 else ""
    if not field:
        raise QueryError(f"filter {spec[:80]!r} is not of the form {FORM}")
    return field, spec[cut + 1:]


def parse_filters(value) -> dict[str, list[str]]:
    """Filters as users give them -> {field: [values]}: a spec, a list of specs (the CLI's repeated
    --filter, the API's repeated filter=), or a JSON object {field: value or [values]}."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return normalise_filters(value)
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, (list, tuple)):
        raise QueryError(f'a filter must be {FORM}, a list of them, or {{"field": value}}')
    filters: dict[str, list[str]] = {}
    for spec in specs:
        field, text = parse_filter(spec)
        filters.setdefault(field, []).append(text)
    return filters


SCALARS = (str, int, float, bool)


def normalise_filters(filters) -> dict[str, list[str]]:
    """{"field": "value"} or {"field": ["a", "b"]} -> {field: [values as strings]}."""
    out = {}
    for field, value in (filters or {}).items():
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        if not isinstance(field, str) or not field.strip():
            raise QueryError(f"filter field {field!r} must be a non-empty name")
        if not all(isinstance(item, SCALARS) for item in values):
            raise QueryError(f"filter {field!r}: values must be strings or numbers")
        out[field] = [str(item) for item in values]
    return out


def quote(value) -> str:
    """A SQL string literal for LanceDB (DataFusion): quotes doubled, nothing else special, so a
    value is always one literal and can never end it or add SQL of its own."""
    return "'" + str(value).replace("'", "''") + "'"


# Filters on these fields compare the column itself; any other field is a metadata tag "field=value".
COLUMN_FIELDS = ("id", "title")


def to_lance_where(filters: dict[str, list[str]], tags_column: str = "tags") -> str | None:
    """{field: [values]} -> a LanceDB `where`: values of one field ORed, fields ANDed."""
    clauses = []
    for field, values in filters.items():
        if not values:
            return "false"
        if "=" in field:  # the tag "a=b=c" would also match field "a" with value "b=c"
            raise UnsupportedQuery(f"the embedded index cannot filter on {field!r}: a field name with '=' in it")
        if field in COLUMN_FIELDS:
            clauses.append(f"{field} IN ({', '.join(quote(v) for v in values)})")
        else:
            tags = ", ".join(quote(f"{field}={v}") for v in values)
            clauses.append(f"array_has_any({tags_column}, [{tags}])")
    return " AND ".join(f"({clause})" for clause in clauses) or None
