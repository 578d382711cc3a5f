"""Alembic's environment for the provisioning records: the engine comes from the caller
(provisioning/db.py `migrate`), never from a configuration file, so one code path migrates
SQLite and PostgreSQL alike."""

from alembic import context

from provisioning.db import metadata

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
