"""Alembic environment for aifhub's state database."""

from alembic import context
from sqlalchemy import engine_from_config, pool

import aifhub.classroom.models  # noqa: F401  (their tables join the metadata)
import aifhub.credentials.models  # noqa: F401
import aifhub.grading.models  # noqa: F401
import aifhub.ledger.models  # noqa: F401
import aifhub.state.lease  # noqa: F401
from aifhub.state.base import Base

config = context.config
target_metadata = Base.metadata


def run_migrations():
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
