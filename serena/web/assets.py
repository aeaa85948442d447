"""Where the web pages' front-end files live, and which of them are missing.

Our own CSS/JS sits in `serena/web/static/` (in git). Third-party libraries come from the
npm registry at setup (`npm ci` in `serena/web/`, pinned by package-lock.json) into
`serena/web/node_modules/`, which is git-ignored; the app serves each package's dist
directory under `/static/vendor/<package>/`. Nothing is fetched from a CDN at run time.

Only the packages listed in `VENDOR` are served, and only their dist directory: mounting
all of node_modules would publish every package.json, source map and test fixture in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATES_DIR = WEB_DIR / "templates"
# Tests point this elsewhere (monkeypatch) to show what a missing install looks like.
DEFAULT_NODE_MODULES = WEB_DIR / "node_modules"

SETUP_HINT = "run `make setup` (or `cd serena/web && npm ci`)"


@dataclass(frozen=True)
class VendorPackage:
    """An npm package we serve: its dist directory and the files our templates load from it."""

    name: str
    dist: str  # directory inside the package that is published under /static/vendor/<name>/
    files: tuple[str, ...]  # paths inside `dist` that pages reference; checked at start-up
    only_listed: bool = False  # serve `files` only (for packages without a dist directory of their own)


VENDOR: dict[str, VendorPackage] = {
    # Maps. dist/ also holds images/ that leaflet.css refers to (layer switcher, markers).
    "leaflet": VendorPackage("leaflet", "dist", ("leaflet.js", "leaflet.css")),
    # /docs: FastAPI's Swagger UI page loads these from cdn.jsdelivr.net by default; we serve them.
    # The package root is its dist, next to package.json and README, hence the allow-list.
    "swagger-ui-dist": VendorPackage("swagger-ui-dist", ".", ("swagger-ui-bundle.js", "swagger-ui.css"), only_listed=True),
    # The driver app's barcode/QR scanner (package labels carry a QR code and a Code 128): one self-contained UMD file.
    "@zxing/browser": VendorPackage("@zxing/browser", "umd", ("zxing-browser.min.js",)),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the installed front-end files, worded for the person starting the app."""

    package: str
    path: Path
    reason: str
    fatal: bool  # True: a file pages load is missing; False: installed but not what package-lock.json pins

    def __str__(self) -> str:
        return f"{self.package}: {self.reason} ({self.path})"


class Assets:
    """The vendor packages under one node_modules directory: their paths, versions and problems."""

    def __init__(self, node_modules: Path | None = None) -> None:
        self.node_modules = Path(node_modules or DEFAULT_NODE_MODULES)
        self._locked = _locked_versions()  # read once: the lock file changes with a deploy, not while running

    def dist_dir(self, package: str) -> Path:
        pkg = VENDOR[package]
        return self.node_modules / pkg.name / pkg.dist

    def installed_version(self, package: str) -> str | None:
        try:
            return json.loads((self.node_modules / package / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None

    def problems(self) -> list[Problem]:
        """Missing files and installs that do not match package-lock.json; empty when all is well."""
        locked = self._locked
        found: list[Problem] = []
        for name, pkg in VENDOR.items():
            for rel in pkg.files:
                path = self.dist_dir(name) / rel
                if not path.is_file():
                    found.append(Problem(name, path, f"missing {pkg.dist}/{rel}", fatal=True))
            have, want = self.installed_version(name), locked.get(name)
            if have is not None and want is not None and have != want:
                # A stale node_modules after a pull serves the old library silently; say so.
                found.append(Problem(name, self.node_modules / name, f"installed {have}, package-lock.json pins {want}",
                                     fatal=False))
        return found

    def missing(self, packages: tuple[str, ...] | list[str]) -> list[Problem]:
        """Missing files among `packages` (version drift is only warned about, not fatal)."""
        return [p for p in self.problems() if p.package in packages and p.fatal]

    def url_version(self, package: str) -> str:
        """Cache-busting token for the package's URLs: its installed version."""
        return self.installed_version(package) or "missing"


def _locked_versions() -> dict[str, str]:
    try:
        lock = json.loads((WEB_DIR / "package-lock.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key, meta in lock.get("packages", {}).items():
        if key.startswith("node_modules/") and "version" in meta:
            out[key.removeprefix("node_modules/")] = meta["version"]
    return out
