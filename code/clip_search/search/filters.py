"""Metadata filters: `--filter field=value` (repeatable; values of one field are ORed, fields ANDed)."""
import click


def parse_filters(specs) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for spec in specs or ():
        field, sep, value = spec.partition("=")
        if not sep or not field.strip():
            raise click.BadParameter(f"filter {spec!r} is not of the form field=value", param_hint="--filter")
        filters.setdefault(field.strip(), []).append(value)
    return filters


def normalise_filters(filters) -> dict[str, list[str]]:
    """Accept {"field": "value"} or {"field": ["a", "b"]}; values compare as strings."""
    out = {}
    for field, value in (filters or {}).items():
        values = value if isinstance(value, (list, tuple, set)) else [value]
        out[field] = [str(v) for v in values]
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
        if field in COLUMN_FIELDS:
            clauses.append(f"{field} IN ({', '.join(quote(v) for v in values)})")
        else:
            tags = ", ".join(quote(f"{field}={v}") for v in values)
            clauses.append(f"array_has_any({tags_column}, [{tags}])")
    return " AND ".join(f"({clause})" for clause in clauses) or None
