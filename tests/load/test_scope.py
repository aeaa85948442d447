"""The runner counts the CPU of the platform under test only, where it can tell which processes are its own."""

from __future__ import annotations

from load.runner import Scope, _in_scope, _scope


def test_postgres_backends_of_other_databases_are_not_the_platforms():
    scope = Scope(database="serena_load")
    assert _in_scope("Postgres", 1, "postgres: 15/main: postgres serena_load 127.0.0.1(5050) idle", scope)
    assert not _in_scope("Postgres", 2, "postgres: 15/main: postgres serena_test_gw0_42 127.0.0.1(5051) idle", scope)
    assert not _in_scope("Postgres", 3, "postgres: 15/main: postgres serena_load_old 127.0.0.1(5052) idle", scope)
    assert _in_scope("Postgres", 2, "postgres: 15/main: postgres serena_test_gw0_42 127.0.0.1(5051) idle", Scope())


def test_only_the_platforms_localstripe_and_serena_processes_count():
    scope = Scope(serena_pids=frozenset({10, 11}), stripe_port="8421")
    assert _in_scope("localstripe", 5, "python -m serena.services localstripe 127.0.0.1 8421", scope)
    assert not _in_scope("localstripe", 6, "python -m serena.services localstripe 127.0.0.1 8420", scope)
    assert _in_scope("planner", 10, "python -m serena.cli planner", scope)
    assert not _in_scope("planner", 12, "python -m serena.cli planner", scope)  # another platform's planner
    assert _in_scope("planner", 12, "python -m serena.cli planner", Scope())


def test_the_scope_comes_from_the_platforms_environment():
    scope = _scope([], {"SERENA_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/serena_load",
                        "SERENA_STRIPE_API_BASE": "http://127.0.0.1:8421"})
    assert (scope.serena_pids, scope.database, scope.stripe_port) == (None, "serena_load", "8421")
    assert _scope([], {}) == Scope()
