"""`segport serve` as real processes: a supervisor, API processes on one port and one engine process.

Killed API processes are replaced, a killed engine process is restarted and its job finishes with the
right bytes, a submit is accepted while the engine is down, imports from the CLI run in the engine process,
and SIGTERM (or SIGKILL of the supervisor) leaves no process behind."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import (
    PROJECT,
    LiveServer,
    auth,
    children,
    engine_pid,
    free_port,
    pid_at,
    start_server,
    stop_server,
    wait_for,
    write_users_csv,
)
from tests.test_crash import FAST, PROPS, expected_jsonl, job_result, make_data_dir, submit

SPLIT = {**FAST, "SEGPORT_API_PROCESSES": "2"}


def users_page(server: LiveServer, token: str) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/v1/api/projects/{PROJECT}/segment_profiles/seg_few/users",
        headers=auth(token),
        params={"limit": 2},
        timeout=30,
    )


@pytest.fixture
def split_server(tmp_path: Path) -> tuple[LiveServer, str, Path]:
    data, token, parquet = make_data_dir(tmp_path, 2_000)
    server = start_server(data, tmp_path / "server.log", SPLIT)
    yield server, token, parquet  # type: ignore[misc]
    stop_server(server)


def test_serve_runs_two_api_processes_and_one_engine_and_replaces_a_killed_api_process(
    split_server: tuple[LiveServer, str, Path],
) -> None:
    server, token, _ = split_server
    roles = wait_for(lambda: (c := children(server)) and len(c["api"]) == 2 and len(c["engine"]) == 1 and c, "2+1")
    assert isinstance(roles, dict)
    victim = roles["api"][0].pid
    os.kill(victim, signal.SIGKILL)
    for _ in range(20):  # the other API process keeps answering on the same port meanwhile
        r = httpx.get(f"{server.base_url}/v1/api/projects/{PROJECT}/segment_profiles", headers=auth(token), timeout=10)
        assert r.status_code == 200, r.text
    wait_for(
        lambda: len(pids := [p.pid for p in children(server)["api"]]) == 2 and victim not in pids,
        "a new API process",
        30,
    )
    assert users_page(server, token).status_code == 200


def test_engine_killed_mid_export_is_restarted_and_the_job_finishes_with_the_right_bytes(tmp_path: Path) -> None:
    data, token, parquet = make_data_dir(tmp_path, 200_000)
    hold = tmp_path / "hold"  # segport/testing_hooks.py: while it exists, an export holds once its file has bytes
    env = {**SPLIT, "SEGPORT_TEST_HOLD_AT": "export-file-written", "SEGPORT_TEST_HOLD_FILE": str(hold)}
    server = start_server(data, tmp_path / "server.log", env)
    try:
        _kill_the_engine_mid_export(server, token, parquet, hold)
    finally:
        stop_server(server)


def _kill_the_engine_mid_export(server: LiveServer, token: str, parquet: Path, hold: Path) -> None:
    first = wait_for(lambda: engine_pid(server), "the engine process")
    hold.touch()
    try:
        job = submit(server, token, "seg_all", {"properties": PROPS, "fileFormat": "json", "compression": "gzip"})
        # held with its file begun, however fast the machine: the SIGKILL meets the export there (a freeze on
        # seeing RUNNING could miss an export that finishes between two looks)
        assert pid_at(Path(f"{hold}.held"), "the export to start") == first
        assert job_result(server, token, job["id"])["stage"] == "RUNNING"
        os.kill(int(first), signal.SIGKILL)  # type: ignore[call-overload]
    finally:
        hold.unlink(missing_ok=True)  # the restarted engine goes straight on
    wait_for(lambda: engine_pid(server) not in (0, first), "a new engine process", 30)
    done = wait_for(
        lambda: (r := job_result(server, token, job["id"]))["stage"] in ("FINISH", "ERROR") and r,
        "the job to finish after the restart",
        90,
    )
    assert isinstance(done, dict) and done["stage"] == "FINISH", done
    assert done["attempts"] == 2
    assert done["dataVersion"] == done["submitDataVersion"] and "dataNote" not in done
    d = httpx.get(f"{server.base_url}/download?file={done['uris'][0]}", headers=auth(token), timeout=60)
    assert d.status_code == 200
    assert gzip.decompress(d.content) == expected_jsonl(parquet, PROPS)


def test_a_submit_while_the_engine_is_down_is_accepted_and_runs_when_it_is_back(
    split_server: tuple[LiveServer, str, Path],
) -> None:
    server, token, _ = split_server
    first = wait_for(lambda: engine_pid(server), "the engine process")
    proc = psutil.Process(int(first))  # type: ignore[call-overload]
    # The supervisor restarts a dead engine within about a second; stopped, it cannot, so the engine stays
    # down for as long as the checks below take on a slow machine (it stays a zombie: nobody reaps it).
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        proc.kill()
        wait_for(lambda: proc.status() == psutil.STATUS_ZOMBIE, "the engine to die", 10)
        page = users_page(server, token)  # needs the engine: a clean 503, not a 500 or a hang
        assert page.status_code == 503, page.text
        assert page.json()["error"]["code"] == "ENGINE_UNAVAILABLE"
        assert int(page.headers["Retry-After"]) >= 1
        job = submit(server, token, "seg_few", {"properties": ["id_$basic_userId"], "fileFormat": "csv"})
        assert job_result(server, token, job["id"])["stage"] == "NONE"
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    done = wait_for(
        lambda: (r := job_result(server, token, job["id"]))["stage"] in ("FINISH", "ERROR") and r,
        "the job to run once the engine is back",
        60,
    )
    assert isinstance(done, dict) and done["stage"] == "FINISH", done
    # reads are served again once the API process's watcher has seen a probe answered (docs/processes.md):
    # the job may finish before that probe, so wait for it, within interval + deadline and some slack
    wait_for(lambda: users_page(server, token).status_code == 200, "member pages to be served again", 10)


def test_the_engine_keeps_an_idle_connection_longer_than_api_processes_do(
    split_server: tuple[LiveServer, str, Path], tmp_path: Path
) -> None:
    """API processes drop an idle connection to the engine after 5 s; had the engine the same limit, a call
    sent on it in that instant would meet the engine's close (a 503 for the user). So the engine keeps it
    longer: here a connection idle for 6 s still answers its next request."""
    server, _, _ = split_server
    engine = psutil.Process(int(wait_for(lambda: engine_pid(server), "the engine process")))  # type: ignore[call-overload]
    assert engine.nice() == 10  # engine_nice's default: exports yield the CPU to the API processes
    assert all(api.nice() == 0 for api in children(server)["api"])
    sock_path = Path(server.data_dir) / "engine.sock"
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600  # the engine's API is the owner's alone
    request = b"POST /engine/health HTTP/1.1\r\nHost: engine\r\nContent-Length: 2\r\n\r\n{}"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(sock_path))
        for pause in (0, 6):
            time.sleep(pause)
            sock.sendall(request)
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 200"), (pause, answer[:200])


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head, then as many body bytes as its Content-Length says), however the
    socket splits it; empty if the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_cli_import_while_serving_runs_in_the_engine_process_and_new_data_gets_a_new_job(
    split_server: tuple[LiveServer, str, Path], tmp_path: Path
) -> None:
    server, token, _ = split_server
    body = {"properties": ["id_$basic_userId"], "fileFormat": "csv"}
    before = submit(server, token, "seg_few", body)
    wait_for(lambda: job_result(server, token, before["id"])["stage"] == "FINISH", "the first export")
    users = tmp_path / "more.csv"
    write_users_csv(users, [{"id_$basic_userId": "C0000001", "usr_gender": "女"}], ["id_$basic_userId", "usr_gender"])
    done = subprocess.run(
        [sys.executable, "-m", "segport.cli", "--data-dir", str(server.data_dir), "users", "import"]
        + ["--project", PROJECT, str(users)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "running server" in done.stderr + done.stdout and "1 updated" in done.stdout
    after = submit(server, token, "seg_few", body)  # the data changed: not deduplicated to the first job
    assert after["id"] != before["id"]
    result = wait_for(
        lambda: (r := job_result(server, token, after["id"]))["stage"] == "FINISH" and r, "the second export"
    )
    first = job_result(server, token, before["id"])
    assert isinstance(result, dict) and result["submitDataVersion"] > first["submitDataVersion"]
    assert result["dataVersion"] == result["submitDataVersion"]


def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    data, _, _ = make_data_dir(tmp_path, 1000)
    server = start_server(data, tmp_path / "server.log", SPLIT)
    procs = [psutil.Process(server.process.pid)]
    procs += wait_for(lambda: len(c := procs[0].children(recursive=True)) == 3 and c, "three children")  # type: ignore[operator]
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    gone, alive = psutil.wait_procs(procs, timeout=15)
    assert alive == [], alive
    assert not (data / "server.json").exists()


def test_a_supervisor_killed_with_sigkill_takes_its_children_with_it(tmp_path: Path) -> None:
    data, _, _ = make_data_dir(tmp_path, 1000)
    server = start_server(data, tmp_path / "server.log", SPLIT)
    kids = wait_for(lambda: len(c := psutil.Process(server.process.pid).children()) == 3 and c, "three children")
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    _, alive = psutil.wait_procs(kids, timeout=15)  # type: ignore[arg-type]
    assert alive == [], alive


def test_segport_api_and_segport_worker_listen_run_the_two_halves_separately(tmp_path: Path) -> None:
    data, token, _ = make_data_dir(tmp_path, 1000)
    engine_port, api_port = free_port(), free_port()
    env = {**os.environ, **FAST, "SEGPORT_DATA_DIR": str(data)}
    log = open(tmp_path / "halves.log", "ab")  # noqa: SIM115 - handed to the children
    cli = [sys.executable, "-m", "segport.cli"]
    engine = subprocess.Popen([*cli, "worker", "--listen", f"127.0.0.1:{engine_port}"], env=env, stdout=log, stderr=log)
    api = subprocess.Popen(
        [*cli, "api", "--host", "127.0.0.1", "--port", str(api_port)],
        env={**env, "SEGPORT_ENGINE_URL": f"http://127.0.0.1:{engine_port}"},
        stdout=log,
        stderr=log,
    )
    server = LiveServer(f"http://127.0.0.1:{api_port}", api, data, tmp_path / "halves.log")
    try:
        page = wait_for(lambda: _answer(lambda: users_page(server, token)), "the API to reach the engine", 90)
        assert isinstance(page, httpx.Response) and page.json()["totalCount"] == 3
        job = submit(server, token, "seg_few", {"properties": ["id_$basic_userId"], "fileFormat": "csv"})
        done = wait_for(lambda: (r := job_result(server, token, job["id"]))["stage"] == "FINISH" and r, "the export")
        assert isinstance(done, dict) and done["rows"] == 3
        assert (
            b"C0000002" in httpx.get(f"{server.base_url}/download?file={done['uris'][0]}", headers=auth(token)).content
        )
    finally:
        for proc in (api, engine):
            proc.terminate()
            proc.wait(30)
        log.close()


def _answer(request: Callable[[], httpx.Response]) -> httpx.Response | None:
    try:
        r = request()
    except httpx.TransportError:
        return None
    return r if r.status_code == 200 else None


def test_serve_on_a_data_dir_whose_profile_file_is_held_elsewhere_exits_with_one_line(tmp_path: Path) -> None:
    data, _, _ = make_data_dir(tmp_path, 100)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(data / 'profiles.duckdb')!r}); "
            "print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        done = subprocess.run(
            [sys.executable, "-m", "segport.cli", "--data-dir", str(data), "serve", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, **SPLIT},
        )
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not (data / "server.json").exists()
