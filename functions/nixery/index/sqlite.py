"""The embedded index: one SQLite file, safe for many threads and processes (WAL)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nixery.index import (
    BlobEntry,
    BlobRecord,
    BuildRecord,
    ImageEntry,
    ImageRecord,
    LayerRecord,
    ManifestEntry,
    StoredManifest,
)
from nixery.storage import StorageUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY, oci_digest TEXT NOT NULL, docker_digest TEXT NOT NULL,
    pulled_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS manifests (
    digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, body BLOB NOT NULL,
    stored_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS layers (
    key TEXT PRIMARY KEY, digest TEXT NOT NULL, diff_id TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT NOT NULL,
    used_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS repositories (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY, started_at REAL NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS builds_by_start ON builds (started_at);
"""
# Garbage collection's times, added to an index made before it: (table, column). Existing rows
# count as used when the column is added, so an upgrade deletes nothing before its time.
_GC_COLUMNS = (("images", "pulled_at"), ("manifests", "stored_at"), ("blobs", "used_at"))
_AFTER_MIGRATION = "CREATE INDEX IF NOT EXISTS layers_by_digest ON layers (digest);"


_STORAGE_ERRORS = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY}
)


class SqliteIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)
        self._add_gc_columns()
        self._connection().executescript(_AFTER_MIGRATION)

    def _add_gc_columns(self) -> None:
        with self._transaction() as db:
            for table, column in _GC_COLUMNS:
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} REAL NOT NULL DEFAULT 0")
                    db.execute(f"UPDATE {table} SET {column} = ?", (time.time(),))

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            # "database or disk is full", "disk I/O error": the disk's state, not a bug.
            if error.sqlite_errorcode in _STORAGE_ERRORS:
                raise StorageUnavailable(
                    f"index {self.path.name}: {error}",
                    full=error.sqlite_errorcode == sqlite3.SQLITE_FULL,
                ) from error
            raise

    def _one(self, sql: str, *params: object) -> tuple[Any, ...] | None:
        return self._connection().execute(sql, params).fetchone()

    def _all(self, sql: str, *params: object) -> Sequence[tuple[Any, ...]]:
        # Fetched whole: a generator left open would hold a read snapshot of the WAL.
        return self._connection().execute(sql, params).fetchall()

    def _insert(self, sql: str, *params: object) -> None:
        with self._transaction() as db:
            db.execute(sql, params)

    def _change(self, sql: str, *params: object) -> int:
        """Run one write; how many rows it changed."""
        with self._transaction() as db:
            return db.execute(sql, params).rowcount

    def get_image(self, key: str) -> ImageRecord | None:
        row = self._one("SELECT key, oci_digest, docker_digest FROM images WHERE key = ?", key)
        return ImageRecord(*row) if row else None

    def put_image(self, record: ImageRecord) -> None:
        self._insert(
            "INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?)",
            record.key,
            record.oci_digest,
            record.docker_digest,
            time.time(),
        )

    def mark_pulled(self, key: str, at: float) -> bool:
        return self._change("UPDATE images SET pulled_at = ? WHERE key = ?", at, key) > 0

    def list_images(self) -> Iterator[ImageEntry]:
        rows = self._all("SELECT key, oci_digest, docker_digest, pulled_at FROM images")
        for key, oci, docker, pulled_at in rows:
            yield ImageEntry(ImageRecord(key, oci, docker), pulled_at)

    def delete_image(self, key: str, pulled_before: float) -> bool:
        sql = "DELETE FROM images WHERE key = ? AND pulled_at < ?"
        return self._change(sql, key, pulled_before) > 0

    def get_manifest(self, digest: str) -> StoredManifest | None:
        row = self._one("SELECT digest, media_type, body FROM manifests WHERE digest = ?", digest)
        return StoredManifest(row[0], row[1], bytes(row[2])) if row else None

    def put_manifest(self, manifest: StoredManifest) -> None:
        self._insert(
            "INSERT INTO manifests VALUES (?, ?, ?, ?) "
            "ON CONFLICT (digest) DO UPDATE SET stored_at = excluded.stored_at",
            manifest.digest,
            manifest.media_type,
            manifest.body,
            time.time(),
        )

    def list_manifests(self) -> Iterator[ManifestEntry]:
        rows = self._all("SELECT digest, length(body), stored_at FROM manifests")
        for digest, size, stored_at in rows:
            yield ManifestEntry(digest, size, stored_at)

    def delete_manifest(self, digest: str, stored_before: float) -> bool:
        sql = "DELETE FROM manifests WHERE digest = ? AND stored_at < ?"
        return self._change(sql, digest, stored_before) > 0

    def get_layer(self, key: str) -> LayerRecord | None:
        row = self._one("SELECT key, digest, diff_id, size FROM layers WHERE key = ?", key)
        return LayerRecord(*row) if row else None

    def put_layer(self, record: LayerRecord) -> None:
        self._insert(
            "INSERT OR IGNORE INTO layers VALUES (?, ?, ?, ?)",
            record.key,
            record.digest,
            record.diff_id,
            record.size,
        )

    def get_blob(self, digest: str) -> BlobRecord | None:
        row = self._one("SELECT digest, size, media_type FROM blobs WHERE digest = ?", digest)
        return BlobRecord(*row) if row else None

    def put_blob(self, record: BlobRecord) -> None:
        self._insert(
            "INSERT INTO blobs VALUES (?, ?, ?, ?) "
            "ON CONFLICT (digest) DO UPDATE SET used_at = excluded.used_at",
            record.digest,
            record.size,
            record.media_type,
            time.time(),
        )

    def touch_blob(self, digest: str) -> bool:
        sql = "UPDATE blobs SET used_at = ? WHERE digest = ?"
        return self._change(sql, time.time(), digest) > 0

    def list_blobs(self) -> Iterator[BlobEntry]:
        for digest, size, used_at in self._all("SELECT digest, size, used_at FROM blobs"):
            yield BlobEntry(digest, size, used_at)

    def delete_blob(self, digest: str, used_before: float) -> bool:
        with self._transaction() as db:
            sql = "DELETE FROM blobs WHERE digest = ? AND used_at < ?"
            if db.execute(sql, (digest, used_before)).rowcount == 0:
                return False
            db.execute("DELETE FROM layers WHERE digest = ?", (digest,))
            return True

    def add_repository(self, name: str) -> None:
        self._insert("INSERT OR IGNORE INTO repositories VALUES (?)", name)

    def list_repositories(self, after: str, limit: int) -> list[str]:
        # SQLite's default BINARY collation orders bytewise, as Firestore orders strings.
        rows = (
            self._connection()
            .execute(
                "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    def try_acquire_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT owner, expires_at FROM leases WHERE key = ?", (key,)
            ).fetchone()
            if row and row[0] != owner and row[1] > now:
                return False
            db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (key, owner, now + ttl_seconds)
            )
            return True

    def release_lease(self, key: str, owner: str) -> None:
        self._insert("DELETE FROM leases WHERE key = ? AND owner = ?", key, owner)

    def put_build(self, record: BuildRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO builds VALUES (?, ?, ?)",
                (record.id, record.started_at, record.to_json()),
            )

    def get_build(self, build_id: str) -> BuildRecord | None:
        row = self._one("SELECT record FROM builds WHERE id = ?", build_id)
        return BuildRecord.from_json(row[0]) if row else None

    def recent_builds(self, limit: int) -> list[BuildRecord]:
        rows = (
            self._connection()
            .execute(
                "SELECT record FROM builds ORDER BY started_at DESC, id DESC LIMIT ?", (limit,)
            )
            .fetchall()
        )
        return [BuildRecord.from_json(row[0]) for row in rows]

    def prunable_builds(self, keep: int, before: float) -> list[str]:
        rows = self._all(
            "SELECT id FROM builds WHERE started_at < ? OR id NOT IN "
            "(SELECT id FROM builds ORDER BY started_at DESC, id DESC LIMIT ?) "
            "ORDER BY started_at, id",
            before,
            keep,
        )
        return [row[0] for row in rows]

    def prune_builds(self, keep: int, before: float) -> int:
        with self._transaction() as db:
            old = db.execute("DELETE FROM builds WHERE started_at < ?", (before,)).rowcount
            surplus = db.execute(
                "DELETE FROM builds WHERE id NOT IN "
                "(SELECT id FROM builds ORDER BY started_at DESC, id DESC LIMIT ?)",
                (keep,),
            ).rowcount
        return old + surplus

    def clear_leases(self) -> int:
        """Drops every lease: only for a process that owns the index alone (it holds the
        storage lock), whose predecessor's leases name builds that died with it."""
        with self._transaction() as db:
            return db.execute("DELETE FROM leases").rowcount
