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


def test_calls_to_localstripe_are_reported_but_not_held_to_the_platform_budget():
    rows = [row("localstripe payment_methods (browser side)", 900, 5, "POST"), row("POST /v1/cart", 20, 5, "POST")]
    assert [n for n, _, _ in runner.budgets(rows, check_rates=False)] == ["POST /v1/cart p95 < 200 ms"]


def test_steady_rate_leaves_the_ramp_up_out():
    # 10 s of ramp-up at 10 req/s, then 20 s at 500 req/s (Locust's full history: cumulative counts per second)
    history = [{"Timestamp": str(1000 + t), "Name": "GET /v1/catalog/search?q",
                "Total Request Count": str(10 * t if t <= 10 else 100 + 500 * (t - 10))} for t in range(31)]
    history.append({"Timestamp": "1030", "Name": "Aggregated", "Total Request Count": "1"})
    rates = runner.steady_rates(history, warmup_s=10)
    assert rates == {"GET /v1/catalog/search?q": 500.0}
    peak = dict((n, m) for n, m, _ in runner.budgets([row("GET /v1/catalog/search?q", 20, 335)], check_rates=True, rates=rates))
    assert peak["catalog at 500 req/s"] is True  # the whole-run average (335) would have said no


def test_peak_offers_the_promised_rates():
    peak = runner.PROFILES["peak"]
    assert peak.catalog_users * peak.catalog_rps >= runner.CATALOG_RPS
    assert peak.buyers * peak.buy_rate >= runner.CHECKOUT[2]


def test_the_locustfile_defines_the_user_types():
    # Parsed, not imported: importing locust monkey-patches the interpreter (gevent), which pytest must not get.
    import ast
    from pathlib import Path

    tree = ast.parse((Path(runner.__file__).parent / "locustfile.py").read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"CatalogReader", "Buyer", "Tracker", "Driver", "Dispatcher"} <= classes


def test_load_refuses_hosts_other_than_loopback():
    from typer.testing import CliRunner

    from serena.cli import app

    r = CliRunner().invoke(app, ["load", "--profile", "smoke", "--host", "http://example.com"])
    assert r.exit_code == 2 and "127.0.0.1 only" in r.output
