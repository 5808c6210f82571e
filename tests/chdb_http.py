"""A STAND-IN FOR A CLICKHOUSE SERVER, for tests only: ClickHouse's own engine (chdb) behind a thin HTTP front
that speaks enough of ClickHouse's HTTP interface for clickhouse-connect (queries in the body or ``?query=``,
``param_*`` bindings, settings as URL parameters, ``FORMAT`` clauses, ``INSERT ... FORMAT X`` with the data in
the body, errors as ``Code: N. DB::Exception``). It lets the tests drive the engine's ``http://`` path and its
driver, not a real server's network stack, authentication, compression (clients pass ``compress=false``),
sessions or concurrency: queries run one at a time on one chdb connection, and settings sent with a request
stay set for the ones after it.

    python -m tests.chdb_http DIR PORT      # serves until killed
"""

from __future__ import annotations

import re
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import chdb

_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)
_BODY_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?\s+FORMAT\s+\w+)[ \t]*\r?\n?", re.IGNORECASE | re.DOTALL)
_FORMAT = re.compile(r"\sFORMAT\s+(\w+)\s*$", re.IGNORECASE)
_NOT_SETTINGS = {
    "query",
    "database",
    "query_id",
    "session_id",
    "default_format",
    "user",
    "password",
    "compress",
    "decompress",
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "enable_http_compression",
    "client_protocol_version",
    "session_timeout",
    "session_check",
}


def serve(folder: Path, port: int) -> None:
    conn = chdb.connect(str(folder))
    lock = threading.Lock()  # one chdb connection: queries one at a time
    spool = Path(tempfile.mkdtemp(prefix="chdb-http-"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                return self._answer(b"".join(parts))
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(self.rfile.read(length) if length else b"")

        def _answer(self, body: bytes) -> None:
            url = urlparse(self.path)
            if url.path in ("/ping", "/") and "query" not in dict(parse_qsl(url.query)) and not body:
                return self._send(200, b"Ok.\n", {})
            args = dict(parse_qsl(url.query, keep_blank_values=True))
            params = {k[6:]: v for k, v in args.items() if k.startswith("param_")}
            settings = {k: v for k, v in args.items() if k not in _NOT_SETTINGS and not k.startswith("param_")}
            sql = args.get("query")
            data = body
            if sql is None:  # the query is the body, or (an insert) the body's start, the data following it
                head = _BODY_INSERT.match(body)
                if head is not None:
                    sql, data = head.group(1).decode("utf-8"), body[head.end() :]
                else:
                    sql, data = body.decode("utf-8"), b""
            try:
                with lock:
                    if args.get("database"):
                        conn.query(f"USE `{args['database']}`")
                    for key, value in settings.items():
                        conn.query(f"SET {key} = '{value}'")
                    insert = _INSERT.match(sql)
                    if insert is not None and data:
                        path = spool / "insert.bin"
                        path.write_bytes(data)
                        conn.query(f"INSERT INTO {insert.group(1)} SELECT * FROM file('{path}', '{insert.group(2)}')")
                        return self._send(200, b"", {"X-ClickHouse-Summary": "{}"})
                    fmt = _FORMAT.search(sql)
                    out_format = fmt.group(1) if fmt else args.get("default_format", "TabSeparated")
                    if fmt:
                        sql = sql[: fmt.start()]
                    result = conn.query(sql, out_format, params=params) if params else conn.query(sql, out_format)
                    payload = result.bytes() if result is not None else b""
            except Exception as exc:  # noqa: BLE001 - every failure is answered as ClickHouse answers it
                text = str(exc)
                code = re.search(r"Code: (\d+)", text)
                return self._send(500, text.encode(), {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"})
            headers = {"X-ClickHouse-Format": out_format, "X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Summary": "{}"}
            self._send(200, payload or b"", headers)

        def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
