"""The load runner's budget checks (Locust's CSV rows in, verdicts out) and the locustfile's user mix."""

from __future__ import annotations

from pathlib import Path

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


def test_peak_measures_each_budget_alone_at_its_rate_then_all_together():
    catalog, checkout, mixed = runner.phases_for("peak")
    assert catalog.user_classes == ["CatalogReader"] and catalog.catalog_users * catalog.catalog_rps >= runner.CATALOG_RPS
    assert checkout.user_classes == ["Buyer"] and checkout.buyers * checkout.buy_rate >= runner.CHECKOUT[2]
    assert catalog.check_rates and checkout.check_rates and mixed.check_rates
    assert set(mixed.user_classes) == {"CatalogReader", "Buyer", "Driver", "Tracker", "Dispatcher"}


def test_a_phase_of_buyers_only_is_held_to_the_checkout_promises_only():
    rows = [row("POST /v1/cart", 20, 100, "POST"), row("POST /v1/checkout", 150, 100, "POST")]
    names = [n for n, _, _ in runner.budgets(rows, check_rates=True)]
    assert "checkout at 100 req/s" in names and not any(n.startswith("catalog") for n in names)


def test_rate_profiles_name_their_rate_and_bad_names_are_refused():
    (one,) = runner.phases_for("checkout:25")
    assert (one.buyers, one.buy_rate, one.catalog_users, one.check_rates) == (25, 1.0, 0, False)
    (cat,) = runner.phases_for("catalog:250")
    assert cat.catalog_users * cat.catalog_rps == 250 and cat.user_classes == ["CatalogReader"]
    for bad in ("checkout:", "checkout:-1", "catalog:x", "other:10", "peak2"):
        assert runner.phases_for(bad) is None
    assert runner.run(profile="other:10", host="http://127.0.0.1:1", out_dir=Path("/tmp")) == 2


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
