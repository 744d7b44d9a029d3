import pytest

from clip_search.search.scores import cosine_from_opensearch, cosine_from_pgvector_distance, opensearch_from_cosine


@pytest.mark.parametrize("engine,space", [("faiss", "innerproduct"), ("lucene", "innerproduct"), ("faiss", "cosinesimil"),
                                          ("lucene", "cosinesimil"), ("nmslib", "cosinesimil"), ("faiss", "l2")])
@pytest.mark.parametrize("cosine", [-0.9, -0.2, 0.0, 0.31, 0.99, 1.0])
def test_opensearch_scores_round_trip_to_cosine(engine, space, cosine):
    score = opensearch_from_cosine(cosine, engine, space)
    assert score > 0
    assert cosine_from_opensearch(score, engine, space) == pytest.approx(cosine, abs=1e-9)


def test_documented_values():
    assert opensearch_from_cosine(0.5, "faiss", "innerproduct") == 1.5
    assert opensearch_from_cosine(-1.0, "faiss", "innerproduct") == 0.5
    assert opensearch_from_cosine(0.0, "lucene", "cosinesimil") == 0.5
    assert cosine_from_pgvector_distance(0.25) == 0.75
