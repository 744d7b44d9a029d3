"""The default index: a LanceDB table in a folder (or under an s3:// prefix), no server.

One row per product: id, title, image, metadata (JSON), `tags` (every metadata value as
"field=value", for filters), and one 512-d (model dim) vector column per embedding field
(`image_vector`, `title_vector`; a product without that field has a zero vector and has_<field> false).
Vectors are L2-normalised, so LanceDB's `dot` distance is 1 - cosine.

- Writes: `upsert` buffers rows and commits them with `merge_insert("id")` (insert or replace by
  product id) every CLIP_SEARCH_FLUSH_ROWS rows and on refresh()/close()/search()/count(). Every commit is a new
  LanceDB version, written atomically: a process killed at any moment leaves the last committed
  version readable. Writers of a local folder take a file lock per commit (`.clip-search.lock`,
  released by the kernel when a process dies), so two `clip-search index` runs interleave their
  batches and both land; LanceDB's commit-conflict retries cover object storage.
- Readers follow other processes' writes (issue 26): every read starts with flush(), which first
  moves a long-lived reader to the latest committed version when there is a newer one (the caches
  below then start again). On a local folder the check is a stat of the table's `_versions`
  folder (microseconds; every commit adds a manifest there, so its mtime moves), with a full
  LanceDB check (a listing of the versions) when the folder changed, while its mtime is too recent
  to trust (coarse timestamps), and at least every CLIP_SEARCH_FRESHNESS_MS; a write is therefore
  seen by the next read. On object storage a full check runs at most every CLIP_SEARCH_FRESHNESS_MS
  (a LIST request per 1,000 versions). A search runs on one version from start to end, and a
  reader never takes the write lock. CLIP_SEARCH_FRESHNESS_MS=-1 turns this off (a reader stays
  at the version it opened).
- Filters compile to a LanceDB `where` (filters.to_lance_where) with every value a quoted literal.
  Scalar indexes: BTREE on id, LABEL_LIST on tags, full-text (FTS) on title.
- Search: exact (flat) while the table holds at most `settings.current().exact_max_rows` rows; past
  that, refresh() builds an IVF_RQ index per vector column (with a refine step on the full
  vectors) and keeps it current (optimize) as rows are added. Rows not yet in the ANN index are
  still searched (flat), so a search never misses a committed product.
- Hybrid (`keywords`): full-text search on title and vector search, fused by reciprocal rank
  (RRF_K); the hits' scores stay cosine similarities.
"""
import json
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np
import orjson

from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.filters import normalise_filters, quote, to_lance_where
from clip_search.search.index.base import FIELDS, IndexInfo, UpsertReport, VectorIndex, as_query_vector
from clip_search.search.records import EmbeddedProduct, Hit, Product

FORMAT_VERSION = 2
TABLE = "products"
META_KEY = b"clip_search"
VECTOR = {"image": "image_vector", "title": "title_vector"}
HAS = {"image": "has_image", "title": "has_title"}
# Product.content_hash; tables made before it existed lack the column until their first hashed upsert.
HASH = "content_hash"
LOCK_FILE = ".clip-search.lock"
LOCK_TIMEOUT_SECONDS = 600
COMMIT_RETRIES = 8
# ANN: IVF_RQ, IVF partitions (one per PARTITION_ROWS rows: k-means training grows with the
# partition count) over RaBitQ codes (RQ_BITS a dimension);
# the top k * REFINE_FACTOR candidates are re-ranked on the full float32 vectors. Chosen over
# IVF_HNSW_SQ and IVF_PQ for build time on 2 cores (60,000 rows, 1-bit:
# RQ 10 s, PQ 300 s; HNSW_SQ took 321 s at 200,000); recall measured in the tests and benchmark.
PARTITION_ROWS = 4096
# RaBitQ's distance estimates sharpen with the dimension (error ~ 1/sqrt(dim)): below this (test
# models, 32-d) the codes rank too roughly, and IVF_HNSW_SQ, cheap to build there, is used.
RQ_MIN_DIM = 256
# 4 bits a dimension: at 1,000,000 clustered 512-d rows 1-bit codes re-ranked 5 * k deep recalled
# 0.53 (0.99 only 50 * k deep, at twice the latency); 4 bits recall 0.99 at 5 * k (build 2.5x longer).
RQ_BITS = 4
NPROBES = 20
REFINE_FACTOR = 5
READ_CACHE = 256  # per table version: where-clause row counts, field counts, whether ANN exists
# A version folder whose mtime is this recent may change again within the same timestamp tick
# unseen (file systems with coarse timestamps): a reader then checks fully instead of trusting it.
RECENT_MTIME_NS = 100_000_000
# Rows committed after the ANN index was built are searched exactly; optimize() folds them into the
# index once they pass this fraction of the table.
OPTIMIZE_UNINDEXED_FRACTION = 0.05
# ... and when the table is in more fragments than this (LanceDB's optimize() compacts them).
COMPACT_FRAGMENTS = 64
RRF_K = 60
HYBRID_DEPTH = 50
SELECT = ["id", "title", "image", "metadata", "_distance"]

logger = logging.getLogger(__name__)


def rebuild_hint(location) -> str:
    return (f"rebuild it into a new folder with `clip-search index --catalogue CATALOGUE --index NEW_FOLDER "
            f"--model MODEL` (or delete {location} first and index into it again)")


class EmbeddedIndex(VectorIndex):
    backend = "embedded"
    supports_hybrid = True

    def __init__(self, location, exact_max_rows_: int | None = None, storage_options: dict | None = None,
                 freshness_ms: int | None = None):
        super().__init__(str(location))
        self.remote = "://" in self.location and not self.location.startswith("file://")
        self.path = None if self.remote else Path(self.location.removeprefix("file://"))
        from clip_search import settings

        self.exact_max_rows = settings.current().exact_max_rows if exact_max_rows_ is None else exact_max_rows_
        self.flush_rows = settings.current().flush_rows
        self.freshness_ms = settings.current().freshness_ms if freshness_ms is None else int(freshness_ms)
        self._checked_at = time.monotonic()  # the last full check for a newer version (_catch_up)
        self._seen_folder = None  # the version folder's (inode, mtime) at that check
        self.storage_options = storage_options if storage_options is not None else _storage_options(self.location)
        self._db = None
        self._table = None
        self._meta: dict | None = None
        self._pending: list = []  # pyarrow Tables not yet committed
        self._pending_rows = 0
        self._mine: set | None = None  # ids committed by us into a table that was empty
        self._mine_version = None
        self._read_cache: dict = {}
        self.last_build_seconds: float | None = None
        self._check_not_old_format()
        self._open()

    # --- lifecycle ---------------------------------------------------------------------------
    def _check_not_old_format(self) -> None:
        if self.path is not None and (self.path / "index.json").exists():
            raise SearchError(f"{self.path} is an embedded index in the old faiss format, which this clip-search "
                              f"no longer reads: {rebuild_hint(self.path)}")

    def _connect(self):
        if self._db is None:
            from clip_search.search import lancedb_import

            self._db = lancedb_import.load().connect(str(self.path) if self.path is not None else self.location,
                                       storage_options=self.storage_options or None)
        return self._db

    def _open(self) -> None:
        self._read_cache = {}
        self._seen_folder = self._versions_folder()
        if self.path is not None and not (self.path / f"{TABLE}.lance").exists():
            return
        try:
            self._table = self._connect().open_table(TABLE)
        except (ValueError, FileNotFoundError):  # no such table (yet)
            self._table = None
            return
        self._schema = self._table.schema
        raw = (self._schema.metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else None
        if not meta or meta.get("format") != FORMAT_VERSION:
            raise SearchError(f"{self.location} holds a LanceDB table that is not a format-{FORMAT_VERSION} "
                              f"clip-search index: {rebuild_hint(self.location)}")
        self._meta = meta

    def info(self) -> IndexInfo | None:
        if self._meta is None:
            return None
        return IndexInfo(self._meta["model_id"], self._meta["dim"], self.backend, self.count(),
                         {"approximate": self.is_approximate, "encoder": self._meta.get("encoder") or {}})

    def create(self, dim: int, model_id: str, encoder: dict | None = None) -> None:
        if self._meta is not None:
            self.check_model(self.info(), model_id, dim)
            return
        if self.path is not None and self.path.exists() and any(
                p.name not in (LOCK_FILE, f"{TABLE}.lance") for p in self.path.iterdir()):
            raise SearchError(f"{self.path} exists and is not an embedded clip-search index "
                              f"(no {TABLE}.lance table in it)")
        import pyarrow as pa

        meta = {"format": FORMAT_VERSION, "backend": self.backend, "model_id": model_id, "dim": int(dim),
                "encoder": encoder or {}}
        vector = pa.list_(pa.float32(), int(dim))
        schema = pa.schema([
            pa.field("id", pa.string(), nullable=False), pa.field("title", pa.string()),
            pa.field("image", pa.string()), pa.field("metadata", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field(VECTOR["image"], vector), pa.field(VECTOR["title"], vector),
            pa.field(HAS["image"], pa.bool_()), pa.field(HAS["title"], pa.bool_()),
            pa.field(HASH, pa.string()),
        ], metadata={META_KEY: json.dumps(meta).encode()})
        with self._writing():
            self._open()  # another process may have created it since we looked
            if self._meta is None:
                try:
                    self._table = self._connect().create_table(TABLE, schema=schema)
                    self._meta, self._schema = meta, schema
                    return
                except ValueError:  # created meanwhile on object storage (no lock there)
                    self._open()
        self.check_model(self.info(), model_id, dim)

    def drop(self) -> None:
        self._pending.clear()
        self._pending_rows = 0
        self._mine, self._mine_version = None, None
        if self._table is not None:
            self._connect().drop_table(TABLE)
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path)
        self._table, self._meta, self._db = None, None, None

    def count(self) -> int:
        self.flush()
        if self._table is None:
            return 0
        return int(self._table.count_rows())

    def data_version(self):
        self._catch_up()
        return None if self._table is None else self._table.version

    # --- following other processes' writes -------------------------------------------------------
    def _versions_folder(self):
        """(inode, mtime ns) of the table's `_versions` folder (local folders), or None."""
        if self.path is None:
            return None
        try:
            stat = os.stat(self.path / f"{TABLE}.lance" / "_versions")
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def _catch_up(self) -> None:
        """Move to the latest committed version when another process has committed since we looked
        (see the module's docstring). A failed check is logged and the current version served: a
        reader keeps answering."""
        if self.freshness_ms < 0:
            return
        now = time.monotonic()
        due = now - self._checked_at >= self.freshness_ms / 1000.0
        folder = self._versions_folder()
        if not due and (self.path is None or (
                folder == self._seen_folder and (folder is None or time.time_ns() - folder[1] > RECENT_MTIME_NS))):
            return
        self._checked_at, self._seen_folder = now, folder
        try:
            if self._table is None:
                self._open()  # created by another process since we opened
                return
            before = self._table.version
            self._table.checkout_latest()
            if self._table.version != before:
                self._read_cache.clear()
        except Exception as error:  # noqa: BLE001 - e.g. object storage unreachable for a moment
            logger.warning("could not check %s for a newer version (serving version %s): %s", self.location,
                           None if self._table is None else self._table.version, error)

    @property
    def dim(self) -> int:
        if self._meta is None:
            raise IndexNotFoundError(f"no embedded index at {self.location} (create it with `clip-search index`)")
        return self._meta["dim"]

    def _cached(self, key, compute):
        """Reads that only a write can change, cached until the table's version moves (our own
        write, or _catch_up finding another process's), so a search never pays for these twice."""
        cache = self._read_cache
        if key not in cache:
            if len(cache) >= READ_CACHE:
                cache.pop(next(iter(cache)))
            cache[key] = compute()
        return cache[key]

    @property
    def is_approximate(self) -> bool:
        """Whether an ANN index exists (cached: searches ask on every query)."""
        if self._table is None:
            return False
        return self._cached("approximate", lambda: any(config.columns[0] in VECTOR.values()
                                                       for config in self._table.list_indices()))

    # --- writes ------------------------------------------------------------------------------
    @contextmanager
    def _writing(self):
        """One writer of a local folder at a time (a commit holds the lock for milliseconds), then
        the latest version: another process's commits are never overwritten."""
        if self.path is None:
            try:
                yield
            finally:
                self._read_cache.clear()
            return
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / LOCK_FILE))
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_SECONDS)
        except Timeout:
            raise SearchError(f"another clip-search command has been writing to {self.path} for "
                              f"{LOCK_TIMEOUT_SECONDS} s; try again when it is done") from None
        try:
            if self._table is not None:
                self._table.checkout_latest()
            yield
        finally:
            self._read_cache.clear()
            lock.release()

    def _commit(self, action) -> None:
        """Run a write; LanceDB's retryable commit conflicts (another writer on object storage) are retried."""
        for attempt in range(COMMIT_RETRIES):
            try:
                with self._writing():
                    action()
                return
            except Exception as error:  # lance raises plain OSError/RuntimeError for conflicts
                if "onflict" not in str(error) or attempt == COMMIT_RETRIES - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)
                if self._table is not None:
                    self._table.checkout_latest()

    def upsert(self, items: Iterable[EmbeddedProduct]) -> UpsertReport:
        dim = self.dim
        report = UpsertReport()
        products, images, titles = [], [], []
        zero = np.zeros(dim, np.float32)
        for item in items:
            vectors = (item.image_embedding, item.title_embedding)
            if all(v is None for v in vectors):
                report.errors.append((item.product.id, "no embedding (neither image nor title)"))
                continue
            try:
                image, title = (zero if v is None else as_query_vector(v, dim) for v in vectors)
            except ValueError as error:
                report.errors.append((item.product.id, str(error)))
                continue
            products.append(item.product)
            images.append(image)
            titles.append(title)
        if products:
            result = self.upsert_arrays(products, np.stack(images), np.stack(titles))
            report.indexed, report.errors = result.indexed, report.errors + result.errors
        return report

    def upsert_arrays(self, products, image, title=None) -> UpsertReport:
        """Whole batches as Arrow columns (vectors straight from the numpy arrays); buffered, and
        committed every flush_rows products."""
        import pyarrow as pa

        dim, n = self.dim, len(products)
        report = UpsertReport()
        if not n:
            return report
        vectors = {}
        for field, array in (("image", image), ("title", title)):
            if array is None:
                array = np.zeros((n, dim), np.float32)
            array = np.ascontiguousarray(array, dtype=np.float32)
            if array.shape != (n, dim):
                raise ValueError(f"{field} vectors of shape {array.shape}, expected ({n}, {dim})")
            vectors[field] = array
        has = {field: array.any(axis=1) for field, array in vectors.items()}
        empty = ~(has["image"] | has["title"])
        if empty.any():
            report.errors += [(products[i].id, "no embedding (neither image nor title)") for i in np.flatnonzero(empty)]
            keep = np.flatnonzero(~empty)
            products = [products[i] for i in keep]
            vectors = {field: array[keep] for field, array in vectors.items()}
            has = {field: mask[keep] for field, mask in has.items()}
            n = len(products)
            if not n:
                return report
        if HASH not in self._schema.names and any(product.content_hash for product in products):
            self._add_hash_column()
        metadata = [product.metadata or {} for product in products]
        columns = {
            "id": pa.array([product.id for product in products], pa.string()),
            "title": pa.array([product.title or "" for product in products], pa.string()),
            "image": pa.array([product.image for product in products], pa.string()),
            "metadata": pa.array([_json(m) for m in metadata], pa.string()),
            "tags": pa.array([tags_of(m) for m in metadata], pa.list_(pa.string())),
        }
        for field in FIELDS:
            columns[VECTOR[field]] = pa.FixedSizeListArray.from_arrays(pa.array(vectors[field].reshape(-1)), dim)
            columns[HAS[field]] = pa.array(has[field], pa.bool_())
        if HASH in self._schema.names:
            columns[HASH] = pa.array([product.content_hash for product in products], pa.string())
        self._pending.append(pa.Table.from_pydict(columns, schema=self._schema))
        self._pending_rows += n
        report.indexed = n
        if self._pending_rows >= self.flush_rows:
            self.flush()
        return report

    def flush(self) -> None:
        """Commit the buffered upserts as one LanceDB version (the same id twice: the later one wins).
        Every read starts here, so it is also where a reader catches up with other processes' commits."""
        self._catch_up()
        if not self._pending:
            return
        import pyarrow as pa

        data = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        ids = data.column("id").to_pylist()
        last = dict(zip(ids, range(len(ids)), strict=True))
        if len(last) < len(ids):
            data = data.take(pa.array(sorted(last.values()), pa.int64()))

        def merge():
            if self._only_mine(ids):
                self._table.add(data)  # ~3x faster than a merge; no id can be in the table yet
            else:
                (self._table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
                 .execute(data))
            if self._mine is not None:
                self._mine.update(last)
                self._mine_version = self._table.version

        self._commit(merge)
        self._pending.clear()
        self._pending_rows = 0

    def _only_mine(self, ids) -> bool:
        """Whether a plain append is an upsert: under the write lock, the table holds only rows this
        object committed (it was empty at our first commit and nobody else has committed since)
        and none of `ids` is among them. Object storage (no lock): never."""
        if self.path is None:
            return False
        if self._mine is None and self._mine_version is None:  # our first commit
            self._mine = set() if self._table.count_rows() == 0 else None
            self._mine_version = self._table.version
        if self._mine is None or self._table.version != self._mine_version:
            self._mine = None  # another writer (or an index build) came in: merges from now on
            return False
        return self._mine.isdisjoint(ids)

    def _add_hash_column(self) -> None:
        """An index made before content hashes were kept: add the column (null: "changed") so that
        from now on they are. Buffered rows of the old schema are committed first."""
        self.flush()

        def add():
            if HASH not in self._table.schema.names:  # another writer may have added it meanwhile
                self._table.add_columns({HASH: "CAST(NULL AS STRING)"})

        self._commit(add)
        self._schema = self._table.schema

    def content_hashes(self) -> dict[str, str | None]:
        if self._table is None:
            return {}
        self.flush()
        columns = ["id", HASH] if HASH in self._table.schema.names else ["id"]
        rows = self._table.search().select(columns).limit(None).to_arrow()
        ids = rows.column("id").to_pylist()
        hashes = rows.column(HASH).to_pylist() if len(columns) == 2 else [None] * len(ids)
        return dict(zip(ids, hashes, strict=True))

    def delete(self, ids) -> int:
        """Delete products by id in one commit (a reader sees none or all of them deleted, however
        many there are: ~50 us an id); returns how many were in the index (LanceDB's own count of
        the rows it deleted, so a concurrent writer cannot skew it)."""
        ids = list(dict.fromkeys(str(i) for i in ids))
        if self._table is None or not ids:
            return 0
        self.flush()  # an upsert before a delete of the same id: the delete wins
        where = f"id IN ({', '.join(quote(i) for i in ids)})"
        holder = {}

        def remove():
            holder["deleted"] = self._table.delete(where).num_deleted_rows

        self._commit(remove)
        return int(holder["deleted"])

    def refresh(self) -> None:
        """Commit what was upserted, then build or update the indexes (ANN past exact_max_rows)."""
        self.flush()
        if self._table is not None:
            self._maintain()

    def close(self) -> None:
        self.refresh()

    def _maintain(self) -> None:
        rows = self._table.count_rows()
        if rows == 0:
            return
        from lancedb.index import FTS, Bitmap, BTree, IvfHnswSq, IvfRq, LabelList

        existing = {tuple(config.columns): config for config in self._table.list_indices()}
        wanted = [(("id",), BTree()), (("tags",), LabelList()), (("title",), FTS(with_position=False)),
                  ((HAS["image"],), Bitmap()), ((HAS["title"],), Bitmap())]
        if rows > self.exact_max_rows:  # an ANN index per field that has that many vectors
            wanted += [((VECTOR[field],), None) for field in FIELDS
                       if (VECTOR[field],) not in existing and self._table.count_rows(HAS[field]) > self.exact_max_rows]
        built = False
        for (column,), config in wanted:
            if (column,) in existing:
                continue
            start = time.perf_counter()
            if config is None:
                partitions = max(1, round(rows / PARTITION_ROWS))
                config = (IvfRq(distance_type="dot", num_partitions=partitions, num_bits=RQ_BITS) if self.dim >= RQ_MIN_DIM else
                          IvfHnswSq(distance_type="dot", num_partitions=partitions))

            def create(column=column, config=config):
                if any(c.columns == [column] for c in self._table.list_indices()):
                    return  # another writer built it meanwhile
                try:
                    self._table.create_index(column, config=config, replace=False)
                except RuntimeError as error:  # built meanwhile by a writer we could not lock out (s3)
                    if "already exists" not in str(error):
                        raise

            self._commit(create)
            if column in VECTOR.values():
                self.last_build_seconds = (self.last_build_seconds or 0) + time.perf_counter() - start
            built = True
        # Many small commits (one `clip-search index` run each) leave many small fragments, and
        # every read then opens and merges them all (readers measured 2.2x slower, issue 27):
        # compact them too, not only when unindexed rows pile up.
        fragmented = self._table.stats()["fragment_stats"]["num_fragments"] > COMPACT_FRAGMENTS
        unindexed = 0 if built else max((config.num_unindexed_rows or 0) for config in existing.values())
        if fragmented or unindexed > OPTIMIZE_UNINDEXED_FRACTION * rows:
            from datetime import timedelta

            self._commit(lambda: self._table.optimize(cleanup_older_than=timedelta(hours=1)))

    # --- reads -------------------------------------------------------------------------------
    def get(self, ids) -> list[EmbeddedProduct]:
        ids = list(dict.fromkeys(str(i) for i in ids))
        if self._table is None or not ids:
            return []
        self.flush()
        found = {}
        columns = ["id", "title", "image", "metadata", *VECTOR.values(), *HAS.values()]
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            where = f"id IN ({', '.join(quote(i) for i in chunk)})"
            for row in self._table.search().where(where).select(columns).limit(len(chunk)).to_arrow().to_pylist():
                found[row["id"]] = row
        return [_stored(found[i]) for i in ids if i in found]

    def search(self, vector, k: int = 10, filters: dict | None = None, fields: tuple = FIELDS,
               keywords: str | None = None) -> list[Hit]:
        self.check_query(fields, keywords)
        query = as_query_vector(vector, self.dim)
        if self._table is None:
            return []
        self.flush()
        where = to_lance_where(normalise_filters(filters))
        depth = max(k, HYBRID_DEPTH) if keywords else k
        # A selective filter leaves too few rows in the probed ANN partitions: search those rows
        # exactly (the scalar index finds them) when they are no more than exact_max_rows.
        exact = not self.is_approximate or (where is not None and self._at_most(where, self.exact_max_rows))
        best: dict[str, tuple[float, dict]] = {}
        searched = [field for field in fields if self._field_rows(field)]  # e.g. none with --no-titles
        for rows in self._each_field(searched, lambda field: self._vector_search(query, field, depth, where, exact)):
            for row in rows:
                score = 1.0 - float(row["_distance"])
                if row["id"] not in best or score > best[row["id"]][0]:
                    best[row["id"]] = (score, row)
        ranked = sorted(best.values(), key=lambda item: -item[0])
        if keywords:
            ranked = self._fuse(query, ranked, self._keyword_search(keywords, depth, where), fields)
        return [_hit(row, score) for score, row in ranked[:k]]

    def _each_field(self, fields, search):
        """search(field) for each field; two fields run at once (LanceDB releases the GIL while it
        searches), so a text query over images and titles waits for the slower one, not the sum."""
        if len(fields) < 2 or _POOL_SIZE < 2:
            return [search(field) for field in fields]
        return list(_pool().map(search, fields))

    def _at_most(self, where: str, limit: int) -> bool:
        """Whether at most `limit` rows match `where` (a scan that stops at limit + 1 rows; cached)."""
        return self._cached(("at_most", where, limit), lambda: self._table.search().where(where).select(["id"])
                            .limit(limit + 1).to_arrow().num_rows <= limit)

    def _field_rows(self, field) -> int:
        """How many products have `field`'s embedding (cached)."""
        return self._cached(("rows", field), lambda: self._table.count_rows(HAS[field]))

    def _vector_search(self, query, field, k, where, exact):
        def run(condition):
            builder = (self._table.search(query, vector_column_name=VECTOR[field]).distance_type("dot")
                       .select(SELECT + [HAS[field]]).limit(k))
            if exact:
                builder = builder.bypass_vector_index()
            else:
                builder = builder.nprobes(NPROBES).refine_factor(REFINE_FACTOR)
            if condition:
                builder = builder.where(condition, prefilter=True)
            return builder.to_arrow().to_pylist()

        rows = run(where)
        if all(row[HAS[field]] for row in rows):
            return rows
        # Some products lack this field (zero vector): ask again among those that have it.
        return run(f"({where}) AND {HAS[field]}" if where else HAS[field])

    def _keyword_search(self, keywords, k, where):
        builder = (self._table.search(keywords, query_type="fts", fts_columns="title")
                   .select(SELECT[:-1] + ["_score"] + list(VECTOR.values()) + list(HAS.values())).limit(k))
        if where:
            builder = builder.where(where, prefilter=True)
        try:
            return builder.to_arrow().to_pylist()
        except Exception as error:  # e.g. no full-text index yet on an empty table
            raise SearchError(f"keyword search on {self.location} failed: {error}") from None

    def _fuse(self, query, vector_ranked, keyword_rows, fields):
        """Reciprocal rank fusion: score(d) = sum over the two lists of 1 / (RRF_K + rank)."""
        fused: dict[str, float] = {}
        rows: dict[str, tuple[float, dict]] = {}
        for rank, (score, row) in enumerate(vector_ranked, 1):
            fused[row["id"]] = fused.get(row["id"], 0.0) + 1.0 / (RRF_K + rank)
            rows[row["id"]] = (score, row)
        for rank, row in enumerate(keyword_rows, 1):
            fused[row["id"]] = fused.get(row["id"], 0.0) + 1.0 / (RRF_K + rank)
            if row["id"] not in rows:
                cosines = [float(np.asarray(row[VECTOR[f]], np.float32) @ query) for f in fields if row[HAS[f]]]
                rows[row["id"]] = (max(cosines, default=float("nan")), row)
        order = sorted(fused, key=lambda product_id: -fused[product_id])
        return [rows[product_id] for product_id in order]


_POOL_SIZE = min(len(FIELDS), os.cpu_count() or 1)
_pool_holder: list = []
_pool_lock = threading.Lock()
# A forked child has none of the parent's threads: it makes its own pool on first use.
os.register_at_fork(after_in_child=_pool_holder.clear)


def _pool():
    """The threads that search a query's fields at once (one process-wide pool, made on first use)."""
    if not _pool_holder:
        with _pool_lock:
            if not _pool_holder:
                from concurrent.futures import ThreadPoolExecutor

                _pool_holder.append(ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="clip-search-field"))
    return _pool_holder[0]


def tags_of(metadata: dict) -> list[str]:
    """Every metadata value as "field=value" (list values: one tag each), as filters compare them."""
    tags = []
    for field, value in metadata.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                tags.append(f"{field}={item}")
    return tags


def _json(metadata: dict) -> str:
    try:
        return orjson.dumps(metadata).decode()
    except TypeError:  # e.g. an int beyond 64 bits, or a key that is not a string
        return json.dumps(metadata, ensure_ascii=False)


def _hit(row: dict, score: float) -> Hit:
    extra = json.loads(row.get("metadata") or "{}")
    if row.get("image"):
        extra.setdefault("image", row["image"])
    return Hit(row["id"], score, row.get("title") or "", extra)


def _stored(row: dict) -> EmbeddedProduct:
    vectors = [np.asarray(row[VECTOR[field]], np.float32) if row[HAS[field]] else None for field in FIELDS]
    product = Product(row["id"], row.get("title") or "", row.get("image"), json.loads(row.get("metadata") or "{}"))
    return EmbeddedProduct(product, *vectors)


def _storage_options(location: str) -> dict:
    """s3:// tables: the endpoint (moto, MinIO) and credentials from the usual AWS variables."""
    if not location.startswith("s3://"):
        return {}
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    for variable, key in (("AWS_ACCESS_KEY_ID", "aws_access_key_id"), ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                          ("AWS_SESSION_TOKEN", "aws_session_token")):
        if os.environ.get(variable):
            options[key] = os.environ[variable]
    from clip_search.aws_region import resolve_region

    region = resolve_region()[0]
    if region:
        options["aws_region"] = region
    return options
