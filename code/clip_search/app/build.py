"""Open the index and the encoder the app serves, as `clip-search search` does (search.client.open_client):
--model or --endpoint when given, else the encoder the index recorded when it was built."""
from __future__ import annotations

import os

from clip_search.search.errors import SearchError


def open_service(index: str, model: str | None = None, endpoint: str | None = None, *, image_roots=None,
                 presign_seconds: int | None = None, embedder=None):
    from clip_search import settings
    from clip_search.app.service import SearchService
    from clip_search.search.client import open_client

    current = settings.current()
    if image_roots is None and current.image_roots:
        image_roots = [root for root in current.image_roots.split(os.pathsep) if root.strip()]
    client = open_client(index, model, endpoint, need_encoder=embedder is None)
    try:
        if embedder is not None:
            client.embedder = embedder
        return SearchService(client, location=index, image_roots=image_roots,
                             presign_seconds=presign_seconds or current.presign_seconds)
    except SearchError:
        client.close()
        raise
