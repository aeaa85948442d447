"""`serena up` runs several API processes on one port: how many, and /metrics counting every one of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

from serena.commands.platform import api_workers, process_specs


def test_api_workers_default_to_one_per_core_and_follow_the_setting(settings):
    assert api_workers(settings.model_copy(update={"api_workers": 0})) == (os.cpu_count() or 1)
    assert api_workers(settings.model_copy(update={"api_workers": 3})) == 3
    assert api_workers(settings.model_copy(update={"api_workers": 3}), 5) == 5  # `serena up --workers 5`
    [api] = [s for s in process_specs(settings.model_copy(update={"api_workers": 3})) if s.name == "api"]
    assert api.argv[api.argv.index("--workers") + 1] == "3"
    assert os.path.isdir(api.env["PROMETHEUS_MULTIPROC_DIR"]) and not os.listdir(api.env["PROMETHEUS_MULTIPROC_DIR"])


def test_metrics_count_the_requests_of_every_api_process(settings, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    s2 = settings.model_copy(update={"api_workers": 2, "api_port": port, "data_dir": tmp_path})
    [api] = [s for s in process_specs(s2) if s.name == "api"]
    env = {**os.environ, **api.env, "SERENA_DATABASE_URL": settings.database_url, "SERENA_REDIS_URL": settings.redis_url,
           "SERENA_REDIS_PREFIX": settings.redis_prefix, "SERENA_ENV": "test", "SERENA_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(api.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/catalog/categories", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        # Both workers must be up before counting (the first answer may come while the second still imports).
        files = lambda: {f.split("_")[-1] for f in os.listdir(api.env["PROMETHEUS_MULTIPROC_DIR"])}  # noqa: E731
        while time.monotonic() < deadline and len(files()) < 2:
            httpx.get(f"http://127.0.0.1:{port}/v1/catalog/categories", timeout=5)
            time.sleep(0.2)
        before = _count(port)
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers
            assert httpx.get(f"http://127.0.0.1:{port}/v1/catalog/categories", timeout=10).status_code == 200
        assert _count(port) - before == 40
        assert len(files()) >= 2  # values from two processes were summed
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _count(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('serena_http_requests_total{') and 'route="/v1/catalog/categories"' in line)
