"""Locating npm-installed front-end files and saying what is wrong with them."""

from __future__ import annotations

import json
from pathlib import Path

from serena.web.assets import VENDOR, Assets, _locked_versions


def _install(node_modules: Path, package: str, version: str) -> None:
    pkg = VENDOR[package]
    (node_modules / package).mkdir(parents=True)
    (node_modules / package / "package.json").write_text(json.dumps({"name": package, "version": version}))
    for rel in pkg.files:
        path = node_modules / package / pkg.dist / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("/* stub */")


def test_a_complete_install_matching_the_lock_file_has_no_problems(tmp_path):
    locked = _locked_versions()
    for name in VENDOR:
        _install(tmp_path, name, locked[name])
    assert Assets(tmp_path).problems() == []


def test_missing_files_are_fatal_and_named(tmp_path):
    problems = Assets(tmp_path / "node_modules").problems()
    assert {p.package for p in problems} == set(VENDOR)
    assert all(p.fatal for p in problems)
    assert any(str(p).startswith("leaflet: missing dist/leaflet.js") for p in problems)


def test_an_install_older_than_the_lock_file_is_reported_but_still_served(tmp_path):
    locked = _locked_versions()
    for name in VENDOR:
        _install(tmp_path, name, locked[name] if name != "leaflet" else "0.7.7")
    assets = Assets(tmp_path)
    (stale,) = assets.problems()
    assert stale.package == "leaflet" and not stale.fatal
    assert f"installed 0.7.7, package-lock.json pins {locked['leaflet']}" in stale.reason
    assert assets.missing(["leaflet"]) == []


def test_the_lock_file_pins_every_served_package():
    assert set(VENDOR) <= set(_locked_versions())


def test_our_static_urls_change_when_the_file_changes(tmp_path, monkeypatch):
    """A cache-first service worker never keeps an old app.js: the URL token is the file's hash, not the app version."""
    import hashlib

    from serena.web import pages

    (tmp_path / "driver").mkdir()
    app_js = tmp_path / "driver" / "app.js"
    monkeypatch.setattr(pages, "STATIC_DIR", tmp_path)
    pages.static_version.cache_clear()
    try:
        app_js.write_text("console.log('v1');")
        first = pages.static_version("driver/app.js")
        assert first == hashlib.sha256(b"console.log('v1');").hexdigest()[:12]
        app_js.write_text("console.log('v2');")
        pages.static_version.cache_clear()  # a deploy starts new processes
        assert pages.static_version("driver/app.js") != first
        assert pages.static_version("driver/nope.js") == "missing"
    finally:
        pages.static_version.cache_clear()
