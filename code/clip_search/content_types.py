"""Media types of the handler contract, and parsing of Content-Type / Accept headers: core, shared by
the handler (serving) and the clients that speak to it (endpoint_client, publishing)."""
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
TEXT = "text/plain"
X_IMAGE = "application/x-image"
# What an OpenSearch ml-commons connector sends and asks for (docs/serving.md, "OpenSearch connector"):
# {"inputText": ..., "inputImage": ...} in, [[embedding]] out (the connector's default post-processing).
ML_COMMONS = "application/vnd.clip-search.ml-commons+json"
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", X_IMAGE)
# Other spellings of JSON Lines seen in the wild; answered as application/jsonlines.
JSONLINES_ALIASES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines")

REQUEST_TYPES = (JSON, TEXT, *IMAGE_TYPES, JSONLINES, ML_COMMONS)
RESPONSE_TYPES = (JSON, JSONLINES, NPY, ML_COMMONS)
ANY = "*/*"


def media_type(header: str | None) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json'; aliases folded."""
    value = (header or "").split(";", 1)[0].strip().lower()
    return JSONLINES if value in JSONLINES_ALIASES else value


def negotiate(accept: str | None, default: str = JSON) -> str | None:
    """The first supported type in an Accept header (q-values honoured), default for */* or none.

    None means nothing acceptable: the caller answers 406.
    """
    if not accept or not accept.strip():
        return default
    candidates = []
    for position, part in enumerate(accept.split(",")):
        pieces = [piece.strip() for piece in part.split(";")]
        quality = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        candidates.append((-quality, position, media_type(pieces[0])))
    for negative_quality, _, value in sorted(candidates):
        if negative_quality == 0:
            continue
        if value in RESPONSE_TYPES:
            return value
        if value in (ANY, "application/*"):
            return default
    return None
