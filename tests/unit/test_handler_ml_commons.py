"""The handler's ml-commons format: the body an OpenSearch connector sends, the answer its default
post-processing reads (docs/serving.md, "OpenSearch connector")."""
import base64
import json

import numpy as np
import pytest

from clip_search import content_types as ct
from clip_search.errors import RequestError
from clip_search.serving.handler import input_fn, model_fn, output_fn, predict_fn

# The request body template `clip-search opensearch connect` puts in the connector, filled as
# ml-commons fills it: `${parameters.X:-null}` -> the (JSON-escaped) value, or null when not sent.
TEMPLATE = '{"inputText": "${parameters.inputText:-null}", "inputImage": "${parameters.inputImage:-null}"}'


def filled(text=None, image=None) -> str:
    body = TEMPLATE
    for name, value in (("inputText", text), ("inputImage", image)):
        escaped = "null" if value is None else json.dumps(value)[1:-1]
        body = body.replace("${parameters.%s:-null}" % name, escaped)
    return body


@pytest.fixture(scope="module")
def model(test_model_dir):
    return model_fn(str(test_model_dir))


def answer(model, body):
    payload, media = output_fn(predict_fn(input_fn(body, ct.ML_COMMONS), model), ct.ML_COMMONS)
    assert media == ct.ML_COMMONS
    # connector.post_process.default.embedding: JSONPath `$[*]`, each item a non-empty list of numbers
    rows = json.loads(payload)
    assert isinstance(rows, list) and all(isinstance(r, list) and all(isinstance(x, float) for x in r) for r in rows)
    return np.array(rows, dtype=np.float32)


def test_text_is_the_text_embedding(model):
    rows = answer(model, filled(text='oat "barista" milk'))
    assert rows.shape == (1, 64)
    assert np.allclose(rows[0], model.encode_texts(['oat "barista" milk'])[0], atol=1e-5)


def test_image_is_the_image_embedding(model, catalogue_photos):
    photo = catalogue_photos[0].read_bytes()
    rows = answer(model, filled(image=base64.b64encode(photo).decode()))
    reference = json.loads(output_fn(predict_fn(input_fn(photo, "image/jpeg"), model), "application/json")[0])
    assert rows.shape == (1, 64)
    assert np.allclose(rows[0], reference["embeddings"][0], atol=1e-5)


def test_text_and_image_give_one_embedding_between_them(model, catalogue_photos):
    photo = base64.b64encode(catalogue_photos[1].read_bytes()).decode()
    both = answer(model, filled(text="apple", image=photo))[0]
    text, image = answer(model, filled(text="apple"))[0], answer(model, filled(image=photo))[0]
    assert both.shape == (64,) and np.linalg.norm(both) == pytest.approx(1, abs=1e-5)
    assert np.allclose(both, (text + image) / np.linalg.norm(text + image), atol=1e-5)


@pytest.mark.parametrize("body,message", [
    (filled(), "inputText and inputImage are both missing"),
    ('{"inputText": null}', "both missing"),
    ('{"inputText": "x", "inputs": ["y"]}', "unknown keys inputs"),
    ('["x"]', "must be an object"),
    (filled(image="not base64!"), "inputImage is not valid base64"),
    ('{"inputText": 3}', "inputText must be a string"),
])
def test_bad_bodies_are_400s_naming_the_problem(model, body, message):
    with pytest.raises(RequestError) as found:
        input_fn.unwrapped(body, ct.ML_COMMONS)
    assert found.value.status_code == 400 and message in found.value.message
