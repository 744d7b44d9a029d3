"""Product search with CLIP embeddings: catalogue readers, embedding sources, index backends
(embedded folder, OpenSearch k-NN, PostgreSQL + pgvector) and the SearchClient that ties them."""


def __getattr__(name):  # lazy: `import clip_search.search.cli` must not pull in faiss or torch
    if name == "SearchClient":
        from clip_search.search.client import SearchClient

        return SearchClient
    raise AttributeError(name)


__all__ = ["SearchClient"]
