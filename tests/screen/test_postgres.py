"""Screening into a real PostgreSQL server (ase-db-backends), in a schema of its own.

The server comes from ``MATGEN_TEST_POSTGRES_URL``, else the role and database that ``.ci/run``
creates (``postgresql://matgen:matgen@localhost:5432/matgen``); without a server the test skips.
"""

from __future__ import annotations

import os
import uuid

import pytest

from matgen.screen.executors import RelaxSettings
from matgen.screen.export import export_store
from matgen.screen.pipeline import ScreenSettings, screen
from matgen.screen.store import ScreeningStore

URL_VARIABLE = "MATGEN_TEST_POSTGRES_URL"
CI_URL = "postgresql://matgen:matgen@localhost:5432/matgen"
SETTINGS = ScreenSettings(relax=RelaxSettings(fmax=0.05, max_steps=25))


@pytest.fixture
def postgres_url():
    """A URL whose ``search_path`` is a fresh schema, dropped afterwards."""
    pytest.importorskip(
        "ase_db_backends", reason="needs ase-db-backends: pip install '.[postgres]'"
    )
    psycopg2 = pytest.importorskip("psycopg2", reason="needs psycopg2: pip install '.[postgres]'")
    url = os.environ.get(URL_VARIABLE, CI_URL)
    try:
        connection = psycopg2.connect(url, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0]
        pytest.skip(
            f"no PostgreSQL server at {url.split('@')[-1]} ({reason}); set {URL_VARIABLE} "
            "(.ci/run installs and starts one)"
        )
    connection.autocommit = True
    schema = f"matgen_test_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA {schema} CASCADE")
        connection.close()


def test_screen_into_postgresql_equals_sqlite(
    postgres_url, tiny_potential, mp20_inputs, fake_hull, assert_same_records, tmp_path
):
    inputs = [
        mp20_inputs(tmp_path / "candidates.extxyz", range(20, 26)),
        tmp_path / "missing.cif",
    ]
    kwargs = dict(potential=str(tiny_potential), settings=SETTINGS, hull=fake_hull, progress=False)
    store = ScreeningStore(postgres_url)
    report = screen(inputs, store, **kwargs)
    assert report.relaxed == 6 and len(store) == 7
    sqlite = ScreeningStore(tmp_path / "results.db")
    screen(inputs, sqlite, **kwargs)
    assert_same_records(store.records(), sqlite.records())
    row = next(store.db.select(status="converged"))
    assert row.data["initial_positions"].shape == (row.natoms, 3)

    again = screen(inputs, ScreeningStore(postgres_url), **kwargs)
    assert again.relaxed == 0 and again.skipped == 7 and len(store) == 7
    assert export_store(store, tmp_path / "out.csv") == 7
