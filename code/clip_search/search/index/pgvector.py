"""PostgreSQL + pgvector backend (Aurora PostgreSQL / RDS users pick this one).

One table per index (`?table=NAME` in the DSN, default `clip_search_products`): id (primary key =
product id, so upserts are `INSERT ... ON CONFLICT`), title, image, metadata (jsonb), and one
`vector(dim)` column per embedding field, each with an HNSW index on cosine distance
(`vector_cosine_ops`). pgvector's `<=>` is the cosine distance 1 - cos; we report 1 - distance.
`?index_method=ivfflat` picks an IVFFlat index instead, `none` an exact scan (for
pgvector builds whose index code cannot run on the CPU at hand, see docs/search.md). Filters are `metadata->>field = ANY(values)` (or an item of a list value); `hnsw.iterative_scan` (pgvector >= 0.8) keeps scanning
the graph until enough rows pass them. Which model built the index is kept in `clip_search_indexes`.
"""
import json
import re
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from clip_search.search.errors import IndexNotFoundError, SearchError
from clip_search.search.filters import normalise_filters
from clip_search.search.index.base import FIELDS, IndexInfo, UpsertReport, VectorIndex, as_query_vector
from clip_search.search.records import EmbeddedProduct, Hit, Product
from clip_search.search.scores import cosine_from_pgvector_distance

DEFAULT_TABLE = "clip_search_products"
REGISTRY = "clip_search_indexes"
COLUMNS = {"image": "image_embedding", "title": "title_embedding"}
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 16, 64, 100


OUR_PARAMS = ("table", "index_method")
INDEX_METHODS = ("hnsw", "ivfflat", "none")
IVFFLAT_LISTS = 10


def split_dsn(location: str) -> tuple[str, str, str]:
    """postgresql://...?table=NAME&index_method=hnsw -> (DSN without our parameters, NAME, method)."""
    parts = urlsplit(location)
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in params if key in OUR_PARAMS}
    table = ours.get("table", DEFAULT_TABLE)
    method = ours.get("index_method", "hnsw")
    if not TABLE_NAME.match(table):
        raise SearchError(f"table name {table!r} must be lowercase letters, digits and _")
    if method not in INDEX_METHODS:
        raise SearchError(f"index_method {method!r}: expected one of {', '.join(INDEX_METHODS)}")
    query = urlencode([(key, value) for key, value in params if key not in OUR_PARAMS])
    return urlunsplit(parts._replace(query=query)), table, method


class PgvectorIndex(VectorIndex):
    backend = "pgvector"

    def __init__(self, connection, table: str, location: str, index_method: str = "hnsw"):
        super().__init__(location)
        self.index_method = index_method
        from psycopg import sql

        self.connection = connection
        self.table = table
        self.sql_table = sql.Identifier(table)
        self._info: IndexInfo | None = None
        self._registered = False
        self._has_hash: bool | None = None

    @classmethod
    def from_dsn(cls, location: str) -> "PgvectorIndex":
        import psycopg

        dsn, table, method = split_dsn(location)
        try:
            connection = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            raise SearchError(f"cannot connect to PostgreSQL: {str(error).strip()}") from None
        safe = urlsplit(location)._replace(netloc=urlsplit(location).hostname or "")  # no password in messages
        return cls(connection, table, urlunsplit(safe), method)

    def _register(self) -> None:
        if self._registered:
            return
        from pgvector.psycopg import register_vector

        try:
            register_vector(self.connection)
        except Exception:  # the extension is not there yet: create it (needs the privilege on RDS)
            self.connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(self.connection)
        self._registered = True

    def _sql(self, template: str, **identifiers):
        from psycopg import sql

        return sql.SQL(template).format(table=self.sql_table, **{k: sql.Identifier(v) for k, v in identifiers.items()})

    # --- lifecycle ---------------------------------------------------------------------------
    def info(self) -> IndexInfo | None:
        if self._info is not None:
            return self._info
        exists = self.connection.execute("SELECT to_regclass(%s) IS NOT NULL", (REGISTRY,)).fetchone()[0]
        if not exists:
            return None
        row = self.connection.execute(f"SELECT model_id, dim, encoder FROM {REGISTRY} WHERE name = %s",
                                      (self.table,)).fetchone()
        if row is None:
            return None
        self._info = IndexInfo(row[0], row[1], self.backend, 0, {"encoder": row[2] or {}})
        return self._info

    def create(self, dim: int, model_id: str, encoder: dict | None = None) -> None:
        self._register()
        with self.connection.transaction():
            self.connection.execute(
                f"CREATE TABLE IF NOT EXISTS {REGISTRY} (name text PRIMARY KEY, model_id text NOT NULL, "
                "dim integer NOT NULL, encoder jsonb, created_at timestamptz NOT NULL DEFAULT now())")
            self.connection.execute(
                f"INSERT INTO {REGISTRY} (name, model_id, dim, encoder) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING", (self.table, model_id, int(dim), json.dumps(encoder or {})))
            self.connection.execute(self._sql(
                "CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, title text NOT NULL DEFAULT '', "
                "image text, metadata jsonb NOT NULL DEFAULT '{{}}', "
                f"image_embedding vector({int(dim)}), title_embedding vector({int(dim)}), content_hash text)"))
            options = (f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})" if self.index_method == "hnsw"
                       else f"WITH (lists = {IVFFLAT_LISTS})")
            for column in COLUMNS.values() if self.index_method != "none" else ():
                self.connection.execute(self._sql(
                    "CREATE INDEX IF NOT EXISTS {index} ON {table} "
                    f"USING {self.index_method} ({{column}} vector_cosine_ops) {options}",
                    index=f"{self.table}_{column}_{self.index_method}", column=column))
        self._info = None
        self._has_hash = None
        self.check_model(self.info(), model_id, dim)

    def _hash_column(self, add: bool = False) -> bool:
        """Whether the table has `content_hash` (tables made before it existed do not); `add` adds it."""
        if self._has_hash is None:
            self._has_hash = bool(self.connection.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s AND column_name = 'content_hash'", (self.table,)).fetchone())
        if add and not self._has_hash:
            self.connection.execute(self._sql("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS content_hash text"))
            self._has_hash = True
        return self._has_hash

    def content_hashes(self) -> dict[str, str | None]:
        if self.info() is None:
            return {}
        column = "content_hash" if self._hash_column() else "NULL"
        return dict(self.connection.execute(self._sql(f"SELECT id, {column} FROM {{table}}")).fetchall())

    def drop(self) -> None:
        with self.connection.transaction():
            self.connection.execute(self._sql("DROP TABLE IF EXISTS {table}"))
            self._has_hash = None
            if self.connection.execute("SELECT to_regclass(%s) IS NOT NULL", (REGISTRY,)).fetchone()[0]:
                self.connection.execute(f"DELETE FROM {REGISTRY} WHERE name = %s", (self.table,))
        self._info = None

    def count(self) -> int:
        if self.info() is None:
            return 0
        return int(self.connection.execute(self._sql("SELECT count(*) FROM {table}")).fetchone()[0])

    def close(self) -> None:
        self.connection.close()

    # --- writes ------------------------------------------------------------------------------
    def upsert(self, items: Iterable[EmbeddedProduct]) -> UpsertReport:
        self._register()
        dim = self.info().dim if self.info() else None
        report, rows = UpsertReport(), []
        for item in items:
            vectors = []
            try:
                for vector in (item.image_embedding, item.title_embedding):
                    vectors.append(None if vector is None else as_query_vector(vector, dim))
            except ValueError as error:
                report.errors.append((item.product.id, str(error)))
                continue
            product = item.product
            rows.append((product.id, product.title or "", product.image, json.dumps(product.metadata), *vectors,
                         product.content_hash))
        if rows:
            hashed = self._hash_column(add=any(row[-1] for row in rows))
            if not hashed:
                rows = [row[:-1] for row in rows]
            with self.connection.transaction(), self.connection.cursor() as cursor:
                cursor.executemany(self._sql(
                    "INSERT INTO {table} (id, title, image, metadata, image_embedding, title_embedding"
                    + (", content_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)" if hashed else ") VALUES (%s, %s, %s, %s, %s, %s)")
                    + " ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, "
                    "image = EXCLUDED.image, metadata = EXCLUDED.metadata, "
                    "image_embedding = EXCLUDED.image_embedding, title_embedding = EXCLUDED.title_embedding"
                    + (", content_hash = EXCLUDED.content_hash" if hashed else "")), rows)
            report.indexed += len(rows)
        return report

    def delete(self, ids) -> int:
        """Delete products by id; returns how many rows were deleted."""
        ids = [str(i) for i in ids]
        if not ids or self.info() is None:
            return 0
        with self.connection.transaction():
            cursor = self.connection.execute(self._sql("DELETE FROM {table} WHERE id = ANY(%s)"), (ids,))
        return cursor.rowcount

    # --- reads -------------------------------------------------------------------------------
    def get(self, ids) -> list[EmbeddedProduct]:
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids or self.info() is None:
            return []
        self._register()
        rows = self.connection.execute(self._sql(
            "SELECT id, title, image, metadata, image_embedding, title_embedding FROM {table} WHERE id = ANY(%s)"),
            (ids,)).fetchall()
        found = {row[0]: row for row in rows}
        out = []
        for product_id in ids:
            if product_id in found:
                _, title, image, metadata, *vectors = found[product_id]
                vectors = [None if v is None else np.asarray(v.to_numpy(), np.float32) for v in vectors]  # pgvector's Vector
                out.append(EmbeddedProduct(Product(product_id, title or "", image, dict(metadata or {})), *vectors))
        return out

    def search(self, vector, k: int = 10, filters: dict | None = None, fields: tuple = FIELDS,
               keywords: str | None = None) -> list[Hit]:
        from psycopg import sql

        self.check_query(fields, keywords)
        info = self.info()
        if info is None:
            raise IndexNotFoundError(f"no pgvector index {self.table} at {self.location}")
        self._register()
        query = as_query_vector(vector, info.dim)
        conditions, params = [], []
        for field, values in normalise_filters(filters).items():
            if field in ("id", "title"):
                conditions.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(field)))
            else:  # a scalar value, or any item of a list value (as the other backends match them)
                conditions.append(sql.SQL(
                    "CASE WHEN jsonb_typeof(metadata->%s) = 'array' THEN EXISTS (SELECT 1 FROM "
                    "jsonb_array_elements_text(metadata->%s) AS item WHERE item = ANY(%s)) "
                    "ELSE metadata->>%s = ANY(%s) END"))
                params += [field, field, values, field]
            params.append(values)
        best: dict[str, tuple] = {}
        with self.connection.transaction():
            self.connection.execute(f"SET LOCAL hnsw.ef_search = {max(HNSW_EF_SEARCH, k)}")
            self.connection.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            self.connection.execute(f"SET LOCAL ivfflat.probes = {IVFFLAT_LISTS}")
            self.connection.execute("SET LOCAL ivfflat.iterative_scan = relaxed_order")
            for field in fields:
                column = sql.Identifier(COLUMNS[field])
                where = sql.SQL(" AND ").join([sql.SQL("{} IS NOT NULL").format(column), *conditions])
                statement = sql.SQL(
                    "SELECT id, title, image, metadata, {column} <=> %s AS distance FROM {table} "
                    "WHERE {where} ORDER BY {column} <=> %s LIMIT %s"
                ).format(column=column, table=self.sql_table, where=where)
                for row in self.connection.execute(statement, [query, *params, query, k]).fetchall():
                    score = cosine_from_pgvector_distance(float(row[4]))
                    if row[0] not in best or score > best[row[0]][0]:
                        best[row[0]] = (score, row)
        ranked = sorted(best.values(), key=lambda item: -item[0])[:k]
        hits = []
        for score, (product_id, title, image, metadata, _) in ranked:
            extra = dict(metadata or {})
            if image:
                extra.setdefault("image", image)
            hits.append(Hit(product_id, score, title or "", extra))
        return hits
