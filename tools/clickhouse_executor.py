"""Where ClickHouse SQL runs: one small protocol, two executors, one error vocabulary.

`HttpExecutor` talks to a ClickHouse server over HTTP(S) with clickhouse-connect;
`ChdbExecutor` runs the same SQL in chdb, ClickHouse embedded in this process, on a chdb
session directory (e.g. trace_log/query_log rows copied out of a production server). Both
take server-side bound parameters (`{name:Type}` in the SQL) and settings, so the code that
builds the SQL never interpolates a client's value. Errors of either become a
`ClickHouseError` subclass whose message says what to do next.

Heavy imports (clickhouse_connect, chdb) happen when an executor is opened.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from autoopt.tools.errors import AutooptError, InvalidName

URL_ENV = "AUTOOPT_CLICKHOUSE_URL"
USER_ENV = "AUTOOPT_CLICKHOUSE_USER"
PASSWORD_ENV = "AUTOOPT_CLICKHOUSE_PASSWORD"


class ClickHouseError(AutooptError):
    """The server (or chdb) refused or failed a query; the message is the server's own."""


class ClickHouseUnavailable(ClickHouseError):
    """No answer: connection refused, unknown host, or no endpoint configured."""


class ClickHouseAuthError(ClickHouseError):
    """Wrong user or password, or the user may not run what was asked."""


class ClickHouseTimeout(ClickHouseError):
    """The query ran past max_execution_time, or the client gave up waiting."""


@dataclass
class Rows:
    """A query's result: column names and rows of plain Python values."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Executor(Protocol):
    """Runs one read-only SELECT with bound parameters and settings."""

    kind: str
    endpoint: str

    def query(self, sql: str, params: Mapping[str, Any] | None = None,
              settings: Mapping[str, str | int] | None = None) -> Rows:
        """Run `sql`; raise a ClickHouseError subclass on any failure."""
        ...

    def close(self) -> None:
        ...


# -- errors ------------------------------------------------------------------------------

_TIMEOUT_CODES = {159, 209, 210}  # TIMEOUT_EXCEEDED, SOCKET_TIMEOUT, NETWORK_ERROR
_AUTH_CODES = {192, 193, 194, 516}  # UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, AUTH FAILED
_DENIED_CODES = {164, 446, 497}  # READONLY, FUNCTION_NOT_ALLOWED, ACCESS_DENIED
_CODE = re.compile(r"Code:\s*(\d+)")


def error_code(message: str) -> int | None:
    """The ClickHouse error code in a server message ('Code: 60. DB::Exception: ...')."""
    m = _CODE.search(message)
    return int(m[1]) if m else None


def classify(message: str, where: str, timeout_s: float | None = None) -> ClickHouseError:
    """A ClickHouseError subclass for a server or transport failure, with the next step."""
    text = _trim(message)
    code = error_code(text)
    lowered = text.lower()
    if code in _TIMEOUT_CODES or (code is None and ("timed out" in lowered
                                                    or "timeout" in lowered)):
        limit = f" (timeout_s={timeout_s:g})" if timeout_s else ""
        return ClickHouseTimeout(
            f"ClickHouse query at {where} timed out{limit}: {text}. Narrow the window "
            "(since/until), filter by query_id, or raise timeout_s.")
    if code in _AUTH_CODES or "authentication failed" in lowered or "wrong password" in lowered:
        return ClickHouseAuthError(
            f"ClickHouse at {where} refused the credentials: {text}. Set {USER_ENV} and "
            f"{PASSWORD_ENV} for the server's user (the password is never a tool argument).")
    if code in _DENIED_CODES:
        return ClickHouseAuthError(
            f"ClickHouse at {where} denied the query: {text}. The user needs SELECT on "
            "system.trace_log/system.query_log and the INTROSPECTION privilege "
            "(allow_introspection_functions) for symbolization.")
    if code is None and any(s in lowered for s in ("connection refused", "name or service",
                                                   "failed to establish", "max retries",
                                                   "no route to host", "nodename nor")):
        return ClickHouseUnavailable(
            f"cannot reach ClickHouse at {where}: {text}. Is the server running and is the "
            "HTTP port right (deploy the target, or pass url / set "
            f"{URL_ENV})?")
    return ClickHouseError(f"ClickHouse at {where} failed the query: {text}")


def _trim(message: str, limit: int = 1500) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit] + " ..."


# -- HTTP ---------------------------------------------------------------------------------

@dataclass
class HttpEndpoint:
    """An HTTP(S) ClickHouse endpoint; the password never appears in its text."""

    scheme: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)

    @property
    def display(self) -> str:
        return f"{self.scheme}://{self.username}@{self.host}:{self.port}"


def parse_http_url(url: str, username: str | None = None, password: str | None = None
                   ) -> HttpEndpoint:
    """http(s)://[user@]host[:port]; credentials default to the AUTOOPT_CLICKHOUSE_* env."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidName(f"invalid ClickHouse url {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidName(f"invalid ClickHouse url {url!r}: use http://host:8123, "
                          "https://host:8443 or chdb://<session directory>")
    if parts.password:
        raise InvalidName(f"the ClickHouse url must not carry a password: set {PASSWORD_ENV}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidName(f"invalid ClickHouse url {url!r}: give only scheme, host and port")
    return HttpEndpoint(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (8443 if parts.scheme == "https" else 8123),
        username=parts.username or username or os.environ.get(USER_ENV) or "default",
        password=password if password is not None else os.environ.get(PASSWORD_ENV, ""),
    )


class HttpExecutor:
    """A ClickHouse server over HTTP(S), through clickhouse-connect."""

    kind = "http"

    def __init__(self, endpoint: HttpEndpoint, timeout_s: float) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

        self.endpoint = endpoint.display
        self._timeout_s = timeout_s
        self._driver_error = DriverError
        try:
            self._client = clickhouse_connect.get_client(
                host=endpoint.host, port=endpoint.port, username=endpoint.username,
                password=endpoint.password, secure=endpoint.scheme == "https",
                connect_timeout=max(1, min(10, int(timeout_s))),
                send_receive_timeout=int(timeout_s) + 5,  # the server stops first
                query_retries=0, autogenerate_session_id=False,
                client_name="autoopt",
            )
        except DriverError as exc:
            raise self._connect_error(str(exc)) from exc

    def _connect_error(self, message: str) -> ClickHouseError:
        err = classify(message, self.endpoint, self._timeout_s)
        if type(err) is ClickHouseError and error_code(message) == 47 and "readonly" in message:
            # clickhouse-connect reads system.settings(name, value, readonly) on connect;
            # servers without that column (e.g. Debian's 18.16) fail right there.
            return ClickHouseError(
                f"clickhouse-connect could not start a session with {self.endpoint}: the "
                "server is too old for it (its system.settings has no readonly column; "
                f"server said: {_trim(message, 400)}). Query a current ClickHouse release, "
                "which also has system.trace_log.")
        return err

    def query(self, sql: str, params: Mapping[str, Any] | None = None,
              settings: Mapping[str, str | int] | None = None) -> Rows:
        try:
            result = self._client.query(sql, parameters=dict(params or {}) or None,
                                        settings=dict(settings or {}) or None)
        except self._driver_error as exc:
            raise classify(str(exc), self.endpoint, self._timeout_s) from exc
        return Rows(columns=list(result.column_names),
                    rows=[tuple(_plain(v) for v in row) for row in result.result_rows])

    def close(self) -> None:
        self._client.close()


# -- chdb ---------------------------------------------------------------------------------

_CHDB_LOCK = threading.Lock()


class ChdbExecutor:
    """chdb (ClickHouse in this process) on an existing chdb session directory, read-only.

    chdb runs one embedded engine per process, on one path at a time: opening a second
    directory while another is open fails with a clear error. The connection is opened per
    executor and closed by close()."""

    kind = "chdb"

    def __init__(self, path: Path, timeout_s: float) -> None:
        import chdb

        self.endpoint = f"chdb://{path}"
        self._timeout_s = timeout_s
        if not (path / "metadata").is_dir():
            raise InvalidName(
                f"{path} is not a chdb session directory (no metadata/): create it with "
                "chdb.connect('<dir>') and copy trace_log/query_log rows into it")
        with _CHDB_LOCK:
            try:
                self._conn = chdb.connect(f"{path}?mode=ro")
            except Exception as exc:
                if "already initialized" in str(exc):
                    raise ClickHouseError(
                        f"chdb in this server process already has another directory open "
                        f"({_trim(str(exc), 300)}); chdb runs one directory per process. "
                        "Query that one, or restart the server.") from exc
                raise classify(str(exc), self.endpoint, timeout_s) from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None,
              settings: Mapping[str, str | int] | None = None) -> Rows:
        try:
            for name, value in (settings or {}).items():
                if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                    raise InvalidName(f"invalid setting name {name!r}")
                self._conn.query(f"SET {name} = {_setting_literal(value)}")
            self._conn.query("SET output_format_json_quote_64bit_integers = 0")
            result = self._conn.query(sql, "JSONCompact", params=_chdb_params(params or {}))
        except AutooptError:
            raise
        except Exception as exc:
            raise classify(str(exc), self.endpoint, self._timeout_s) from exc
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        if not text.strip():
            return Rows(columns=[], rows=[])
        data = json.loads(text)
        return Rows(columns=[c["name"] for c in data["meta"]],
                    rows=[tuple(row) for row in data["data"]])

    def close(self) -> None:
        with _CHDB_LOCK:
            self._conn.close()


def _setting_literal(value: str | int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
        if not re.fullmatch(r"[\w.:-]*", text):
            raise InvalidName(f"invalid setting value {text!r}")
        return f"'{text}'"
    return str(value)


def _chdb_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """chdb takes parameter values as text in ClickHouse's literal syntax for arrays."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, list | tuple):
            out[name] = "[" + ",".join(str(int(v)) for v in value) + "]"
        else:
            out[name] = value
    return out


def _plain(value: Any) -> Any:
    """clickhouse-connect values to JSON-like Python values (tuples of arrays to lists)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


# -- opening -------------------------------------------------------------------------------

def open_executor(url: str, *, workspace_root: Path, timeout_s: float,
                  username: str | None = None, password: str | None = None) -> Executor:
    """An executor for `url`: http(s)://host:port, or chdb://<dir> (a directory inside the
    workspace: chdb://relative/dir or chdb:///absolute/dir)."""
    if url.startswith("chdb://"):
        return ChdbExecutor(chdb_path(url, workspace_root), timeout_s)
    return HttpExecutor(parse_http_url(url, username, password), timeout_s)


def chdb_path(url: str, workspace_root: Path) -> Path:
    """The session directory a chdb:// url names, confined to the workspace."""
    raw = url[len("chdb://"):]
    if not raw or "\x00" in raw or "?" in raw or "#" in raw:
        raise InvalidName(f"invalid chdb url {url!r}: use chdb://<directory in the workspace>")
    root = workspace_root.resolve()
    path = (Path(raw) if raw.startswith("/") else root / raw).resolve()
    if path != root and root not in path.parents:
        raise InvalidName(f"chdb directory {path} is outside the workspace {root}; copy or "
                          "create the chdb session directory inside it")
    if not path.is_dir():
        raise InvalidName(f"no chdb session directory at {path}")
    return path


def redact(url: str) -> str:
    """A url without any password, for messages and stored profiles."""
    if url.startswith("chdb://"):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}"

