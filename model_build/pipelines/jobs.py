"""What the pipelines' processing steps run inside our image: `python -m model_build.pipelines.jobs STEP`.

Catalogue refresh:
  find-changes  reads the catalogue (downloaded by the step), resolves the model package (an ARN,
                or "latest": the latest Approved one in the group), hashes every product (photo
                bytes + title + model id, clip_search.search.catalogue.content_hash) and compares
                with the hashes the index holds. Writes the Batch Transform input for the new and
                changed products only (JSON Lines, `{"id": "i:ID", "image": base64}` and
                `{"id": "t:ID", "text": title}`), their manifest (with the hashes), the ids the
                catalogue no longer lists, and changes.json (counts; the package's image and
                artifact, which the CreateModel step reads).
  load          upserts the manifest's products with their embeddings from the Batch Transform
                output and deletes the removed ids (both by product id: running it again changes
                nothing), then writes report.json: added, updated, deleted, unchanged, failed.
Model build:
  package       `clip-search package-model` (the accuracy guard runs inside it) -> model.tar.gz.
  evaluate      `clip-search eval` on a labelled catalogue -> evaluation.json (the report, attached
                to the model package as ModelMetrics) and gate.json (the figure the condition reads).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

# Where SageMaker Processing mounts a job's inputs and outputs; another folder runs a step outside a
# container (the tests' in-process equivalent of a processing job).
PROCESSING_DIR_ENV = "CLIP_SEARCH_PROCESSING_DIR"
IMAGE_KEY, TITLE_KEY = "i:", "t:"  # record ids in the transform input: one per photo, one per title
SHARD_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 6 * 1024 * 1024  # MaxPayloadInMB of the transform (one record must fit one request)
FAILURES_KEPT = 100  # failures listed by id in the reports (all are counted)
CATALOGUE_NAMES = ("products.jsonl", "products.jsonl.gz", "products.csv", "products.csv.gz", "catalogue.jsonl",
                   "catalogue.csv")


class JobError(Exception):
    """A step refuses to run: one line, exit status 2."""


# --- catalogue refresh: find what changed ---------------------------------------------------------
def resolve_model_package(sagemaker_client, package: str, group: str) -> dict:
    """{"model_package_arn", "image_uri", "model_data"} of `package` (an ARN), or of the latest
    Approved package in `group` when `package` is "latest" or empty."""
    if package in ("", "latest"):
        found = sagemaker_client.list_model_packages(
            ModelPackageGroupName=group, ModelApprovalStatus="Approved", SortBy="CreationTime",
            SortOrder="Descending", MaxResults=1)["ModelPackageSummaryList"]
        if not found:
            raise JobError(f"no Approved model package in group {group!r}: approve one (clip-search publish approve) "
                           "or give the ModelPackage parameter an ARN")
        package = found[0]["ModelPackageArn"]
    described = sagemaker_client.describe_model_package(ModelPackageName=package)
    container = described["InferenceSpecification"]["Containers"][0]
    return {"model_package_arn": described["ModelPackageArn"], "image_uri": container["Image"],
            "model_data": container["ModelDataUrl"]}


def model_id_of(model_data: str, s3_client) -> str:
    """The model id recorded in the artifact's manifest (read from the tar, weights not extracted)."""
    from clip_search.artifact import read_packed_manifest

    if not model_data.startswith("s3://"):
        return read_packed_manifest(Path(model_data.removeprefix("file://")))["model_id"]
    bucket, _, key = model_data[len("s3://"):].partition("/")
    with tempfile.TemporaryDirectory(prefix="clip-search-artifact-") as scratch:
        path = Path(scratch) / "model.tar.gz"
        s3_client.download_file(bucket, key, str(path))
        return read_packed_manifest(path)["model_id"]


def find_catalogue(folder: Path) -> Path:
    for name in CATALOGUE_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.rglob("*") if p.name.endswith((".jsonl", ".csv", ".jsonl.gz", ".csv.gz")))
    if len(found) != 1:
        raise JobError(f"expected one catalogue file (.jsonl/.csv) in {folder}, found "
                       f"{', '.join(p.name for p in found) or 'none'}")
    return found[0]


class _Shards:
    """JSON Lines records in files of at most SHARD_BYTES (several let several instances share them)."""

    def __init__(self, folder: Path):
        self.folder, self.count, self.records = folder, 0, 0
        folder.mkdir(parents=True, exist_ok=True)
        self.handle, self.size = None, 0

    def write(self, record: dict) -> None:
        line = json.dumps(record).encode() + b"\n"
        if self.handle is None or self.size + len(line) > SHARD_BYTES:
            self.close()
            self.handle = open(self.folder / f"part-{self.count:05d}.jsonl", "wb")
            self.count, self.size = self.count + 1, 0
        self.handle.write(line)
        self.size += len(line)
        self.records += 1

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def find_changes(catalogue_dir: Path, index_location: str, package: dict, model_id: str, transform_dir: Path,
                 changes_dir: Path, batch_size: int = 256) -> dict:
    from clip_search.search.catalogue import read_catalogue
    from clip_search.search.client import _batches, changed_products, read_photos
    from clip_search.search.index import UpsertReport, open_index

    catalogue = find_catalogue(catalogue_dir)
    with open_index(index_location) as index:
        info = index.info()
        if info is not None and info.model_id != model_id:
            raise JobError(f"index {index_location} was built with model {info.model_id}; the model package has "
                           f"{model_id}: refresh into a new index (or drop this one) to change models")
        known = index.content_hashes() if info is not None else {}
    changes_dir.mkdir(parents=True, exist_ok=True)
    counts, seen, failed = UpsertReport(), set(), []
    shards = _Shards(transform_dir)
    with open(changes_dir / "manifest.jsonl", "w", encoding="utf-8") as manifest:
        for batch in tqdm(_batches(read_catalogue(catalogue), batch_size), desc="hashing", unit=" batches"):
            counts.products += len(batch)
            seen.update(product.id for product in batch)
            photos = read_photos(batch)
            for product in changed_products(batch, photos, known, model_id, counts):
                photo = photos.get(product.id)
                kind = "updated" if product.id in known else "added"
                if isinstance(photo, Exception):
                    failed.append([product.id, f"image {product.image}: {photo}"])
                elif not product.image and not product.title:
                    failed.append([product.id, "nothing to index: no image and no title"])
                elif photo is not None and len(photo) * 4 // 3 + 64 > MAX_RECORD_BYTES:
                    failed.append([product.id, f"photo of {len(photo)} bytes is over the transform's payload limit"])
                else:
                    if photo is not None:
                        shards.write({"id": IMAGE_KEY + product.id, "image": base64.b64encode(photo).decode("ascii")})
                    if product.title:
                        shards.write({"id": TITLE_KEY + product.id, "text": product.title})
                    manifest.write(json.dumps({"id": product.id, "title": product.title, "image": product.image,
                                               "metadata": product.metadata, "content_hash": product.content_hash,
                                               "change": kind}, ensure_ascii=False) + "\n")
                    continue
                setattr(counts, kind, getattr(counts, kind) - 1)  # counted as changed; failed instead
    shards.close()
    removed = sorted(set(known) - seen)
    (changes_dir / "removed.txt").write_text("".join(f"{product_id}\n" for product_id in removed), encoding="utf-8")
    report = {"products": counts.products, "added": counts.added, "updated": counts.updated,
              "unchanged": counts.unchanged, "removed": len(removed), "failed": len(failed),
              "failures": failed[:FAILURES_KEPT], "records": shards.records, "to_encode": counts.added + counts.updated,
              "catalogue": catalogue.name, "index": index_location, "model_id": model_id, **package}
    (changes_dir / "changes.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


# --- catalogue refresh: load ---------------------------------------------------------------------
def load_embeddings(changes_dir: Path, embeddings_dir: Path | None, index_location: str, report_dir: Path,
                    batch_size: int = 1024) -> dict:

    from clip_search.search.client import _batches
    from clip_search.search.embeddings import read_batch_output
    from clip_search.search.index import open_index
    from clip_search.search.records import Product

    changes = json.loads((changes_dir / "changes.json").read_text(encoding="utf-8"))
    removed = (changes_dir / "removed.txt").read_text(encoding="utf-8").split()
    failed = [tuple(failure) for failure in changes["failures"]]
    failed_count = changes["failed"]
    counts = {"added": 0, "updated": 0}
    has_output = embeddings_dir is not None and any(embeddings_dir.rglob("*.out"))
    output = read_batch_output(str(embeddings_dir)) if has_output else None
    with open_index(index_location) as index:
        if changes["to_encode"] and output is None:
            raise JobError(f"{changes['to_encode']} products changed but there is no Batch Transform output "
                           f"(*.out) in {embeddings_dir}")
        if output is not None and output.dim:
            index.ensure(output.dim, changes["model_id"])
        rows = _manifest(changes_dir / "manifest.jsonl")
        for batch in tqdm(_batches(rows, batch_size), desc="loading", unit=" batches", disable=output is None):
            products = [Product(r["id"], r["title"], r["image"], r["metadata"], r["content_hash"]) for r in batch]
            images, image_reasons = output.take([IMAGE_KEY + p.id for p in products])
            titles, title_reasons = output.take([TITLE_KEY + p.id for p in products])
            keep = []
            for i, product in enumerate(products):
                reason = (image_reasons[i] if product.image else None) or (title_reasons[i] if product.title else None)
                if reason:
                    failed.append((product.id, reason))
                    failed_count += 1
                else:
                    keep.append(i)
                    if not product.title:
                        titles[i] = 0
            result = index.upsert_arrays([products[i] for i in keep], images[keep], titles[keep])
            refused = {product_id for product_id, _ in result.errors}
            failed += result.errors
            failed_count += len(refused)
            for i in keep:
                if products[i].id not in refused:
                    counts[batch[i]["change"]] += 1
        deleted = index.delete(removed) if removed and index.info() is not None else 0
        index.refresh()
        total = index.count()
    if output is not None:
        output.close()
    products = changes["products"]
    report = {"added": counts["added"], "updated": counts["updated"], "deleted": deleted,
              "unchanged": changes["unchanged"], "failed": failed_count, "products": products,
              "failure_rate": failed_count / products if products else 0.0, "in_index": total,
              "failures": [list(failure) for failure in failed[:FAILURES_KEPT]], "index": index_location,
              "model_id": changes["model_id"], "model_package_arn": changes.get("model_package_arn")}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def _manifest(path: Path):
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


# --- model build ---------------------------------------------------------------------------------
def evaluate(model: Path, catalogue_dir: Path, queries_dir: Path, out_dir: Path, kind: str = "text") -> dict:
    """The evaluation report of `clip-search eval`, and gate.json {"recall_at_10": the figure of
    query kind `kind`} for the pipeline's condition (JsonGet reads a plain key)."""
    from clip_search.search.evaluation import evaluate_model, write_report

    model = next(model.rglob("*.tar.gz")) if model.is_dir() else model
    queries = next(p for p in sorted(queries_dir.rglob("*")) if p.name.endswith((".jsonl", ".json")))
    report = evaluate_model(str(find_catalogue(catalogue_dir)), str(queries), str(model), None)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(report, out_dir / "evaluation.json")
    figure = (report["metrics"].get(kind) or {}).get("recall@10")
    if figure is None:
        raise JobError(f"the evaluation has no {kind} queries: nothing to gate on")
    gate = {"recall_at_10": figure, "kind": kind, "model_id": report.get("model_id")}
    (out_dir / "gate.json").write_text(json.dumps(gate, indent=2), encoding="utf-8")
    return gate


def package(out_dir: Path, arch: str, pretrained: str, runtime: str, test_model: bool) -> Path:
    from click.testing import CliRunner

    from clip_search.cli import main

    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["package-model", "-o", str(out_dir / "model.tar.gz"), "--runtime", runtime]
    args += ["--test-model"] if test_model else ["--arch", arch, "--pretrained", pretrained]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    sys.stdout.write(result.output)
    if result.exit_code:
        raise JobError(f"package-model failed (exit {result.exit_code})")
    return out_dir / "model.tar.gz"


def main(argv=None) -> int:
    root = os.environ.get(PROCESSING_DIR_ENV, "/opt/ml/processing")
    parser = argparse.ArgumentParser(prog="python -m model_build.pipelines.jobs")
    steps = parser.add_subparsers(dest="step", required=True)
    find = steps.add_parser("find-changes")
    find.add_argument("--index", required=True)
    find.add_argument("--model-package", default="latest")
    find.add_argument("--package-group", default="clip-search")
    find.add_argument("--catalogue", type=Path, default=Path(root, "input/catalogue"))
    find.add_argument("--transform-out", type=Path, default=Path(root, "output/transform"))
    find.add_argument("--changes-out", type=Path, default=Path(root, "output/changes"))
    load = steps.add_parser("load")
    load.add_argument("--index", required=True)
    load.add_argument("--changes", type=Path, default=Path(root, "input/changes"))
    load.add_argument("--embeddings", type=Path, default=Path(root, "input/embeddings"))
    load.add_argument("--report-out", type=Path, default=Path(root, "output/report"))
    pack = steps.add_parser("package")
    pack.add_argument("--arch", default="ViT-B-32")
    pack.add_argument("--pretrained", default="laion2b_s34b_b79k")
    pack.add_argument("--runtime", default="auto")
    pack.add_argument("--test-model", default="false")
    pack.add_argument("--out", type=Path, default=Path(root, "output/model"))
    check = steps.add_parser("evaluate")
    check.add_argument("--model", type=Path, default=Path(root, "input/model"))
    check.add_argument("--catalogue", type=Path, default=Path(root, "input/catalogue"))
    check.add_argument("--queries", type=Path, default=Path(root, "input/queries"))
    check.add_argument("--kind", default="text", choices=["text", "image"])
    check.add_argument("--out", type=Path, default=Path(root, "output/evaluation"))
    args = parser.parse_args(argv)
    from clip_search.errors import ClipSearchError

    try:
        if args.step == "find-changes":
            import boto3

            package_info = resolve_model_package(boto3.client("sagemaker"), args.model_package, args.package_group)
            model_id = model_id_of(package_info["model_data"], boto3.client("s3"))
            result = find_changes(args.catalogue, args.index, package_info, model_id, args.transform_out,
                                  args.changes_out)
        elif args.step == "load":
            result = load_embeddings(args.changes, args.embeddings if args.embeddings.exists() else None, args.index,
                                     args.report_out)
        elif args.step == "package":
            result = str(package(args.out, args.arch, args.pretrained, args.runtime,
                                 args.test_model.lower() in ("1", "true", "yes")))
        else:
            result = evaluate(args.model, args.catalogue, args.queries, args.out, args.kind)
    except (JobError, ClipSearchError) as error:
        print(f"Error: {getattr(error, 'message', None) or error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str) if not isinstance(result, str) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
