"""`segport export` and `segport jobs show` against segport served by uvicorn on a real socket (in a thread of
the test process, so a test can hold the workers back or break a job); every exit code."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from segport.cli import cli
from segport.client import Job, Progress
from segport.client.cli import Display
from segport.worker import Worker
from tests.client_support import ThreadServer, wait_for
from tests.conftest import PROJECT, SEGMENT, Seeded, free_port
from tests.expected import expected_csv, expected_jsonl, parse_jsonl

KEYS = ["id_$basic_userId", "usr_gender", "tag_rfm"]


@pytest.fixture
def running(seeded: Seeded) -> Iterator[ThreadServer]:
    with ThreadServer(seeded.app, run_workers=True) as server:
        yield server


@pytest.fixture
def idle(seeded: Seeded) -> Iterator[ThreadServer]:
    with ThreadServer(seeded.app, run_workers=False) as server:
        yield server


def segport(*args: str, server: str | None = None, token: str | None = None) -> Result:
    env = {"SEGPORT_SERVER": server, "SEGPORT_TOKEN": token}
    return CliRunner().invoke(cli, list(args), env=env)


def export_args(*extra: str) -> list[str]:
    return ["export", "--project", PROJECT, "--segment", SEGMENT, *(a for k in KEYS for a in ("-p", k)), *extra]


def test_export_to_a_file_exits_0_with_progress(running: ThreadServer, seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = segport(
        *export_args("--format", "csv", "--header", "name", "-o", str(out)), server=running.url, token=seeded.token
    )
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == expected_csv(KEYS, header=["用户ID", "性别", "会员等级"])
    assert result.stdout == f"{out}\n"  # the written path, for scripts
    assert "submitted job" in result.stderr and "FINISH" in result.stderr and "6 rows" in result.stderr
    assert "downloaded out.csv" in result.stderr


def test_export_flags_override_the_environment(running: ThreadServer, seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    result = segport(
        *export_args("--server", running.url, "--token", seeded.token, "-o", str(out), "-q"),
        server="http://127.0.0.1:9",
        token="wrong",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # --quiet
    assert out.read_bytes() == expected_csv(KEYS)


def test_export_json_to_stdout(running: ThreadServer, seeded: Seeded) -> None:
    result = segport(
        "export",
        "-P",
        PROJECT,
        "-s",
        SEGMENT,
        "-p",
        ",".join(KEYS),
        "--format",
        "json",
        "-o",
        "-",
        server=running.url,
        token=seeded.token,
    )
    assert result.exit_code == 0, result.stderr
    assert parse_jsonl(result.stdout_bytes) == expected_jsonl(KEYS)


def test_export_into_a_directory_keeps_the_servers_file_name(
    running: ThreadServer, seeded: Seeded, tmp_path: Path
) -> None:
    out = tmp_path / "dir"
    out.mkdir()
    result = segport(*export_args("-o", str(out)), server=running.url, token=seeded.token)
    assert result.exit_code == 0, result.stderr
    (written,) = out.iterdir()
    assert result.stdout.strip() == str(written) and written.name.endswith("_UserList.csv")


def test_jobs_show_prints_the_job_result(running: ThreadServer, seeded: Seeded, tmp_path: Path) -> None:
    assert segport(*export_args("-o", str(tmp_path / "x.csv")), server=running.url, token=seeded.token).exit_code == 0
    (job,) = seeded.app.queue.list(PROJECT)
    result = segport("jobs", "show", job.id, server=running.url, token=seeded.token)
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["stage"] == "FINISH" and shown["id"] == job.id and shown["rows"] == 6 and len(shown["uris"]) == 1
    missing = segport("jobs", "show", "nope1234", server=running.url, token=seeded.token)
    assert missing.exit_code == 4 and "JOB_NOT_FOUND" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "-P", PROJECT, "-s", SEGMENT, "-t", "tag_rfm"], "exactly one of --segment or --tag"),
        (["export", "-P", PROJECT], "exactly one of --segment or --tag"),
        (["export", "-P", PROJECT, "-s", SEGMENT, "--format", "xml"], "--format must be csv or json"),
        (["export", "-P", PROJECT, "-s", SEGMENT, "--header", "label"], "--header must be key or name"),
        (["export", "-P", PROJECT, "-s", SEGMENT, "-p", "usr_nope"], "UNKNOWN_KEY"),
        (["export", "-P", PROJECT, "-s", SEGMENT, *[f"-p=usr_k{i}" for i in range(61)]], "TOO_MANY_PROPERTIES"),
    ],
)
def test_bad_input_exits_2(running: ThreadServer, seeded: Seeded, args: list[str], message: str) -> None:
    result = segport(*args, server=running.url, token=seeded.token)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_server_exits_2(seeded: Seeded) -> None:
    result = segport(*export_args(), server=None, token=seeded.token)
    assert result.exit_code == 2 and "SEGPORT_SERVER" in result.stderr


def test_bad_token_exits_3(running: ThreadServer) -> None:
    result = segport(*export_args(), server=running.url, token="wrong")
    assert result.exit_code == 3 and "UNAUTHORIZED" in result.stderr


def test_unknown_segment_exits_4(running: ThreadServer, seeded: Seeded) -> None:
    result = segport("export", "-P", PROJECT, "-s", "seg_missing", server=running.url, token=seeded.token)
    assert result.exit_code == 4 and "SEGMENT_NOT_FOUND" in result.stderr


def test_failed_job_exits_6_with_the_servers_message(idle: ThreadServer, seeded: Seeded, tmp_path: Path) -> None:
    def break_the_job() -> None:  # what a worker would meet if the catalogue changed after the submit
        wait_for(lambda: bool(seeded.app.queue.list(PROJECT)))
        seeded.app.data.remove_catalog_key(PROJECT, "tag_rfm")
        Worker(seeded.app, threads=1).run_until_empty()

    saboteur = threading.Thread(target=break_the_job)
    saboteur.start()
    result = segport(
        *export_args("-o", str(tmp_path / "x.csv"), "--timeout", "20"), server=idle.url, token=seeded.token
    )
    saboteur.join()
    assert result.exit_code == 6, result.stderr
    assert "UNKNOWN_KEY" in result.stderr and "no longer in the catalogue" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_timeout_exits_7(idle: ThreadServer, seeded: Seeded, tmp_path: Path) -> None:
    result = segport(
        *export_args("-o", str(tmp_path / "x.csv"), "--timeout", "0.3"), server=idle.url, token=seeded.token
    )
    assert result.exit_code == 7 and "still NONE" in result.stderr


def test_unreachable_server_exits_8(seeded: Seeded) -> None:
    result = segport(*export_args("--retries", "0"), server=f"http://127.0.0.1:{free_port()}", token=seeded.token)
    assert result.exit_code == 8 and "ConnectError" in result.stderr


def test_live_display_on_a_terminal_shows_stage_rows_and_bytes() -> None:
    buf = io.StringIO()
    job = Job("abcd1234", "DES-202611281200-1")
    with Display(Console(file=buf, force_terminal=True, width=120), quiet=False) as display:
        display(Progress("submitted", 0.0, job))
        display(Progress("waiting", 0.1, job, "RUNNING"))
        display(Progress("waiting", 0.2, job, "FINISH", rows=20000))
        display(Progress("downloading", 0.3, job, file="x.csv", downloaded=1000, total=2000))
        display(Progress("downloading", 0.4, job, file="x.csv", downloaded=2000, total=2000))
        display(Progress("done", 0.5, job, "FINISH", 20000))
    out = buf.getvalue()
    assert "job abcd1234" in out and "FINISH · 20,000 rows" in out
    assert "x.csv" in out and "2.0 kB / 2.0 kB" in out
