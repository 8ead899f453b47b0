#!/usr/bin/env python3
"""pyserver: a small stdlib HTTP service with deliberate inefficiencies.

It is the demo target of autoopt. The code is correct but wasteful in three
places, each kept in its own function so that a profiler's stack names it:

1. ``_store_contains`` -- DATA_STORE is a list, so every membership check made
   by ``/ingest`` scans it (O(n) per item, O(n^2) for a bulk load).
2. ``_snapshot_store`` / ``_record_history`` -- every ``/process`` call
   deep-copies the whole DATA_STORE and appends the copy to HISTORY, which
   is never trimmed.
3. ``compute_stats`` -- ``/stats`` materialises several full intermediate
   lists (values, squares, a sorted copy, filtered lists, all tags) instead of
   streaming over the store.

Endpoints:
    GET  /health   -> 200 "ok"
    POST /reset    -> clears the store, the history and the counters
    POST /ingest   -> body {"items": [{"id", "value", "tags", "payload"}, ...]};
                      adds the items not already present
    POST /process  -> processes the store and records a snapshot in HISTORY
    GET  /stats    -> statistics over the store (JSON)

Items are stored as normalised records ``{"id": str, "value": float,
"tags": [str, ...], "payload": str}``; two items are the same item when
their normalised records are equal. Records are never mutated once stored.

Usage: python3 server.py [--host 127.0.0.1] [--port 8080]  (PORT env var is
the default port). Logs go to stderr; SIGTERM stops the server with exit 0.
"""

import argparse
import copy
import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- state -------------------------------------------------------------------

# Records are appended in ingestion order and never mutated once stored.
# Writers (ingest, reset) hold WRITE_LOCK; readers (process, stats) take a
# copy of the list, which is atomic under the GIL.
DATA_STORE = []
HISTORY = []  # one entry per /process call
WRITE_LOCK = threading.Lock()
COUNTERS = {"ingest_calls": 0, "process_calls": 0, "stats_calls": 0}
_COUNTERS_LOCK = threading.Lock()

MAX_BODY_BYTES = 64 * 1024 * 1024


class BadRequest(Exception):
    """A client error, answered with HTTP 400."""


# --- store -------------------------------------------------------------------


def normalise_item(raw):
    """Validate one incoming item and return its normalised record."""
    if not isinstance(raw, dict):
        raise BadRequest("each item must be a JSON object")
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise BadRequest("item.id must be a non-empty string")
    value = raw.get("value", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest("item.value must be a number")
    try:
        value = float(value)
    except OverflowError:
        raise BadRequest("item.value is out of range") from None
    if not math.isfinite(value):
        raise BadRequest("item.value must be finite")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest("item.tags must be a list of strings")
    payload = raw.get("payload", "")
    if not isinstance(payload, str):
        raise BadRequest("item.payload must be a string")
    return {"id": item_id, "value": value, "tags": list(tags), "payload": payload}


def _store_contains(record):
    """True when an equal record is already in DATA_STORE."""
    return record in DATA_STORE


def _store_add(record):
    DATA_STORE.append(record)


def _count(name):
    """Increment counter `name`; returns its new value."""
    with _COUNTERS_LOCK:
        COUNTERS[name] += 1
        return COUNTERS[name]


def reset_state():
    with WRITE_LOCK:
        DATA_STORE.clear()
        HISTORY.clear()
        with _COUNTERS_LOCK:
            for key in COUNTERS:
                COUNTERS[key] = 0


def ingest_items(raw_items):
    """Add the items not already present; returns (added, total)."""
    if not isinstance(raw_items, list):
        raise BadRequest('body must be {"items": [...]}')
    records = [normalise_item(raw) for raw in raw_items]
    added = 0
    _count("ingest_calls")
    with WRITE_LOCK:
        for record in records:
            if not _store_contains(record):
                _store_add(record)
                added += 1
        total = len(DATA_STORE)
    return added, total


# --- processing --------------------------------------------------------------


def _summarise(records):
    """One pass over the records: totals used by /process."""
    total_value = 0.0
    weighted = 0.0
    tagged = 0
    for record in records:
        value = record["value"]
        total_value += value
        weighted += value * len(record["tags"])
        if record["tags"]:
            tagged += 1
    return {
        "count": len(records),
        "total_value": round(total_value, 6),
        "weighted_value": round(weighted, 6),
        "tagged": tagged,
    }


def _snapshot_store():
    """A copy of the store that later ingests and resets leave unchanged."""
    return copy.deepcopy(DATA_STORE)


def _record_history(run, summary, snapshot):
    """Keep this processing run, with the snapshot it processed."""
    HISTORY.append({"run": run, "at": time.time(), "summary": summary, "snapshot": snapshot})


def process_store():
    run = _count("process_calls")
    snapshot = _snapshot_store()
    summary = _summarise(snapshot)
    _record_history(run, summary, snapshot)
    return {"run": run, **summary}


# --- statistics --------------------------------------------------------------


def _percentile(ordered, fraction):
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, int(fraction * len(ordered)))
    return ordered[index]


def compute_stats(records):
    """Statistics over the store."""
    values = [r["value"] for r in records]
    squares = [v * v for v in values]
    ordered = sorted(values)
    positives = [v for v in values if v > 0]
    large = [r for r in records if r["value"] > 500.0]
    all_tags = [t for r in records for t in r["tags"]]
    payload_sizes = [len(r["payload"]) for r in records]

    count = len(values)
    if count:
        mean = sum(values) / count
        variance = max(0.0, sum(squares) / count - mean * mean)
    else:
        mean = variance = 0.0
    tag_counts = Counter(all_tags)
    return {
        "count": count,
        "mean": round(mean, 6),
        "stddev": round(variance ** 0.5, 6),
        "min": ordered[0] if ordered else 0.0,
        "max": ordered[-1] if ordered else 0.0,
        "p50": _percentile(ordered, 0.50),
        "p90": _percentile(ordered, 0.90),
        "positive": len(positives),
        "large": len(large),
        "payload_bytes": sum(payload_sizes),
        "distinct_tags": len(tag_counts),
        "top_tags": sorted(tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5],
    }


def stats_snapshot():
    _count("stats_calls")
    stats = compute_stats(list(DATA_STORE))  # a stable view of the records
    with _COUNTERS_LOCK:
        stats.update(COUNTERS)
    return stats


# --- HTTP --------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a length
    disable_nagle_algorithm = True  # headers and body are separate writes
    server_version = "pyserver/1.0"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # quiet: no per-request access log

    def _send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, obj):
        self._send(status, json.dumps(obj, separators=(",", ":")))

    def _read_json(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise BadRequest("body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"invalid JSON: {exc}") from None

    def _dispatch(self, routes):
        route = routes.get(self.path.split("?", 1)[0])
        if route is None:
            # Drain any body so a keep-alive connection stays usable.
            length = int(self.headers.get("Content-Length") or 0)
            if 0 < length <= MAX_BODY_BYTES:
                self.rfile.read(length)
            self._send_json(404, {"error": "not found"})
            return
        try:
            route(self)
        except BadRequest as exc:
            self._send_json(400, {"error": str(exc)})
        except Exception as exc:  # keep serving; report the failure
            print(f"pyserver: error on {self.command} {self.path}: {exc!r}", file=sys.stderr)
            self._send_json(500, {"error": "internal error"})

    def do_GET(self):
        self._dispatch(GET_ROUTES)

    def do_POST(self):
        self._dispatch(POST_ROUTES)


def handle_health(handler):
    handler._send(200, "ok", "text/plain; charset=utf-8")


def handle_reset(handler):
    handler._read_json()
    reset_state()
    handler._send_json(200, {"reset": True})


def handle_ingest(handler):
    body = handler._read_json()
    if not isinstance(body, dict):
        raise BadRequest('body must be {"items": [...]}')
    added, total = ingest_items(body.get("items"))
    handler._send_json(200, {"added": added, "total": total})


def handle_process(handler):
    handler._read_json()
    handler._send_json(200, process_store())


def handle_stats(handler):
    handler._send_json(200, stats_snapshot())


GET_ROUTES = {"/health": handle_health, "/stats": handle_stats}
POST_ROUTES = {"/reset": handle_reset, "/ingest": handle_ingest, "/process": handle_process}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not wait for keep-alive handler threads on exit
    allow_reuse_address = True


class _Terminate(BaseException):
    """Raised from the SIGTERM handler to leave serve_forever().

    A BaseException, so socketserver's ``except Exception`` blocks do not
    swallow it when the signal lands inside request dispatch.
    """


def _on_sigterm(signum, frame):
    raise _Terminate()


def main(argv=None):
    parser = argparse.ArgumentParser(description="pyserver demo HTTP service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args(argv)

    server = Server((args.host, args.port), Handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    print(f"pyserver: listening on {args.host}:{server.server_address[1]} (pid {os.getpid()})",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (_Terminate, KeyboardInterrupt):
        print("pyserver: stopping", file=sys.stderr, flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
