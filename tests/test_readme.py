"""The shell examples of the README and the API page (docs/api.md), run as a user would run them: against `segport demo` data, with the
demo's token, checking the answers the README shows.

Every ``curl`` line of a ``sh`` block is parsed (method, url, body), sent through the in-process app, and
must succeed. Where the README shows an answer (``# {...}`` lines after the command), every
``"key":"string"`` pair it shows must be in the real answer (job ids, names and messages, which change
from run to run, excepted). Placeholders are replaced by what the previous commands returned: a job id
shown in an earlier answer by the last job submitted, a uri ending in ``...`` by the last uri seen.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from segport.app import App
from segport.demo import build_demo
from segport.roles.inline import create_app
from segport.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE_PAGES = (README, ROOT / "docs" / "api.md")  # the pages whose curl lines a user pastes
BASES = ("http://127.0.0.1:8000/v1/api", "http://127.0.0.1:8000", "$API")
VOLATILE = {"id", "name", "message", "createdAt", "startedAt", "finishedAt", "expiresAt"}
PAIR = re.compile(r'"([A-Za-z_$]+)":"([^"]*)"')


def sh_blocks() -> list[list[str]]:
    """The ``sh`` blocks of the README and the API page, as lists of logical lines (continuations joined)."""
    text = "\n".join(page.read_text(encoding="utf-8") for page in EXAMPLE_PAGES)
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [block.replace("\\\n", " ").splitlines() for block in blocks]


def curl_examples() -> list[tuple[str, list[str]]]:
    """(curl command, the README's answer lines after it) for every curl line of the public API.

    The admin API's lines (``$A/...``, uploads of local files) are exercised by tests/test_admin_api.py.
    """
    out: list[tuple[str, list[str]]] = []
    for lines in sh_blocks():
        for line in lines:
            if line.startswith("curl ") and "$A/" in line:
                continue
            if line.startswith("curl "):
                out.append((line, []))
            elif line.startswith("# ") and out and line[2:].lstrip().startswith(("{", '"')):
                out[-1][1].append(line[2:])
    return out


def unquoted_dollar_keys(line: str) -> list[str]:
    """``$basic_userId``-style names in ``line`` that a POSIX shell would expand (not in '...', not \\$)."""
    found, quote, i = [], "", 0
    while i < len(line):
        c = line[i]
        if c == "\\" and quote != "'":
            i += 2
            continue
        if c in "'\"" and (not quote or quote == c):
            quote = "" if quote else c
        elif c == "$" and quote != "'":
            name = re.match(r"[A-Za-z_]\w*", line[i + 1 :])
            if name and name.group() in ("basic_userId", "anonymous_user"):
                found.append(name.group())
        i += 1
    return found


def test_no_shell_example_lets_the_shell_expand_an_identity_key() -> None:
    bad = [line for lines in sh_blocks() for line in lines if not line.startswith("#") and unquoted_dollar_keys(line)]
    assert not bad, "quote these with '...' or write \\$:\n" + "\n".join(bad)


def _parse(command: str, last_job: str, last_uri: str) -> tuple[str, str, str | None]:
    """(method, path + query, body) of one README curl line."""
    words = shlex.split(command, comments=True)[1:]
    method, body, url = "GET", None, ""
    it = iter(words)
    for word in it:
        if word in ("-X", "--request"):
            method = next(it)
        elif word in ("-d", "--data-raw"):
            body = next(it)
            method = "POST" if method == "GET" else method
        elif word in ("-H", "--header", "-o"):
            next(it)
        elif not word.startswith("-"):
            url = word.replace("\\$", "$")
    for base in BASES:
        if url.startswith(base):
            url = ("/v1/api" if base.endswith("/v1/api") or base == "$API" else "") + url[len(base) :]
            break
    url = re.sub(r"/(kqQeWeGr|Xy12AbCd)\b", "/" + last_job, url)
    url = re.sub(r"file=%2Fjobs%2Fresults%2F\.\.\.$", "file=" + last_uri, url)
    return method, url, body


@pytest.fixture
def demo(app: App) -> Iterator[tuple[TestClient, Worker, str]]:
    token = build_demo(app, users=300)
    with TestClient(create_app(app, run_workers=False)) as client:
        yield client, Worker(app), token


def test_every_readme_curl_example_works_on_the_demo_and_answers_what_the_readme_shows(
    demo: tuple[TestClient, Worker, str],
) -> None:
    client, worker, token = demo
    examples = curl_examples()
    assert len(examples) >= 18  # the seed flow, the family, the extensions
    last_job = last_uri = ""
    for command, shown in examples:
        method, url, body = _parse(command, last_job, last_uri)
        r = client.request(method, url, content=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, f"{command}\n-> {r.status_code} {r.text[:300]}"
        if method == "POST" and "export_jobs" in url:
            last_job = r.json()["id"]
            worker.run_until_empty()
        if r.headers["content-type"].startswith("application/json") and r.json().get("uris"):
            last_uri = r.json()["uris"][0]
        for key, value in PAIR.findall(" ".join(shown)):
            if key not in VOLATILE:
                assert f'"{key}":"{value}"' in r.text, f"{command}\nREADME shows {key}={value!r}; got {r.text[:400]}"
