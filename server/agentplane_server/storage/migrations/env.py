"""Alembic environment: runs the migrations on the URL that storage.db.migrate passes in."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from agentplane_server.storage.tables import metadata

MIGRATION_LOCK_ID = 0x4147_4D47  # "AGMG"
config = context.config
url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
engine = create_engine(
    url, poolclass=pool.NullPool, connect_args=config.attributes.get("connect_args", {})
)
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # Replicas starting together migrate one at a time; the others then find the schema
        # current. The lock is released when this transaction commits.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
