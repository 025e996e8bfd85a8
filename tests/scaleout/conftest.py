"""Fixtures of the scale-out tests: a real PostgreSQL server per module, started as an
unprivileged user when the tests run as root."""
from __future__ import annotations

import pytest

from tests.scaleout.cluster import Postgres


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres(fsync=False)  # the replicas' durability is under test, not the disk's
    yield pg
    pg.close()
