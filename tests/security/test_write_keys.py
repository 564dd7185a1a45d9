"""Write keys: only SHA-256 hashes are stored, looked up by hash, compared in constant time."""

from __future__ import annotations

import hmac
import json
from datetime import timedelta
from unittest import mock

from django.core import serializers
from django.db import connection
from django.test.utils import CaptureQueriesContext

from onboarding.models import Source
from onboarding.services import sources
from onboarding.services.sources import (
    hash_write_key,
    source_create,
    source_for_write_key,
    source_rotate,
)


def _database_text() -> str:
    """Every column of every source row, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {Source._meta.db_table}")  # noqa: S608
        return json.dumps(cursor.fetchall(), default=str)


def test_no_plaintext_key_after_create_or_rotate(db):
    issued = source_create(name="web")
    rotated = source_rotate(name="web", grace=timedelta(hours=1))
    stored = _database_text() + serializers.serialize("json", Source.objects.all())
    for key in (issued.write_key, rotated.write_key):
        assert key not in stored
        assert key[len(issued.write_key[:10]) :] not in stored  # not even the secret part
    source = Source.objects.get()
    assert source.write_key_hash == hash_write_key(rotated.write_key)
    assert source.previous_key_hash == hash_write_key(issued.write_key)
    assert len(source.write_key_prefix) <= 12


def test_the_final_comparison_is_constant_time(db):
    issued = source_create(name="web")
    with mock.patch.object(sources.hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert source_for_write_key(issued.write_key) == issued.source
    assert compare.call_args.args[0] == hash_write_key(issued.write_key)


def test_lookup_query_filters_on_the_hash_not_the_key(db):
    issued = source_create(name="web")
    with CaptureQueriesContext(connection) as queries:
        source_for_write_key(issued.write_key + "-other")
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert issued.write_key not in sql
    assert hash_write_key(issued.write_key + "-other") in sql
