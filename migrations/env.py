"""Alembic environment: the URL from service.settings (unless the caller set sqlalchemy.url), the metadata from
service.models. SQLite gets batch mode so later ALTERs work there too, transactional DDL, and foreign keys off while
it migrates: batch mode copies a table, drops it and renames the copy, and with foreign keys on that drop would
first delete the table's rows and cascade to every table that references it (trials -> curve_points)."""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Engine, event

from service.db import make_engine
from service.models import Base
from service.settings import Settings

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().db_url


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def sqlite_transactional_ddl(engine: Engine) -> None:
    """pysqlite runs DDL outside any transaction (it only opens one before DML), so a revision that fails half way
    (a downgrade refusing to lose data) would leave tables half rebuilt. With the driver's own transaction handling
    off and BEGIN emitted here, a whole run commits or rolls back as one, as on PostgreSQL; foreign keys go off
    at connect, outside any transaction, where the pragma takes effect."""
    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN")


def run_migrations_online() -> None:
    url = database_url()
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        sqlite_transactional_ddl(engine)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite", transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
