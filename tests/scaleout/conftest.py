"""Fixtures of the scale-out tests: one real PostgreSQL server for the run (each test makes its
own database), started as an unprivileged user when the tests run as root."""
from __future__ import annotations

import pytest

from tests.scaleout.cluster import Postgres


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres(fsync=False)  # the replicas' durability is under test, not the disk's
    yield pg
    pg.close()
