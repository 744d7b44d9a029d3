"""Pick the backend from the INDEX location the user gave.

  a folder path                          -> embedded index (default, no server)
  http(s)://host:port/INDEX_NAME         -> OpenSearch k-NN
  postgresql://user@host/db[?table=NAME] -> PostgreSQL + pgvector
"""
from clip_search.search.index.base import FIELDS, IMAGE, TITLE, IndexInfo, UpsertReport, VectorIndex


def open_index(location: str, **options) -> VectorIndex:
    location = str(location)
    if location.startswith(("http://", "https://")):
        from clip_search.search.index.opensearch import OpenSearchIndex

        return OpenSearchIndex.from_url(location, **options)
    if location.startswith(("postgresql://", "postgres://")):
        from clip_search.search.index.pgvector import PgvectorIndex

        return PgvectorIndex.from_dsn(location, **options)
    from clip_search.search.index.embedded import EmbeddedIndex

    return EmbeddedIndex(location, **options)


__all__ = ["FIELDS", "IMAGE", "TITLE", "IndexInfo", "UpsertReport", "VectorIndex", "open_index"]
