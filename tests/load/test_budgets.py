"""The load runner's budget checks (Locust's CSV rows in, verdicts out) and the locustfile's user mix."""

from __future__ import annotations

from load import runner


def row(name: str, p95: float, rps: float, typ: str = "GET", n: int = 100) -> dict:
    return {"Type": typ, "Name": name, "Request Count": str(n), "Failure Count": "0", "Requests/s": str(rps),
            "50%": "5", "95%": str(p95), "99%": str(p95 * 2)}


def test_a_slow_endpoint_misses_the_api_budget():
    verdicts = dict((n, m) for n, m, _ in runner.budgets([row("GET /v1/catalog/search?q", 30, 10),
                                                          row("POST /v1/cart", 250, 5, "POST")], check_rates=False))
    assert verdicts["POST /v1/cart p95 < 200 ms"] is False
    assert verdicts["GET /v1/catalog/search?q p95 < 200 ms"] is True


def test_peak_counts_an_unreached_rate_as_a_miss_and_smoke_does_not():
    rows = [row("POST /v1/checkout", 120, 20, "POST"), row("GET /v1/catalog/search?q", 20, 100)]
    peak = {n: m for n, m, _ in runner.budgets(rows, check_rates=True)}
    smoke = {n: m for n, m, _ in runner.budgets(rows, check_rates=False)}
    assert peak["checkout p95 ≤ 200 ms"] and not peak["checkout at 100 req/s"] and not peak["catalog at 500 req/s"]
    assert "checkout at 100 req/s" not in smoke and smoke["catalog p95 ≤ 50 ms"]


def test_websocket_and_mqtt_rows_are_not_held_to_the_http_budget():
    rows = [row("WS /ws/fleet frame", 1000, 1, "WS"), row("MQTT publish location", 3, 50, "MQTT")]
    assert runner.budgets(rows, check_rates=True) == []


def test_the_locustfile_defines_the_four_user_types():
    # Parsed, not imported: importing locust monkey-patches the interpreter (gevent), which pytest must not get.
    import ast
    from pathlib import Path

    tree = ast.parse((Path(runner.__file__).parent / "locustfile.py").read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"Shopper", "Tracker", "Driver", "Dispatcher"} <= classes


def test_load_refuses_hosts_other_than_loopback():
    from typer.testing import CliRunner

    from serena.cli import app

    r = CliRunner().invoke(app, ["load", "--profile", "smoke", "--host", "http://example.com"])
    assert r.exit_code == 2 and "127.0.0.1 only" in r.output
