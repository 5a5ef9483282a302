"""The run store: one DuckDB file (default data/lab.duckdb) shared by jobs and the dashboard.

DuckDB allows one read-write process or several read-only ones, never both (design.md).
So no process keeps the file open: every access is a short session under a cross-process
file lock (`lab.duckdb.lock`), exclusive for writers and shared for readers. Jobs buffer
their rows and write them in one transaction every couple of seconds, so a job killed at
any moment loses at most its unflushed buffer, and the file stays consistent (DuckDB's WAL
replays committed transactions and drops the rest).

Public SQL interface (documented in README.md): tables `runs`, `metrics`, `tokens`,
`thoughts`, `evals`, `eval_items`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb
import pandas as pd

from lab.errors import LabError, storage_full
from lab.provenance import git_commit, package_versions

DB_NAME = "lab.duckdb"
ACTIVE = ("queued", "running")
STATUSES = ("queued", "running", "finished", "failed", "cancelled")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        id VARCHAR PRIMARY KEY, name VARCHAR, objective VARCHAR, kind VARCHAR DEFAULT 'train',
        status VARCHAR, model VARCHAR, corpus VARCHAR, config VARCHAR,
        created_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP, heartbeat_at TIMESTAMP,
        step INTEGER DEFAULT 0, max_steps INTEGER, error VARCHAR, git_commit VARCHAR,
        versions VARCHAR, command VARCHAR, pid INTEGER, worker_pid INTEGER, device VARCHAR,
        log_path VARCHAR, tags VARCHAR DEFAULT '', notes VARCHAR DEFAULT '',
        experiment VARCHAR DEFAULT '', attempts INTEGER DEFAULT 0, phase VARCHAR DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id VARCHAR, step INTEGER, name VARCHAR, value DOUBLE,
        wall_time DOUBLE, flops DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS tokens (
        run_id VARCHAR, step INTEGER, sample INTEGER, position INTEGER, token_id INTEGER,
        token VARCHAR, entropy DOUBLE, nll DOUBLE, prob DOUBLE, forking BOOLEAN, extra VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS thoughts (
        run_id VARCHAR, step INTEGER, sample INTEGER, position INTEGER, idx INTEGER,
        kind VARCHAR, text VARCHAR, n_tokens INTEGER, reward DOUBLE, advantage DOUBLE,
        weight DOUBLE, base_nll DOUBLE, mixed_nll DOUBLE, prediction VARCHAR, target VARCHAR,
        extra VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS evals (
        id VARCHAR, run_id VARCHAR, model VARCHAR, benchmark VARCHAR, mode VARCHAR,
        n_items INTEGER, score DOUBLE, stderr DOUBLE, created_at TIMESTAMP, config VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS eval_items (
        eval_id VARCHAR, item_id VARCHAR, correct DOUBLE, prediction VARCHAR, target VARCHAR,
        extra VARCHAR)""",
    "CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id)",
    "CREATE INDEX IF NOT EXISTS tokens_run ON tokens(run_id)",
    "CREATE INDEX IF NOT EXISTS thoughts_run ON thoughts(run_id)",
    # Columns added after the first release: older databases get them on open.
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS phase VARCHAR DEFAULT ''",
    # When the run last joined the queue (submit or resume): the queue is first-in first-out.
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS queued_at TIMESTAMP",
    "ALTER TABLE runs ADD COLUMN IF NOT EXISTS slurm_job VARCHAR",   # executor 'slurm': its job id
]

TABLE_COLUMNS = {
    "metrics": ["run_id", "step", "name", "value", "wall_time", "flops"],
    "tokens": ["run_id", "step", "sample", "position", "token_id", "token", "entropy", "nll",
               "prob", "forking", "extra"],
    "thoughts": ["run_id", "step", "sample", "position", "idx", "kind", "text", "n_tokens",
                 "reward", "advantage", "weight", "base_nll", "mixed_nll", "prediction",
                 "target", "extra"],
    "evals": ["id", "run_id", "model", "benchmark", "mode", "n_items", "score", "stderr",
              "created_at", "config"],
    "eval_items": ["eval_id", "item_id", "correct", "prediction", "target", "extra"],
}
RUN_COLUMNS = ["id", "name", "objective", "kind", "status", "model", "corpus", "config", "created_at",
               "started_at", "finished_at", "heartbeat_at", "step", "max_steps", "error", "git_commit",
               "versions", "command", "pid", "worker_pid", "device", "log_path", "tags", "notes",
               "experiment", "attempts", "phase", "queued_at", "slurm_job"]
# The fields a run update may set (everything but the id and the creation time).
RUN_FIELDS = set(RUN_COLUMNS) - {"id", "created_at"}
RUN_SELECT = ", ".join(RUN_COLUMNS)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def check_data_dir(data_dir: str | Path) -> bool:
    """The data folder, checked once up front: it exists (or is created) and is a readable
    folder. Returns whether the lab may write there; False means read-only mode (runs can be
    listed and shown, nothing is written, not even the lock file)."""
    folder = Path(data_dir)
    where = "Point --data-dir (or THOUGHTLAB_DATA_DIR) at a folder the lab can use."
    try:
        return _check_folder(folder, where)
    except OSError as e:     # e.g. a parent folder that cannot be searched
        raise LabError(f"The data folder {folder} cannot be used ({e.strerror or e}). {where}") from e


def _check_folder(folder: Path, where: str) -> bool:
    if folder.exists() and not folder.is_dir():
        raise LabError(f"The data folder {folder} is a file, not a folder. {where}")
    if not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LabError(f"The data folder {folder} does not exist and cannot be created "
                           f"({e.strerror or e}). {where}") from e
    files = [folder / DB_NAME, folder / (DB_NAME + ".wal"), folder / (DB_NAME + ".lock")]
    if not _access(folder, os.R_OK | os.X_OK) or any(p.exists() and not _access(p, os.R_OK) for p in files):
        raise LabError(f"The data folder {folder} (or its database) cannot be read: permission "
                       f"denied. {where}")
    return _access(folder, os.W_OK | os.X_OK) and all(not p.exists() or _access(p, os.W_OK) for p in files)


def _access(path: Path, mode: int) -> bool:
    """os.access for this process's effective user; a read-only file system counts as not writable."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


class Store:
    """Short, locked DuckDB sessions on `<data_dir>/lab.duckdb`. A data folder the lab may not
    write to is opened read-only (`read_only`): reads work, writes raise a LabError saying so."""

    def __init__(self, data_dir: str | Path = "data") -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.lock_path = self.data_dir / (DB_NAME + ".lock")
        self.read_only = not check_data_dir(self.data_dir)
        self._ready = False
        # A writable folder gets its database (created, or upgraded from an older schema) here,
        # once, so that read() only ever reads.
        self.init()

    def require_writable(self) -> "Store":
        if self.read_only:
            raise LabError(f"The data folder {self.data_dir} is read-only: its runs can be listed and "
                           "shown, but nothing can be started, changed or deleted there. Make it "
                           "writable, or copy it and point --data-dir (THOUGHTLAB_DATA_DIR) at the copy.")
        return self

    # ---- sessions --------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        if self.read_only:     # share a writer's lock file if there is one; create nothing
            if not self.lock_path.exists():
                yield
                return
            fd = os.open(self.lock_path, os.O_RDONLY)
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as e:
            msg = str(e)
            if "not a valid DuckDB database" in msg or "Could not read" in msg or \
                    "invalid" in msg.lower() or "Serialization" in msg:
                raise LabError(f"{self.path} is not a readable DuckDB database ({msg.splitlines()[0]}). "
                               "Move it aside or point --data-dir at another folder.") from e
            raise

    @contextlib.contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An exclusive read-write session inside one transaction. A failure is reported as
        itself (a full disk as a sentence saying what to free), never as the rollback's error."""
        self.require_writable()
        try:
            with self._locked(exclusive=True):
                con = self._connect(read_only=False)
                try:
                    if not self._ready:
                        for stmt in SCHEMA:
                            con.execute(stmt)
                        self._ready = True
                    con.execute("BEGIN TRANSACTION")
                    try:
                        yield con
                        con.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(duckdb.Error):   # a failed COMMIT already ended it
                            con.execute("ROLLBACK")
                        raise
                finally:
                    with contextlib.suppress(duckdb.Error):
                        con.close()
        except (duckdb.Error, OSError) as e:
            full = storage_full(self.data_dir, e, f"write the database {self.path.name}")
            if full is None:
                raise
            raise full from e

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A shared read-only session; it never writes (a folder without a database, e.g. a
        read-only one, reads as an empty database)."""
        with self._locked(exclusive=False):
            con = self._connect(read_only=True) if self.path.exists() else _empty_database()
            try:
                yield con
            finally:
                con.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Run one parameterised read query and return a DataFrame. Lab code calls it only
        from this module and lab/queries.py (named queries); tests and ad-hoc analysis may
        use it directly."""
        with self.read() as con:
            return con.execute(sql, list(params)).df()

    def init(self) -> "Store":
        """Create the database and its tables if needed (nothing to do in a read-only folder)."""
        if not self.read_only:
            with self.write():
                pass
        return self

    # ---- runs ------------------------------------------------------------------------
    def create_run(self, *, config: dict, status: str = "queued", kind: str = "train",
                   command: str = "", run_id: str | None = None) -> str:
        run_id, created = run_id or new_run_id(), now()
        with self.write() as con:
            con.execute(
                """INSERT INTO runs (id, name, objective, kind, status, model, corpus, config,
                   created_at, queued_at, max_steps, experiment, command, git_commit, versions)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [run_id, config.get("name") or "", config.get("objective", ""), kind, status,
                 config.get("model", ""), config.get("corpus", ""), json.dumps(config, sort_keys=True),
                 created, created, config.get("max_steps"), config.get("experiment", ""), command,
                 git_commit(), json.dumps(package_versions())])
        return run_id

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        cols, values = run_assignments(fields)
        with self.write() as con:
            con.execute(f"UPDATE runs SET {cols} WHERE id = ?", [*values, run_id])

    def set_status_if(self, run_id: str, allowed: Sequence[str], **fields: Any) -> bool:
        """Update only while the run's status is one of `allowed` (atomic under the lock)."""
        cols, values = run_assignments(fields)
        marks = ", ".join("?" for _ in allowed)
        with self.write() as con:
            n = con.execute(f"UPDATE runs SET {cols} WHERE id = ? AND status IN ({marks}) RETURNING id",
                            [*values, run_id, *allowed]).fetchall()
        return bool(n)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        cols = RUN_SELECT
        df = self.query(f"SELECT {cols} FROM runs WHERE id = ?", [run_id])
        return None if df.empty else clean_row(df.iloc[0].to_dict())

    def finished_step(self, run_id: str) -> int | None:
        """The step count a finished run ended with; None if it has not finished (or is gone)."""
        run = self.get_run(run_id)
        return int(run["step"]) if run and run.get("status") == "finished" and run.get("step") else None

    def require_run(self, run_id: str) -> dict[str, Any]:
        run = self.get_run(run_id)
        if run is None:
            raise LabError(f"No run with id {run_id!r} in {self.path}. `python -m lab runs` lists them.")
        return run

    def list_runs(self, kind: str | None = "train") -> pd.DataFrame:
        cols = RUN_SELECT
        if kind:
            return self.query(f"SELECT {cols} FROM runs WHERE kind = ? ORDER BY created_at DESC", [kind])
        return self.query(f"SELECT {cols} FROM runs ORDER BY created_at DESC")

    def active_runs(self) -> pd.DataFrame:
        cols = RUN_SELECT
        return self.query(f"SELECT {cols} FROM runs WHERE status IN ('queued', 'running') "
                          "ORDER BY created_at, id")

    def delete_run(self, run_id: str) -> None:
        with self.write() as con:
            for table in ("metrics", "tokens", "thoughts"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM eval_items WHERE eval_id IN (SELECT id FROM evals WHERE run_id = ?)", [run_id])
            con.execute("DELETE FROM evals WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE id = ?", [run_id])

    def truncate_after(self, run_id: str, step: int) -> None:
        """Drop rows logged after `step` and set the run back to it (a resume from that step's
        checkpoint, or from step 0 when there is none), in one transaction."""
        with self.write() as con:
            for table in ("metrics", "tokens", "thoughts"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND step > ?", [run_id, step])
            con.execute("UPDATE runs SET step = ? WHERE id = ?", [step, run_id])

    # ---- logging ---------------------------------------------------------------------
    def append(self, rows: dict[str, list[dict[str, Any]]], run_update: dict[str, Any] | None = None,
               run_id: str | None = None) -> None:
        """Insert rows into several tables (and update the run) in one transaction."""
        with self.write() as con:
            for table, items in rows.items():
                if items:
                    _insert(con, table, items)
            if run_update and run_id:
                cols, values = run_assignments(run_update)
                con.execute(f"UPDATE runs SET {cols} WHERE id = ?", [*values, run_id])

    def save_evals(self, evals: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
        """The one writer of `evals` and `eval_items`: insert evaluations (dicts with the
        TABLE_COLUMNS keys; dict/list values stored as JSON) and their items in one
        transaction. An eval id that already exists (a retried job) is replaced, items too."""
        ids = [e["id"] for e in evals]
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)
        with self.write() as con:
            con.execute(f"DELETE FROM eval_items WHERE eval_id IN ({marks})", ids)
            con.execute(f"DELETE FROM evals WHERE id IN ({marks})", ids)
            _insert(con, "evals", evals)
            if items:
                _insert(con, "eval_items", items)

    # ---- reads for the pages ---------------------------------------------------------
    def metrics(self, run_ids: Sequence[str], names: Sequence[str] | None = None) -> pd.DataFrame:
        if not run_ids:
            return pd.DataFrame(columns=TABLE_COLUMNS["metrics"])
        marks = ", ".join("?" for _ in run_ids)
        cols = ", ".join(TABLE_COLUMNS["metrics"])
        sql = f"SELECT {cols} FROM metrics WHERE run_id IN ({marks})"
        params: list[Any] = list(run_ids)
        if names:
            sql += f" AND name IN ({', '.join('?' for _ in names)})"
            params += list(names)
        return self.query(sql + " ORDER BY run_id, name, step", params)

    def metric_names(self, run_ids: Sequence[str]) -> list[str]:
        if not run_ids:
            return []
        marks = ", ".join("?" for _ in run_ids)
        df = self.query(f"SELECT DISTINCT name FROM metrics WHERE run_id IN ({marks}) ORDER BY name",
                        list(run_ids))
        return df["name"].tolist()

    def sample_steps(self, run_id: str, table: str = "tokens") -> list[int]:
        assert table in ("tokens", "thoughts")
        df = self.query(f"SELECT DISTINCT step FROM {table} WHERE run_id = ? ORDER BY step", [run_id])
        return df["step"].tolist()

    def samples_at(self, run_id: str, step: int, table: str = "tokens") -> list[int]:
        assert table in ("tokens", "thoughts")
        df = self.query(f"SELECT DISTINCT sample FROM {table} WHERE run_id = ? AND step = ? ORDER BY sample",
                        [run_id, step])
        return df["sample"].tolist()

    def tokens(self, run_id: str, step: int | None = None, sample: int | None = None) -> pd.DataFrame:
        cols = ", ".join(TABLE_COLUMNS["tokens"])
        sql, params = f"SELECT {cols} FROM tokens WHERE run_id = ?", [run_id]
        if step is not None:
            sql, params = sql + " AND step = ?", params + [step]
        if sample is not None:
            sql, params = sql + " AND sample = ?", params + [sample]
        return self.query(sql + " ORDER BY step, sample, position", params)

    def thoughts(self, run_id: str, step: int | None = None, sample: int | None = None) -> pd.DataFrame:
        cols = ", ".join(TABLE_COLUMNS["thoughts"])
        sql, params = f"SELECT {cols} FROM thoughts WHERE run_id = ?", [run_id]
        if step is not None:
            sql, params = sql + " AND step = ?", params + [step]
        if sample is not None:
            sql, params = sql + " AND sample = ?", params + [sample]
        return self.query(sql + " ORDER BY step, sample, position, idx", params)


def run_assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """The one builder of run-field updates: "a = ?, b = ?" and the values. An unknown field
    raises (a typo must not be silently dropped)."""
    bad = set(fields) - RUN_FIELDS
    if bad:
        raise ValueError(f"unknown run fields {sorted(bad)}")
    if not fields:
        raise ValueError("a run update needs at least one field")
    return ", ".join(f"{k} = ?" for k in fields), list(fields.values())   # names from RUN_FIELDS


def _empty_database() -> duckdb.DuckDBPyConnection:
    """An in-memory database with the lab's tables and no rows."""
    con = duckdb.connect(":memory:")
    for stmt in SCHEMA:
        con.execute(stmt)
    return con


def _insert(con: duckdb.DuckDBPyConnection, table: str, items: list[dict[str, Any]]) -> None:
    cols = TABLE_COLUMNS[table]
    data = {c: [_cell(it.get(c)) for it in items] for c in cols}
    df = pd.DataFrame(data, columns=cols)
    con.register("_incoming", df)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _incoming")
    finally:
        con.unregister("_incoming")


def _cell(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return v


def clean_row(d: dict[str, Any]) -> dict[str, Any]:
    """A row as a dict with missing values (NaN, NaT, NA) as None."""
    out = {}
    for k, v in d.items():
        try:
            if pd.isna(v):
                v = None
        except (TypeError, ValueError):
            pass
        out[k] = v
    return out


def wait_for(predicate, timeout: float, interval: float = 0.25) -> bool:
    """Poll `predicate` until true or timeout (used by the CLI follow mode and tests)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
