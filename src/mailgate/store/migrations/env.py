"""Alembic environment: runs on the connection handed over by Database.migrate()."""

from alembic import context

from mailgate.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline mode is not used
    raise RuntimeError(
        "mailgate migrations run through `mailgate db upgrade` or Database.migrate()"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
