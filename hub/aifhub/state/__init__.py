"""The service's state database, shared by the ledger and grading: engine, the one gateway to it
(:meth:`~aifhub.state.db.Database.run`), the declarative base and the alembic migrations."""
