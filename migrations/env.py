"""Alembic environment: the URL from service.settings (unless the caller set sqlalchemy.url), the metadata from
service.models. SQLite gets batch mode so later ALTERs work there too, with foreign keys off while it migrates:
batch mode copies a table, drops it and renames the copy, and with foreign keys on that drop would first delete
the table's rows and cascade to every table that references it (trials -> curve_points)."""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context

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


def run_migrations_online() -> None:
    url = database_url()
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")   # outside a transaction, where it takes effect
            connection.commit()
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
