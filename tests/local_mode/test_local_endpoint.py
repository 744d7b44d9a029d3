"""SageMaker SDK local mode: deploy the built image as a local endpoint and predict a text and an image."""

import numpy as np
import pytest

pytestmark = pytest.mark.local_mode

TEST_MODEL_DIM = 64


@pytest.fixture(scope="module")
def endpoint_name(local_model, local_session):
    """A local endpoint (docker-compose up of `IMAGE serve`), deleted at the end of the module."""
    local_model.deploy(initial_instance_count=1, instance_type="local")
    try:
        yield local_model.endpoint_name
    finally:
        local_session.delete_endpoint(local_model.endpoint_name)
        local_session.delete_endpoint_config(local_model.endpoint_name)


def predictor(endpoint_name, session, serializer):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor

    return Predictor(endpoint_name, sagemaker_session=session, serializer=serializer,
                     deserializer=JSONDeserializer())


def assert_unit_vectors(embeddings, count):
    array = np.asarray(embeddings, dtype=np.float32)
    assert array.shape == (count, TEST_MODEL_DIM)
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-4)


def test_predict_text(endpoint_name, local_session):
    from sagemaker.serializers import JSONSerializer

    answer = predictor(endpoint_name, local_session, JSONSerializer()).predict({"text": "oat milk"})
    assert answer["dim"] == TEST_MODEL_DIM
    assert_unit_vectors(answer["embeddings"], 1)


def test_predict_image(endpoint_name, local_session, catalogue_photos):
    from sagemaker.serializers import IdentitySerializer

    images = predictor(endpoint_name, local_session, IdentitySerializer("image/jpeg"))
    answer = images.predict(catalogue_photos[0].read_bytes())
    assert_unit_vectors(answer["embeddings"], 1)
