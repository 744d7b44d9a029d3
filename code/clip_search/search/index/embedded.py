"""The default index: a folder on disk, no server.

Per embedding field (image, title) one faiss index of inner products over L2-normalised vectors
(= cosine): exact (`IndexFlatIP`) while the index holds at most `exact_max_rows` rows, HNSW
(`IndexHNSWFlat`) beyond. Both keep the vectors, so an HNSW index still answers exactly when a
filter leaves few candidates (HNSW recall drops on very selective filters).

Upserts never rewrite vectors in place (HNSW graphs cannot): a replaced product's old row is marked
dead and its new row appended; dead rows are excluded through faiss ID selectors and compacted away
once they are a quarter of the rows. Each save writes a new generation folder and then points
`index.json` at it with one atomic rename, so a crash mid-save leaves the previous state intact.
Upserts are saved by `refresh()`/`close()` (SearchClient calls them when a catalogue is done) and
every AUTOSAVE_SECONDS during long runs. One writer at a time (readers of a folder see the
generation they opened).
"""
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

import faiss
import numpy as np

from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.filters import normalise_filters
from clip_search.search.index.base import FIELDS, IndexInfo, UpsertReport, VectorIndex, as_query_vector
from clip_search.search.records import EmbeddedProduct, Hit

FORMAT_VERSION = 1
EXACT_MAX_ROWS_ENV = "CLIP_SEARCH_EXACT_MAX_ROWS"
# Measured (docs/search.md): one exact query over 512-d rows costs ~0.2 ms per 1,000 rows on one
# core here, HNSW ~0.3 ms at 100k; exact stays under ~5 ms up to 20,000 rows.
DEFAULT_EXACT_MAX_ROWS = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
COMPACT_DEAD_FRACTION = 0.25
# Saving rewrites the whole index (100k x 512 floats x 2 fields = 400 MB): do it when a catalogue
# is done (refresh/close) and at most this often while a long one is being indexed.
AUTOSAVE_SECONDS = 60


def exact_max_rows() -> int:
    return int(os.environ.get(EXACT_MAX_ROWS_ENV, DEFAULT_EXACT_MAX_ROWS))


class EmbeddedIndex(VectorIndex):
    backend = "embedded"

    def __init__(self, location, exact_max_rows_: int | None = None):
        super().__init__(str(location))
        self.path = Path(location)
        self.exact_max_rows = exact_max_rows_ if exact_max_rows_ is not None else exact_max_rows()
        self._meta: dict | None = None
        self._rows: list[dict] = []          # {"id", "title", "metadata"} per row, dead rows included
        self._dead: np.ndarray = np.zeros(0, dtype=bool)
        self._has: dict[str, np.ndarray] = {}  # field -> rows that carry that embedding
        self._faiss: dict[str, faiss.Index] = {}
        self._row_of: dict[str, int] = {}
        self._postings: dict[str, dict[str, np.ndarray]] = {}
        self._dirty = False
        self._last_save = time.monotonic()
        if (self.path / "index.json").exists():
            self._load()

    # --- lifecycle ---------------------------------------------------------------------------
    def info(self) -> IndexInfo | None:
        if self._meta is None:
            return None
        return IndexInfo(self._meta["model_id"], self._meta["dim"], self.backend, self.count(),
                         {"approximate": self.is_approximate, "encoder": self._meta.get("encoder") or {}})

    def create(self, dim: int, model_id: str, encoder: dict | None = None) -> None:
        if self._meta is not None:
            self.check_model(self.info(), model_id, dim)
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise SearchError(f"{self.path} exists and is not an embedded clip-search index (no index.json)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._meta = {"format": FORMAT_VERSION, "backend": self.backend, "model_id": model_id, "dim": int(dim),
                      "encoder": encoder or {}}
        self._faiss = {field: faiss.IndexFlatIP(int(dim)) for field in FIELDS}
        self._has = {field: np.zeros(0, dtype=bool) for field in FIELDS}
        self._save()

    def drop(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        self.__init__(self.path, self.exact_max_rows)

    def count(self) -> int:
        return int((~self._dead).sum())

    @property
    def dim(self) -> int:
        if self._meta is None:
            raise IndexNotFoundError(f"no embedded index at {self.path} (create it with `clip-search index`)")
        return self._meta["dim"]

    @property
    def is_approximate(self) -> bool:
        return any(isinstance(index, faiss.IndexHNSW) for index in self._faiss.values())

    # --- writes ------------------------------------------------------------------------------
    def upsert(self, items: Iterable[EmbeddedProduct]) -> UpsertReport:
        dim = self.dim
        report = UpsertReport()
        batch = {field: [] for field in FIELDS}
        has = {field: [] for field in FIELDS}
        new_rows, dead_now = [], []
        pending: dict[str, int] = {}
        for item in items:
            product = item.product
            vectors = {"image": item.image_embedding, "title": item.title_embedding}
            if all(v is None for v in vectors.values()):
                report.errors.append((product.id, "no embedding"))
                continue
            try:
                vectors = {f: None if v is None else as_query_vector(v, dim) for f, v in vectors.items()}
            except ValueError as error:
                report.errors.append((product.id, str(error)))
                continue
            if product.id in pending:  # the same id twice in one batch: the later one wins
                dead_now.append(len(self._rows) + pending[product.id])
            elif product.id in self._row_of:
                dead_now.append(self._row_of[product.id])
            pending[product.id] = len(new_rows)
            new_rows.append({"id": product.id, "title": product.title, "image": product.image,
                             "metadata": product.metadata})
            for field, vector in vectors.items():
                has[field].append(vector is not None)
                batch[field].append(np.zeros(dim, np.float32) if vector is None else vector)
            report.indexed += 1
        if not new_rows:
            return report
        start = len(self._rows)
        self._rows.extend(new_rows)
        self._dead = np.concatenate([self._dead, np.zeros(len(new_rows), dtype=bool)])
        self._dead[dead_now] = True
        for field in FIELDS:
            self._has[field] = np.concatenate([self._has[field], np.array(has[field], dtype=bool)])
            self._faiss[field].add(np.ascontiguousarray(np.stack(batch[field]), dtype=np.float32))
        for offset, row in enumerate(new_rows):
            self._row_of[row["id"]] = start + offset
        self._postings.clear()
        if self._dead.sum() > COMPACT_DEAD_FRACTION * len(self._rows):
            self._compact()
        self._maybe_go_approximate()
        self._dirty = True
        if time.monotonic() - self._last_save > AUTOSAVE_SECONDS:
            self._save()
        return report

    def refresh(self) -> None:
        """Persist what was upserted (searches in this process see it already)."""
        if self._dirty:
            self._save()

    def close(self) -> None:
        self.refresh()

    def _maybe_go_approximate(self) -> None:
        if len(self._rows) <= self.exact_max_rows:
            return
        for field in FIELDS:
            if not isinstance(self._faiss[field], faiss.IndexHNSW):
                self._faiss[field] = _build_hnsw(_vectors(self._faiss[field]))

    def _compact(self) -> None:
        alive = np.flatnonzero(~self._dead)
        for field in FIELDS:
            vectors = _vectors(self._faiss[field])[alive]
            approximate = isinstance(self._faiss[field], faiss.IndexHNSW)
            self._faiss[field] = _build_hnsw(vectors) if approximate else _flat(vectors)
            self._has[field] = self._has[field][alive]
        self._rows = [self._rows[i] for i in alive]
        self._dead = np.zeros(len(self._rows), dtype=bool)
        self._row_of = {row["id"]: i for i, row in enumerate(self._rows)}

    # --- reads -------------------------------------------------------------------------------
    def search(self, vector, k: int = 10, filters: dict | None = None, fields: tuple = FIELDS,
               keywords: str | None = None) -> list[Hit]:
        query = as_query_vector(vector, self.dim).reshape(1, -1)
        candidates = ~self._dead
        filters = normalise_filters(filters)
        if filters:
            candidates = candidates & self._filter_mask(filters)
        best: dict[int, float] = {}
        # One query runs on one thread anyway; an OpenMP team per call only adds barrier waits,
        # which cost tens of ms on a busy machine (measured: 34 ms vs 2 ms at 10k rows).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            self._search_fields(query, k, fields, candidates, best)
        finally:
            faiss.omp_set_num_threads(threads)
        ranked = sorted(best.items(), key=lambda item: -item[1])[:k]
        return [Hit(self._rows[row]["id"], score, self._rows[row]["title"] or "",
                    _hit_metadata(self._rows[row])) for row, score in ranked]

    def _search_fields(self, query, k, fields, candidates, best) -> None:
        for field in fields:
            allowed = candidates & self._has[field]
            n_allowed = int(allowed.sum())
            if n_allowed == 0:
                continue
            for row, score in self._search_field(field, query, min(k, n_allowed), allowed, n_allowed):
                if score > best.get(row, -np.inf):
                    best[row] = score

    def _search_field(self, field, query, k, allowed, n_allowed):
        index = self._faiss[field]
        everything = n_allowed == len(allowed)
        bitmap = None if everything else np.packbits(allowed, bitorder="little")
        selector = None if bitmap is None else faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        if isinstance(index, faiss.IndexHNSW) and n_allowed > self.exact_max_rows:
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, 2 * k))
            if selector is not None:
                params.sel = selector
            scores, rows = index.search(query, k, params=params)
        else:
            flat = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            scores, rows = flat.search(query, k, params=params)
        del bitmap  # the selector points into it: keep it alive until the search returned
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def _filter_mask(self, filters: dict[str, list[str]]) -> np.ndarray:
        mask = np.ones(len(self._rows), dtype=bool)
        for field, values in filters.items():
            postings = self._postings_for(field)
            field_mask = np.zeros(len(self._rows), dtype=bool)
            for value in values:
                rows = postings.get(value)
                if rows is not None:
                    field_mask[rows] = True
            mask &= field_mask
        return mask

    def _postings_for(self, field: str) -> dict[str, np.ndarray]:
        """value -> rows, built on first use of a field: filters cost a lookup, not a scan."""
        if field not in self._postings:
            postings: dict[str, list[int]] = {}
            for i, row in enumerate(self._rows):
                value = row["title"] if field == "title" else row["id"] if field == "id" else row["metadata"].get(field)
                for item in value if isinstance(value, list) else [value]:
                    if item is not None:
                        postings.setdefault(str(item), []).append(i)
            self._postings[field] = {key: np.array(rows) for key, rows in postings.items()}
        return self._postings[field]

    # --- persistence -------------------------------------------------------------------------
    def _save(self) -> None:
        """Write a new generation folder, then switch `index.json` to it with one atomic rename:
        a crash at any point leaves the previous generation readable and complete."""
        self.path.mkdir(parents=True, exist_ok=True)
        previous = (self._meta or {}).get("data")
        generation = f"data-{int(previous.split('-')[1]) + 1 if previous else 1}"
        tmp_dir = self.path / (generation + ".tmp")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir()
        for field in FIELDS:
            faiss.write_index(self._faiss[field], str(tmp_dir / f"{field}.faiss"))
        np.savez(tmp_dir / "rows.npz", dead=self._dead, **{f"has_{field}": self._has[field] for field in FIELDS})
        with open(tmp_dir / "products.jsonl", "w", encoding="utf-8") as out:
            for row in self._rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        shutil.rmtree(self.path / generation, ignore_errors=True)
        os.replace(tmp_dir, self.path / generation)
        self._meta["data"] = generation
        meta = {**self._meta, "rows": len(self._rows), "count": self.count(), "approximate": self.is_approximate,
                "exact_max_rows": self.exact_max_rows}
        tmp_json = self.path / "index.json.tmp"
        tmp_json.write_text(json.dumps(meta, indent=2))
        os.replace(tmp_json, self.path / "index.json")
        if previous and previous != generation:
            shutil.rmtree(self.path / previous, ignore_errors=True)
        self._dirty = False
        self._last_save = time.monotonic()

    def _load(self) -> None:
        meta = json.loads((self.path / "index.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("backend") != self.backend:
            raise SearchError(f"{self.path}/index.json is not a format-{FORMAT_VERSION} embedded index")
        self._meta = {key: meta[key] for key in ("format", "backend", "model_id", "dim", "data")}
        self._meta["encoder"] = meta.get("encoder") or {}
        data = self.path / meta["data"]
        with open(data / "products.jsonl", encoding="utf-8") as rows:
            self._rows = [json.loads(line) for line in rows]
        arrays = np.load(data / "rows.npz")
        self._dead = arrays["dead"]
        self._has = {field: arrays[f"has_{field}"] for field in FIELDS}
        self._faiss = {field: faiss.read_index(str(data / f"{field}.faiss")) for field in FIELDS}
        if not (len(self._rows) == len(self._dead) == self._faiss["image"].ntotal == meta["rows"]):
            raise SearchError(f"embedded index at {self.path} is inconsistent (rows differ between files)")
        for index in self._faiss.values():
            if isinstance(index, faiss.IndexHNSW):
                index.hnsw.efSearch = HNSW_EF_SEARCH
        self._row_of = {row["id"]: i for i, row in enumerate(self._rows) if not self._dead[i]}


def _hit_metadata(row: dict) -> dict:
    extra = dict(row.get("metadata") or {})
    if row.get("image"):
        extra.setdefault("image", row["image"])
    return extra


def _flat(vectors: np.ndarray) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(vectors.shape[1])
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _build_hnsw(vectors: np.ndarray) -> faiss.IndexHNSWFlat:
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _vectors(index: faiss.Index) -> np.ndarray:
    flat = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    return flat.reconstruct_n(0, flat.ntotal) if flat.ntotal else np.zeros((0, flat.d), np.float32)

