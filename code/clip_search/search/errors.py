"""Errors the search layer raises; the CLI turns them into one clear line and a non-zero exit."""


class SearchError(Exception):
    """Base class: a problem the user can fix (bad location, wrong model, unreachable backend)."""


class ModelMismatchError(SearchError):
    def __init__(self, index_model: str, index_dim: int, query_model: str, query_dim: int, location: str):
        super().__init__(
            f"index {location} was built with model {index_model} (dim {index_dim}); this query was "
            f"encoded by {query_model} (dim {query_dim}). Query with the model that built the index, "
            "or rebuild the index."
        )


class IndexNotFoundError(SearchError):
    pass


class CatalogueError(SearchError):
    pass


class EncodingError(SearchError):
    pass
