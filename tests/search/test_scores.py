"""Score conversion to cosine, checked against numbers computed independently of scores.py.

Two independent sources: the formulas of OpenSearch's k-NN space documentation written out by hand
below (docs.opensearch.org .../supported-field-types/knn-spaces), and the OpenSearch stand-in's own
`_score`, which answers searches the way the real engine does. No inverse from the module under
test is used, so a consistently wrong pair of formulas cannot pass.
"""
import math

import pytest

from clip_search.search.scores import cosine_from_opensearch, cosine_from_pgvector_distance
from tests.standins.opensearch_standin import _score

# (engine, space, cosine, the score OpenSearch reports), worked out from the documented formulas.
DOCUMENTED = [
    ("faiss", "innerproduct", 0.5, 1.5),            # 1 + ip
    ("lucene", "innerproduct", 0.0, 1.0),
    ("faiss", "innerproduct", -1.0, 0.5),           # 1 / (1 - ip)
    ("faiss", "innerproduct", -0.25, 0.8),
    ("lucene", "cosinesimil", 0.0, 0.5),            # (2 - (1 - cos)) / 2
    ("faiss", "cosinesimil", 0.6, 0.8),
    ("faiss", "cosinesimil", -0.5, 0.25),
    ("nmslib", "cosinesimil", 0.5, 1 / 1.5),        # 1 / (1 + (1 - cos))
    ("nmslib", "cosinesimil", 1.0, 1.0),
    ("nmslib", "cosinesimil", -1.0, 1 / 3),
    ("faiss", "l2", 1.0, 1.0),                      # 1 / (1 + d), d = |a - b|^2 = 2 - 2 cos
    ("faiss", "l2", 0.5, 0.5),
    ("lucene", "l2", 0.0, 1 / 3),
    ("nmslib", "l2", -1.0, 0.2),
]


@pytest.mark.parametrize("engine,space,cosine,score", DOCUMENTED)
def test_documented_scores_convert_to_cosine(engine, space, cosine, score):
    assert cosine_from_opensearch(score, engine, space) == pytest.approx(cosine, abs=1e-9)


def unit(angle: float) -> tuple[float, float]:
    return math.cos(angle), math.sin(angle)


@pytest.mark.parametrize("engine,space", [("faiss", "innerproduct"), ("lucene", "innerproduct"), ("faiss", "cosinesimil"),
                                          ("lucene", "cosinesimil"), ("nmslib", "cosinesimil"), ("faiss", "l2"),
                                          ("lucene", "l2"), ("nmslib", "l2"), ("nmslib", "innerproduct")])
@pytest.mark.parametrize("angle", [0.0, 0.3, 1.2, math.pi / 2, 2.0, 2.9, math.pi])
def test_the_standins_scores_convert_back_to_the_cosine_of_the_vectors(engine, space, angle):
    a, b = unit(0.0), unit(angle)
    cosine = a[0] * b[0] + a[1] * b[1]
    sq_distance = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    score = _score(cosine, sq_distance, engine, space)
    assert score > 0 or (space == "cosinesimil" and engine != "nmslib")
    if score > 0:
        assert cosine_from_opensearch(score, engine, space) == pytest.approx(cosine, abs=1e-9)


def test_engines_differ_where_the_documentation_says_they_do():
    # The same cosine gives a different score on nmslib than on faiss: the conversion must branch.
    assert cosine_from_opensearch(0.8, "nmslib", "cosinesimil") == pytest.approx(0.75)
    assert cosine_from_opensearch(0.8, "faiss", "cosinesimil") == pytest.approx(0.6)
    assert cosine_from_opensearch(0.8, "lucene", "cosinesimil") == pytest.approx(0.6)
    assert cosine_from_opensearch(1.0, "faiss", "innerproduct") == 0.0
    assert cosine_from_opensearch(0.999999, "faiss", "innerproduct") == pytest.approx(1.0 - 1.0 / 0.999999)


def test_unknown_space_is_a_clear_error():
    with pytest.raises(ValueError, match="no cosine conversion for OpenSearch space_type 'l1'"):
        cosine_from_opensearch(0.5, "nmslib", "l1")


def test_pgvector_distance():
    assert cosine_from_pgvector_distance(0.25) == 0.75
    assert cosine_from_pgvector_distance(0.0) == 1.0
    assert cosine_from_pgvector_distance(2.0) == -1.0
