"""Saved driver accounts: a later run reuses them only for the same platform, depot and at most as many drivers."""

from __future__ import annotations

import stat

from simulator.client import DriverAccount, load_accounts, save_accounts


def _accounts(n: int) -> list[DriverAccount]:
    return [DriverAccount(i, 100 + i, f"d{i}@x.test", f"pw {i}", str(100 + i), f"mq{i}", 7 + i, refresh_token=f"rt{i}")
            for i in range(n)]


def test_saved_accounts_come_back_with_their_sessions_in_an_owner_only_file(tmp_path):
    path = tmp_path / "accounts.json"
    save_accounts(path, _accounts(3), base_url="http://127.0.0.1:8400", depot_id=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = load_accounts(path, base_url="http://127.0.0.1:8400", depot_id=1, n=2)
    assert got == _accounts(3)[:2] and got[1].refresh_token == "rt1"


def test_accounts_of_another_platform_depot_or_too_few_are_not_reused(tmp_path):
    path = tmp_path / "accounts.json"
    assert load_accounts(path, base_url="http://127.0.0.1:8400", depot_id=1, n=1) is None  # no file yet
    save_accounts(path, _accounts(3), base_url="http://127.0.0.1:8400", depot_id=1)
    assert load_accounts(path, base_url="http://127.0.0.1:8000", depot_id=1, n=1) is None
    assert load_accounts(path, base_url="http://127.0.0.1:8400", depot_id=2, n=1) is None
    assert load_accounts(path, base_url="http://127.0.0.1:8400", depot_id=1, n=4) is None
