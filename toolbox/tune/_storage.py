"""`--storage`: where a study's trials live, so that many `tb tune` processes share them.

    (none)                     sqlite:///OUT/study.db, a SQLite file in the study folder
    sqlite:///PATH             a SQLite file (one machine, or a few processes on it)
    postgresql://USER@HOST/DB  any SQLAlchemy URL Optuna's RDBStorage takes (many machines)
    journal:PATH               Optuna's journal file (a shared file system, e.g. NFS)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toolbox.errors import ToolboxError

JOURNAL = "journal:"
DEFAULT_FILE = "study.db"
# A RUNNING trial whose process stopped beating for this long (a killed machine) is marked
# failed by the next trial of any process, so the study does not wait on it forever.
HEARTBEAT_S, GRACE_S = 60, 180
_CREATE_TRIES = 5
_HINT = ("pass sqlite:///FILE, journal:FILE or a database URL such as "
         "postgresql://USER:PASSWORD@HOST/DB, check that its server is up and its folder "
         "exists, and that its Python driver (e.g. psycopg2) is installed")


def storage_url(storage: str | None, out: Path) -> str:
    """The storage a study uses: `storage` as given, or the SQLite file in `out`."""
    if storage:
        return storage
    return f"sqlite:///{(out / DEFAULT_FILE).resolve()}"


def shown(url: str) -> str:
    """`url` fit to print: a database password is hidden."""
    if url.startswith(JOURNAL) or "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: opening it reports that
        return url.split("://", 1)[0] + "://***"


def open_storage(url: str) -> Any:
    """Optuna's storage for `url`, opened (tables made, the file locked or created).

    Raises:
        ToolboxError: one line, when the storage cannot be opened or reached (a bad URL, a
            missing driver, a server that does not answer, a folder that does not exist).
    """
    import optuna

    try:
        with quiet_optuna():  # heartbeats are "experimental" to Optuna, and it says so
            if url.startswith(JOURNAL):
                from optuna.storages.journal import JournalFileBackend

                path = Path(url[len(JOURNAL):]).expanduser()
                if not path.parent.is_dir():
                    raise FileNotFoundError(f"no folder {path.parent}")
                return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
            return _open_rdb(url)
    except Exception as exc:
        raise ToolboxError(f"cannot open the study storage {shown(url)}: {_first_line(exc)}",
                           _HINT) from exc


def _open_rdb(url: str) -> Any:
    """Optuna's RDBStorage on `url`, its tables made. Processes that start together on a new
    database (a job array) race to make the tables, and all but one fail on the version row,
    a locked SQLite file or a table another one made a moment ago: those try again, and find
    the tables made."""
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(_CREATE_TRIES):
        try:
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S,
                                                 grace_period=GRACE_S)
            storage.get_all_studies()  # a lazily connecting engine answers now, or fails now
            return storage
        except (IntegrityError, OperationalError) as exc:
            racing = (isinstance(exc, IntegrityError)
                      or any(word in str(exc) for word in ("locked", "already exists")))
            if not racing or attempt + 1 == _CREATE_TRIES:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    """An exception's first line (SQLAlchemy adds a background link on the next lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines (a traceback for every failed trial) off: tb reports trials
    itself, and shows tracebacks only under --debug."""
    import warnings

    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)
