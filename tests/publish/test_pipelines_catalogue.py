"""The catalogue refresh pipeline end to end on real photos, run by the SDK's own local executor with
processing jobs in process and Batch Transform answered by the real model server
(tests/publish/pipelines_in_process.py): the first run
encodes every product, the next (2 changed, 1 added, 1 removed) encodes 3 and deletes 1, an
unchanged one encodes nothing; the index (LanceDB on moto's S3, the OpenSearch stand-in) then holds
exactly the catalogue."""
import pytest

from tests.publish.conftest import BUCKET
from tests.publish.test_pipelines import IMAGE, _read_json, catalogue_pipeline, session  # noqa: F401 - fixture
from tests.search.conftest import standin  # noqa: F401 - fixture
from tests.search.test_incremental import Shop

GROUP = "clip-search-refresh-test"
# Batch Transform's equivalent here is the real multi-model-server: the server tier.
pytestmark = pytest.mark.server


def _upload_folder(s3, folder, prefix):
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder)}")


def _clear(s3, prefix):
    for entry in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=entry["Key"])


@pytest.fixture
def approved_package(aws, test_model_tar):
    """The test model as the latest Approved package of the group (what ModelPackage=latest resolves)."""
    aws["s3"].upload_file(str(test_model_tar), BUCKET, "models/model.tar.gz")
    sm = aws["sm"]
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    return sm.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/model.tar.gz"}],
                                "SupportedContentTypes": ["application/jsonlines"],
                                "SupportedResponseMIMETypes": ["application/jsonlines"]})["ModelPackageArn"]


@pytest.fixture
def index_location(standin):  # noqa: F811 - the fixture imported above
    """The OpenSearch stand-in. LanceDB on moto's S3 runs the same refresh in Docker, the real jobs in
    the processing and serving images (tests/local_mode/test_local_pipelines.py, container tier)."""
    return f"{standin.url}/products"


def test_refresh_encodes_only_what_changed_and_the_index_equals_the_catalogue(index_location, aws, session,  # noqa: F811
                                                                           approved_package, tmp_path):
    # index_location first: the stand-in loads the OpenSearch spec before `aws` clears CLIP_SEARCH_* variables.
    from clip_search.search.index import open_index
    from tests.publish.pipelines_in_process import run_pipeline

    shop = Shop(tmp_path / "shop")
    pipeline = catalogue_pipeline(aws, session)
    parameters = {"CatalogueUri": f"s3://{BUCKET}/catalogue/", "Index": index_location, "ModelPackageGroup": GROUP,
                  "MaxFailureRate": 0.0}

    def refresh(run):
        _clear(aws["s3"], "catalogue/")
        _upload_folder(aws["s3"], shop.folder, "catalogue")
        execution = run_pipeline(pipeline, parameters, tmp_path / run, session, run)
        assert execution.status == "Succeeded", execution.failure_reason
        load = next(execution.step_execution[name] for name in ("LoadEmbeddings", "ApplyDeletions")
                    if execution.step_execution[name].status == "Succeeded")
        report = _read_json(aws["s3"], load.properties["ProcessingOutputConfig"]["Outputs"]["report"]["S3Output"]["S3Uri"]
                            + "/report.json")
        with open_index(index_location) as index:
            assert set(index.content_hashes()) == set(shop.rows)  # exactly the catalogue
            assert all(index.content_hashes().values())
        return execution, report

    first, report = refresh("first")
    assert first.records_encoded == 16  # 8 photos + 8 titles
    assert {key: report[key] for key in ("added", "updated", "deleted", "unchanged", "failed")} == {
        "added": 8, "updated": 0, "deleted": 0, "unchanged": 0, "failed": 0}
    assert first.step_execution["FindChanges"].properties["InProcessEquivalent"]

    day = shop.change_next_day()
    second, report = refresh("second")
    assert second.records_encoded == 6  # 3 photos + 3 titles: the changed and the added product
    assert {key: report[key] for key in ("added", "updated", "deleted", "unchanged", "failed")} == {
        "added": 1, "updated": 2, "deleted": 1, "unchanged": 5, "failed": 0}
    with open_index(index_location) as index:
        assert day["removed"] not in index.content_hashes()

    third, report = refresh("third")
    assert third.records_encoded == 0
    assert third.step_execution["AnythingToEncode"].properties["Outcome"] is False
    assert third.step_execution["EncodeChanged"].status is None  # no transform job at all
    assert {key: report[key] for key in ("added", "updated", "deleted", "unchanged", "failed")} == {
        "added": 0, "updated": 0, "deleted": 0, "unchanged": 8, "failed": 0}


def test_failures_over_the_threshold_fail_the_execution_with_the_rate(aws, session, approved_package, tmp_path):  # noqa: F811
    from tests.publish.pipelines_in_process import run_pipeline

    shop = Shop(tmp_path / "shop")
    (shop.folder / next(iter(shop.rows.values()))["image"]).write_bytes(b"not a photo")
    _upload_folder(aws["s3"], shop.folder, "catalogue")
    execution = run_pipeline(catalogue_pipeline(aws, session), {
        "CatalogueUri": f"s3://{BUCKET}/catalogue/", "Index": f"s3://{BUCKET}/index", "ModelPackageGroup": GROUP,
        "MaxFailureRate": 0.1}, tmp_path / "run", session, "run")
    assert execution.status == "Failed"
    message = execution.step_execution["TooManyFailures"].properties["ErrorMessage"]
    assert message.startswith("failure rate 0.125 is over MaxFailureRate 0.1 - see s3://")
    report_uri = message.rsplit(" ", 1)[-1]
    assert "\n" not in message and report_uri.endswith("/run/report/report.json")
    report = _read_json(aws["s3"], report_uri)  # the report it names: the unreadable photo, by id
    assert report["failed"] == 1 and report["failures"][0][0] == next(iter(shop.rows))
