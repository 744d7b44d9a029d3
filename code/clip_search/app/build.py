"""Open the index and the encoder the app serves, the way `clip-search search` does: --model or
--endpoint when given, else the encoder the index recorded when it was built."""
from __future__ import annotations

import os

from clip_search.search.errors import IndexNotFoundError, SearchError


def open_service(index: str, model: str | None = None, endpoint: str | None = None, *, image_roots=None,
                 presign_seconds: int | None = None, embedder=None):
    from clip_search import settings
    from clip_search.app.service import SearchService
    from clip_search.search.client import SearchClient
    from clip_search.search.embeddings import embedder_for

    current = settings.current()
    if image_roots is None and current.image_roots:
        image_roots = [root for root in current.image_roots.split(os.pathsep) if root.strip()]
    client = SearchClient(index)
    try:
        info = client.index.info()
        if info is None:
            raise IndexNotFoundError(f"no index at {index}: build it with `clip-search index`")
        if embedder is not None:
            client.embedder = embedder
        elif model or endpoint:
            client.embedder = embedder_for(model, endpoint)
        else:  # as `clip-search search`: the encoder the index recorded
            spec = info.extra.get("encoder") or {}
            if not spec:
                raise SearchError(f"no encoder recorded for {index}: pass --model or --endpoint")
            client.embedder = embedder_for(spec.get("model"), spec.get("endpoint"))
        return SearchService(client, location=index, image_roots=image_roots,
                             presign_seconds=presign_seconds or current.presign_seconds)
    except SearchError:
        client.close()
        raise
