"""One score convention for users: cosine similarity (1 = identical, -1 = opposite).

Each backend reports its own number; convert at the edge so callers never see the difference.
OpenSearch k-NN scores (https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces):
  innerproduct (faiss, lucene): 1 + ip when ip >= 0, else 1 / (1 - ip)
  cosinesimil (faiss, lucene):  (2 - d) / 2 with d = 1 - cos, i.e. (1 + cos) / 2
  cosinesimil (legacy nmslib):  1 / (1 + d)
  l2 (all engines):             1 / (1 + d) with d the squared distance; for unit vectors d = 2 - 2 cos
pgvector's `<=>` is a cosine distance: 1 - cos.
"""


def cosine_from_opensearch(score: float, engine: str, space_type: str) -> float:
    if space_type == "innerproduct":
        return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    if space_type == "cosinesimil":
        if engine == "nmslib":
            return 2.0 - 1.0 / score
        return 2.0 * score - 1.0
    if space_type == "l2":
        return 1.0 - (1.0 / score - 1.0) / 2.0
    raise ValueError(f"no cosine conversion for OpenSearch space_type {space_type!r}")


def cosine_from_pgvector_distance(distance: float) -> float:
    return 1.0 - distance
