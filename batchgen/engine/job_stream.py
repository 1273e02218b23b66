"""A run's jobs at dataset scale: read from one consistent snapshot, page by page, never all held.

`export` of a 1,000,000-job run needs its columns (every axis any job has) before its first row, and then every
row: two passes over the same rows. Both run in one read transaction (SQLite: one deferred transaction, which
WAL keeps on one snapshot while runners write; PostgreSQL: REPEATABLE READ, READ ONLY), so a job added between
the passes cannot bring an axis the header lacks. Rows come `PAGE` at a time (a server-side cursor on PostgreSQL);
the export's second pass reads plain records (`records`, for `ExportRecords`), not JobRows.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Integer, String, cast, func, literal, select, type_coerce

from batchgen.core.export import row_axis_names
from batchgen.core.jobs import JobRow, JobStatus
from batchgen.engine.ledger import JOBS

__all__ = ["PAGE", "JobRowStream", "job_row_stream"]

PAGE = 5_000
_REMEMBERED = 4_096  # parsed JSON kept for jobs that share it; a bound, so memory stays flat at any size
_TIMES = ("intent_at", "enqueued_at", "started_at", "completed_at")
_STATUSES = {s.value: s for s in JobStatus}


def _moment(value: Any) -> datetime | None:
    """A stored time as aware UTC: SQLite hands back its text, naive UTC (parsed here, in C, rather than by the
    column type's regular expression: a million rows times four), PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value + "+00:00")  # 4x quicker than parsing, then replace(tzinfo=UTC)
        except ValueError:
            value = datetime.fromisoformat(value)  # text with an offset of its own
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def _remember(parsed: dict[str, Any], text: str) -> Any:
    if len(parsed) >= _REMEMBERED:
        parsed.clear()
    value = parsed[text] = json.loads(text)
    return value


def _keys_of(json_text: Any) -> Any:
    """SQL for the keys of a JSON object's text, in order, as a JSON array (`["subject","seconds"]`)."""
    each = func.json_each(json_text).table_valued("key")
    return select(func.json_group_array(each.c.key)).scalar_subquery()


class JobRowStream:
    """The jobs of one run in one snapshot, in the order the manifest produced them; each pass reads them afresh."""

    def __init__(self, db: Connection, run_id: int, run: str) -> None:
        self._db, self._run_id, self.run = db, run_id, run
        self._sqlite = db.dialect.name == "sqlite"

    def _query(
        self, *columns: Any, limit: int | None = None, since: int | None = None, before: int | None = None
    ) -> Any:
        """The run's jobs' `columns` in job order: the first `limit`, or those with ids from `since` and below
        `before` (a half of the run, for a split export)."""
        query = select(*columns).where(JOBS.c.run_id == self._run_id)
        if since is not None:
            query = query.where(JOBS.c.id >= since)
        if before is not None:
            query = query.where(JOBS.c.id < before)
        return query.order_by(JOBS.c.id).limit(limit)

    def _statement(self, query: Any) -> tuple[str, list[Any]]:
        """A query as SQLite's driver takes it: the SQL text and its parameters in order."""
        compiled = query.compile(dialect=self._db.dialect)
        return str(compiled), [compiled.params[name] for name in compiled.positiontup or ()]

    def _pages(self, *columns: Any, **bounds: Any) -> Iterator[Sequence[Any]]:
        """The run's jobs' `columns` (`_query`), `PAGE` rows at a time. On SQLite through the driver's own cursor in
        this transaction: plain tuples, without a Result's per-row work (a second of a million-row pass)."""
        query = self._query(*columns, **bounds)
        if self._sqlite:
            cursor = self._db.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(*self._statement(query))
                while page := cursor.fetchmany(PAGE):
                    yield from page
            finally:
                cursor.close()
            return
        result = self._db.execution_options(yield_per=PAGE).execute(query)
        try:
            for page in result.partitions():
                yield from page
        finally:
            result.close()  # a pass left half-way (a short guess) closes its server-side cursor now

    def axis_names(self, limit: int | None = None) -> Iterator[tuple[str, ...]]:
        """Each job's axis names (variables, then parameters), for the export's columns: the first pass (of the
        first `limit` jobs only, for a guess). Jobs with the same names are parsed once: on SQLite the pass reads
        only each JSON text's keys, as a JSON array SQLite makes (json_each, in C), which repeat from job to job
        where the texts do not (decoding two texts a job in Python took seconds at a million jobs, for `export` to
        stdout); on PostgreSQL the texts themselves."""
        c = JOBS.c
        columns = (
            (_keys_of(c.variables_json), _keys_of(c.params_json)) if self._sqlite else (c.variables_json, c.params_json)
        )
        seen: dict[tuple[str, str], tuple[str, ...]] = {}
        for variables, params in self._pages(*columns, limit=limit):
            names = seen.get((variables, params))
            if names is None:
                if len(seen) >= _REMEMBERED:
                    seen.clear()
                names = seen[variables, params] = tuple(row_axis_names(json.loads(variables), json.loads(params)))
            yield names

    def _record_columns(self) -> tuple[Any, ...]:
        c = JOBS.c
        return (
            c.key, literal(self.run, String), c.model, c.params_json, c.variables_json, c.repeat, c.status,
            c.generation_id, c.result_url, c.output_path, c.sha256, c.bytes, c.estimated_cost, c.cost, c.error,
            c.error_class, c.attempts, *(type_coerce(c[t], String) for t in _TIMES[1:]), c.downloaded_by,
        )  # fmt: skip

    def records(self, *, since: int | None = None, before: int | None = None) -> Generator[Sequence[Any], None, None]:
        """Every job (or those with ids from `since` and below `before`) as a plain row in `RECORD_FIELDS` order,
        for `ExportRecords`: what `rows` reads, with no JobRow made (a million of them took a third of an export);
        times as the text SQLite holds, or datetimes."""
        yield from self._pages(*self._record_columns(), since=since, before=before)

    # ---- for an export in two processes (engine/exports.py): SQLite files only -------------------------------------

    def database_file(self) -> str | None:
        """The SQLite file this snapshot reads, which another process can read too; None on PostgreSQL or for a
        database in memory."""
        database = self._db.engine.url.database if self._sqlite else None
        return None if not database or database == ":memory:" or database.startswith("file:") else database

    def middle(self) -> tuple[int, int]:
        """The number of the run's jobs, and the id that splits them into halves (jobs below it, jobs from it)."""
        c = JOBS.c
        count = int(self._db.execute(select(func.count()).where(c.run_id == self._run_id)).scalar_one())
        query = select(c.id).where(c.run_id == self._run_id).order_by(c.id).offset(count // 2).limit(1)
        found = self._db.execute(query).scalar()
        return count, int(found) if found is not None else 0

    def records_statement(self, since: int) -> tuple[str, list[Any]]:
        """`records(since=...)` as SQL text and parameters, for another process to run on its own connection."""
        return self._statement(self._query(*self._record_columns(), since=since))

    def fingerprint_statement(self, since: int) -> tuple[str, list[Any]]:
        """SQL that tells two snapshots of the jobs from `since` apart: their count, their last change, and the sum
        of their changes' microseconds (every change to a job moves its updated_at: a change made with a clock set
        back moves the sum, not the last)."""
        c = JOBS.c
        changed = type_coerce(c.updated_at, String)
        query = select(
            func.count(), func.max(changed), func.total(cast(func.substr(changed, 21), Integer)), func.total(c.id)
        ).where(c.run_id == self._run_id, c.id >= since)
        return self._statement(query)

    def fingerprint(self, since: int) -> list[Any]:
        """`fingerprint_statement`'s answer in this snapshot."""
        cursor = self._db.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(*self.fingerprint_statement(since))
            return list(cursor.fetchone())
        finally:
            cursor.close()

    def rows(self) -> Generator[JobRow, None, None]:
        """Every job as an export row, one page in memory at a time."""
        c = JOBS.c
        times = [type_coerce(c[t], String) if self._sqlite else c[t] for t in _TIMES]
        run = self.run
        shared: dict[str, Any] = {}  # variables shared by many jobs (a matrix's): one parsed dict for all of them
        for r in self._pages(
            c.key, c.model, c.params_json, c.variables_json, c.repeat, c.status, c.generation_id, c.result_url,
            c.output_path, c.sha256, c.bytes, c.estimated_cost, c.cost, c.error, c.error_class, c.attempts, *times,
            c.media_type, c.downloaded_by,
        ):  # fmt: skip
            yield JobRow(
                job_key=r[0],
                run=run,
                model=r[1],
                params=json.loads(r[2]),
                variables=shared[r[3]] if r[3] in shared else _remember(shared, r[3]),
                repeat=r[4],
                status=_STATUSES[r[5]],
                generation_id=r[6],
                result_url=r[7],
                output_path=r[8],
                sha256=r[9],
                bytes=r[10],
                estimated_cost=r[11],
                cost=r[12],
                error=r[13],
                error_class=r[14],
                attempts=r[15],
                intent_at=_moment(r[16]),
                enqueued_at=_moment(r[17]),
                started_at=_moment(r[18]),
                completed_at=_moment(r[19]),
                media_type=r[20],
                downloaded_by=r[21],
            )


@contextmanager
def job_row_stream(engine: Engine, run_id: int, run: str) -> Iterator[JobRowStream]:
    """A read-only snapshot of the run's jobs, open until the block ends."""
    with engine.connect() as db:
        if db.dialect.name == "postgresql":
            db = db.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with db.begin():
            yield JobRowStream(db, run_id, run)
