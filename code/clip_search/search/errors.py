"""Errors the search layer raises; the CLI turns them into one clear line and a non-zero exit."""
from http import HTTPStatus

from clip_search.errors import BadRequest, ClipSearchError


class SearchError(ClipSearchError):
    """Base class: a problem the user can fix (bad location, wrong model, unreachable backend)."""


class ModelMismatchError(SearchError):
    def __init__(self, index_model: str, index_dim: int, query_model: str, query_dim: int, location: str,
                 indexing: bool = False):
        if indexing:
            message = (f"index {location} was built with model {index_model} (dim {index_dim}); the catalogue "
                       f"is now encoded with {query_model} (dim {query_dim}). Index with the model that built "
                       "the index, or give a new --index location for this model.")
        else:
            message = (f"index {location} was built with model {index_model} (dim {index_dim}); this query was "
                       f"encoded by {query_model} (dim {query_dim}). Query with the model that built the index, "
                       "or rebuild the index.")
        super().__init__(message)


class IndexNotFoundError(SearchError):
    pass


class CatalogueError(SearchError):
    pass


class EncodingError(SearchError):
    pass


class QueryError(SearchError, BadRequest):
    """The query itself is wrong (a malformed filter): the CLI's `Error:` line, the app's 400."""


class UnsupportedQuery(QueryError):
    """A well-formed query this backend cannot run as asked (keywords on pgvector, a filter it
    cannot express): refused, never run without the part it cannot do. The app answers 422."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
