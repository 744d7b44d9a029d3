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


def matches(record: dict, filters: dict[str, list[str]]) -> bool:
    for field, values in filters.items():
        value = record.get(field)
        candidates = value if isinstance(value, list) else [value]
        if not any(str(c) in values for c in candidates if c is not None):
            return False
    return True
