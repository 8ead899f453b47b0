"""pyserver's workload plan: the full mix takes its p99 from enough requests, and the coarse
mix (the one before) is the same work in fewer, larger requests."""

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

WORKLOAD = Path(__file__).resolve().parents[2] / "targets" / "pyserver" / "workload.py"


@pytest.fixture(scope="module")
def workload():
    spec = importlib.util.spec_from_file_location("pyserver_workload", WORKLOAD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requests(workload, mode: str) -> list[tuple[str, str, bytes | None]]:
    bulk, plans = workload.build_plan(mode, 1.0)
    reset_and_final = [("POST", "/reset", b"{}"), ("GET", "/stats", None)]
    return reset_and_final + bulk + [op for plan in plans for op in plan]


def _items(workload, requests) -> Counter:
    import json

    return Counter(
        item["id"]
        for method, path, body in requests
        if path == "/ingest"
        for item in json.loads(body)["items"]
    )


def test_the_full_mix_leaves_at_least_ten_requests_above_its_p99(workload):
    n = len(_requests(workload, "full"))
    assert n == 1370 and n * 0.01 >= 10
    assert len(_requests(workload, "full-coarse")) == 290  # 2.9 above its p99


def test_the_coarse_mix_is_the_same_work_in_larger_requests(workload):
    full, coarse = _requests(workload, "full"), _requests(workload, "full-coarse")
    by_path = {name: Counter(path for _, path, _ in reqs) for name, reqs in
               (("full", full), ("coarse", coarse))}
    for path in ("/process", "/stats", "/reset"):
        assert by_path["full"][path] == by_path["coarse"][path], path
    items_full, items_coarse = _items(workload, full), _items(workload, coarse)
    assert set(items_full) == set(items_coarse)  # the same items reach the store
    assert sum(items_full.values()) == sum(items_coarse.values())  # and as many membership checks
