"""The S3 result store unreachable for a while (the gateway killed, then started again on its port) while a
real `segport serve` answers downloads and runs uploads: downloads answer 200 with the whole file or 503
RESULT_STORE_UNAVAILABLE (never a 500, never a cut answer), each export ends FINISH or ERROR with
RESULT_STORE_UNAVAILABLE and no files, nothing partial is ever visible in the bucket, the janitor aborts the
dead uploads when S3 is back, and the log holds no traceback per janitor round or per request."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT, auth, pid_at, start_server, stop_server, wait_for
from tests.s3_support import S3Gateway
from tests.test_crash import FAST, PROPS, job_result, make_data_dir, submit
from tests.test_s3_processes import object_keys, uploads_of

CLIENTS = 20
# distinct exports of the small segment: each submit during the load is a job of its own
BODIES = [
    {"properties": list(props), "fileFormat": fmt}
    for n in (1, 2)
    for props in itertools.combinations(PROPS, n)
    for fmt in ("csv", "json")
]


@dataclass
class Load:
    answers: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    submitted: set[str] = field(default_factory=set)

    def record(self, kind: str, r: httpx.Response, expected: bytes | None = None) -> None:
        code = ""
        if r.status_code == 200:
            if expected is not None and r.content != expected:
                self.wrong.append(f"{kind}: 200 with {len(r.content)} bytes, not the {len(expected)} of the file")
        else:
            try:
                code = r.json()["error"]["code"] if kind != "head" else "RESULT_STORE_UNAVAILABLE"  # HEAD: no body
            except (ValueError, KeyError, TypeError):
                code = "?"
            if r.status_code != 503 or code != "RESULT_STORE_UNAVAILABLE" or not r.headers.get("retry-after"):
                self.wrong.append(f"{kind}: {r.status_code} {r.headers.get('retry-after')!r} {r.text[:200]}")
        self.answers[(kind, r.status_code, code)] += 1


async def run_load(base: str, token: str, files: dict[str, bytes], load: Load, stop: threading.Event) -> None:
    urls = sorted(files)
    submit_url = f"/v1/api/projects/{PROJECT}/segment_profiles/seg_few/export_jobs"
    async with httpx.AsyncClient(base_url=base, headers=auth(token), timeout=120) as http:

        async def one_client(i: int) -> None:
            for n in itertools.count(i):
                if stop.is_set():
                    return
                url = urls[n % len(urls)]
                try:
                    load.record("download", await http.get(url), files[url])
                    load.record("head", await http.head(url))
                    if n % 5 == 0:
                        r = await http.post(submit_url, json=BODIES[n % len(BODIES)])
                        load.record("submit", r)
                        if r.status_code == 200:
                            load.submitted.add(r.json()["id"])
                except httpx.TransportError as exc:  # an answer cut short: partial bytes were visible
                    load.wrong.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)

        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))


@pytest.mark.parametrize("outage_s", [10.0])
def test_s3_unreachable_during_uploads_and_downloads(
    tmp_path: Path, own_s3_gateway: S3Gateway, outage_s: float
) -> None:
    gateway = own_s3_gateway
    data, token, _ = make_data_dir(tmp_path, 20_000)
    bucket = gateway.new_bucket()
    hold = tmp_path / "hold"  # segport/testing_hooks.py: while it exists, an upload holds after its first part
    env = {
        **FAST,
        **gateway.env(bucket),
        "SEGPORT_S3_TIMEOUT_S": "2",
        "SEGPORT_MAX_QUEUED_JOBS_PER_PROJECT": "10000",
        "SEGPORT_TEST_HOLD_AT": "s3-part-sent",
        "SEGPORT_TEST_HOLD_FILE": str(hold),
    }
    log = tmp_path / "server.log"
    server = start_server(data, log, env)
    load, stop = Load(), threading.Event()
    try:
        files: dict[str, bytes] = {}
        early: list[dict] = []
        for body in ({"properties": PROPS}, {"properties": PROPS, "fileFormat": "json"}):
            job = submit(server, token, "seg_few", body)
            done = wait_for(lambda j=job: (r := job_result(server, token, j["id"]))["stage"] == "FINISH" and r, "job")
            assert isinstance(done, dict)
            early.append(done)
            url = f"/download?file={done['uris'][0]}"
            files[url] = httpx.get(server.base_url + url, headers=auth(token), timeout=30).content
        # the big export's upload holds once its first part is in, until S3 has gone: it is mid-upload when S3
        # goes, however fast the machine (one export runs at a time, and it is the first in line)
        hold.touch()
        big = submit(server, token, "seg_all", {"properties": PROPS, "fileFormat": "json"})
        failed: list[BaseException] = []

        def outage() -> None:
            try:
                pid_at(Path(f"{hold}.held"), "the big upload to hold", 60)
                assert uploads_of(gateway, bucket, f"/{big['id']}-")  # open, not completed
                try:
                    gateway.stop()
                finally:
                    hold.unlink()
                time.sleep(outage_s)
                gateway.start()
                time.sleep(3)  # the load goes on a little with S3 back
            except BaseException as exc:  # noqa: BLE001 - raised in the test's thread below
                failed.append(exc)
            finally:
                stop.set()  # the load ends whatever happened here

        fault = threading.Thread(target=outage)
        fault.start()
        try:
            asyncio.run(run_load(server.base_url, token, files, load, stop))
        finally:
            stop.set()
            fault.join()
            hold.unlink(missing_ok=True)
        if failed:
            raise failed[0]

        assert not load.wrong, f"{len(load.wrong)} wrong answers, e.g. {load.wrong[:5]}; all: {dict(load.answers)}"
        assert any(status == 503 for (_, status, _) in load.answers), f"the outage was not seen: {load.answers}"

        # every export ends: FINISH with its files, or ERROR with a clear code and no files
        ended = {}
        for job_id in {big["id"], *load.submitted}:
            ended[job_id] = wait_for(
                lambda j=job_id: (r := job_result(server, token, j))["stage"] in ("FINISH", "ERROR") and r,
                f"job {job_id} to end",
                120,
            )
        for result in ended.values():
            assert isinstance(result, dict)
            if result["stage"] == "ERROR":
                assert result["error"]["code"] == "RESULT_STORE_UNAVAILABLE" and result["uris"] == [], result
            else:
                assert result["uris"], result
        # served again, whole
        for url, content in files.items():
            assert httpx.get(server.base_url + url, headers=auth(token), timeout=30).content == content
        # the janitor aborts every dead upload; the only objects are the files of FINISH jobs' attempts
        wait_for(lambda: not uploads_of(gateway, bucket, ""), "the dead uploads to be aborted", 60)
        finished = {
            f"/{r['id']}-{r['attempts']}/" for r in ended.values() if isinstance(r, dict) and r["stage"] == "FINISH"
        }
        finished |= {f"/{r['id']}-{r['attempts']}/" for r in early}
        for key in object_keys(gateway, bucket):
            assert any(tag in key for tag in finished) or key.endswith(".segport-write-check"), key
    finally:
        stop_server(server)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]
    print(f"{CLIENTS} clients, {outage_s} s S3 outage: {dict(load.answers)}; {len(ended)} exports")
