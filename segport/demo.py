"""`segport demo`: a project shaped like the seed's example, with synthetic users that look real."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from segport.app import App
from segport.services.data import SegmentSpec, catalog_entry
from segport.services.events import EventService

PROJECT = "WlGk4Daj"
SEGMENT = "seg_51activity"
TIME_ZONE = "Asia/Shanghai"

CATALOG = [
    ("id_$basic_userId", "用户ID", "string"),
    ("id_$anonymous_user", "匿名用户ID", "string[]"),
    ("usr_gender", "性别", "string"),
    ("usr_name", "姓名", "string"),
    ("usr_city", "城市", "string"),
    ("usr_age", "年龄", "int"),
    ("usr_member_since", "注册日期", "date"),
    ("usr_total_spend", "累计消费", "double"),
    ("tag_rfm", "会员等级", "string"),
    ("tag_channel", "首次渠道", "string"),
]

BIG_CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都"]
CAMPAIGN = "51"  # the activity page's campaign attribute
DAY_MS = 86_400_000
HISTORY_DAYS = 60  # logins, carts and payments spread over the days before the demo is built


def campaign_days(now_ms: int) -> tuple[str, str]:
    """The May-1 holiday (May 1 to 5, in the project's time zone) the demo's activity ran: this year's once it
    is over, else last year's."""
    today = dt.datetime.fromtimestamp(now_ms / 1000, ZoneInfo(TIME_ZONE)).date()
    year = today.year if today > dt.date(today.year, 5, 5) else today.year - 1
    return f"{year}-05-01", f"{year}-05-05"


def segment_rule(now_ms: int) -> dict[str, Any]:
    """seg_51activity: users of the big cities who opened the May-1 activity page during the holiday."""
    start, end = campaign_days(now_ms)
    return {
        "and": [
            {
                "event": "activity_view",
                "where": {"key": "campaign", "op": "eq", "value": CAMPAIGN},
                "time": {"between": [start, end]},
            },
            {"key": "usr_city", "op": "in", "value": BIG_CITIES},
        ]
    }


_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀英",
    "华",
    "慧",
]
_CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安", "南京", "重庆", "苏州", "天津"]
_RFM = ["高", "中", "低"]
_CHANNELS = ["应用商店", "微信小程序", "抖音广告", "线下门店", "官网"]


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + s + "'" for s in items) + "]"


def generate_users(path: Path, users: int, seed: int = 51) -> None:
    """Write ``users`` synthetic profiles to a Parquet file (about 5-10% nulls per property)."""
    h = f"hash(i, {seed})"
    query = f"""
    SELECT
        'C' || lpad(CAST(i AS VARCHAR), 7, '0') AS "id_$basic_userId",
        CASE WHEN {h} % 5 = 0 THEN NULL
             ELSE list_transform(range(1 + CAST({h} % 3 AS INT)),
                                 lambda j: substr(md5(CAST(i * 7 + j AS VARCHAR)), 1, 16)) END AS "id_$anonymous_user",
        CASE WHEN {h} % 13 = 0 THEN NULL WHEN {h} % 2 = 0 THEN '男' ELSE '女' END AS usr_gender,
        {_sql_list(list(_SURNAMES))}[1 + CAST({h} % {len(_SURNAMES)} AS INT)]
            || {_sql_list(_GIVEN)}[1 + CAST(({h} // 7) % {len(_GIVEN)} AS INT)] AS usr_name,
        CASE WHEN {h} % 17 = 0 THEN NULL
             ELSE {_sql_list(_CITIES)}[1 + CAST(({h} // 11) % {len(_CITIES)} AS INT)] END AS usr_city,
        CASE WHEN {h} % 19 = 0 THEN NULL ELSE 16 + CAST(({h} // 13) % 50 AS INT) END AS usr_age,
        DATE '2015-01-01' + CAST(({h} // 17) % 3600 AS INT) AS usr_member_since,
        CASE WHEN {h} % 10 = 0 THEN NULL ELSE round((({h} // 19) % 500000) / 100.0, 2) END AS usr_total_spend,
        CASE WHEN {h} % 9 = 0 THEN NULL ELSE {_sql_list(_RFM)}[1 + CAST(({h} // 23) % 3 AS INT)] END AS tag_rfm,
        CASE WHEN {h} % 7 = 0 THEN NULL
             ELSE {_sql_list(_CHANNELS)}[1 + CAST(({h} // 29) % {len(_CHANNELS)} AS INT)] END AS tag_channel
    FROM range(1, {users} + 1) t(i)
    """
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({query}) TO '{path}' (FORMAT PARQUET)")
    finally:
        con.close()


def generate_events(path: Path, users: int, now_ms: int, seed: int = 51) -> None:
    """Write the events the demo's users sent to a Parquet file (``event``, ``time`` in ms, ``userId``,
    ``amount``, ``campaign``): logins, add-to-carts and payments (``amount``) over the last
    :data:`HISTORY_DAYS` days, and views of the May-1 activity page (``campaign`` 51) during the holiday by
    about 60% of the users. About 4 events a user."""
    start, _ = campaign_days(now_ms)
    holiday_ms = int(dt.datetime.fromisoformat(start).replace(tzinfo=ZoneInfo(TIME_ZONE)).timestamp() * 1000)
    span = HISTORY_DAYS * DAY_MS

    def spread(
        kind: int, events: str, share: int, times: str, amount: str = "NULL::DOUBLE", campaign: str = "NULL"
    ) -> str:
        h = f"hash(i, {seed}, {kind})"
        return f"""
        SELECT '{events}' AS event, {times} AS time, 'C' || lpad(CAST(i AS VARCHAR), 7, '0') AS "userId",
               {amount} AS amount, {campaign} AS campaign
        FROM range(1, {users} + 1) t(i), range(1 + CAST({h} % 3 AS INT)) r(j)
        WHERE {h} % 10 < {share}"""

    def when(kind: int, base: int, width: int) -> str:
        return f"CAST({base} + hash(i, j, {seed}, {kind}, 't') % {width} AS BIGINT)"

    query = " UNION ALL ".join(
        [
            spread(1, "login", 10, when(1, now_ms - span, span)),
            spread(2, "add_to_cart", 4, when(2, now_ms - span, span)),
            spread(3, "pay", 3, when(3, now_ms - span, span), amount="round(10 + hash(i, j, 'a') % 50000 / 100.0, 2)"),
            spread(4, "activity_view", 6, when(4, holiday_ms, 5 * DAY_MS), campaign=f"'{CAMPAIGN}'"),
        ]
    )
    con = duckdb.connect()
    try:
        con.execute(f"COPY ({query} ORDER BY time) TO '{path}' (FORMAT PARQUET)")
    finally:
        con.close()


def build_demo(app: App, users: int = 100_000, now_ms: int | None = None) -> str:
    """Create the demo project, catalogue, users, their events and the segment; return a new token for it.
    ``now_ms``: the clock the events are generated around (default: now)."""
    data = app.data
    if PROJECT not in {p.id for p in app.meta.projects()}:
        app.meta.create_project(PROJECT, "示例项目", TIME_ZONE)
    data.add_catalog_entries(PROJECT, [catalog_entry(k, n, t) for k, n, t in CATALOG])
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    events = EventService(app.meta, app.engine, data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "users.parquet"
        generate_users(path, users)
        data.import_users(PROJECT, path)
        if not events.catalog.names(PROJECT):  # a demo built again keeps the events it has
            events.declare(PROJECT, "amount", "金额", "double")
            events.declare(PROJECT, "campaign", "活动", "string")
            generate_events(Path(tmp) / "events.parquet", users, now_ms)
            events.import_events(PROJECT, Path(tmp) / "events.parquet")
    if SEGMENT not in {s.key for s in app.meta.segments(PROJECT)[0]}:
        data.create_segment(
            PROJECT,
            SegmentSpec(
                key=SEGMENT,
                name="51活动用户",
                rule=segment_rule(now_ms),
                description="五一活动用户：五一假期浏览过活动页的一线及新一线城市用户",
                creator="demo",
            ),
        )
    _, token = app.meta.create_token([PROJECT], label="demo")
    return token


def curl_examples(base: str, token: str) -> str:
    auth = f"--header 'Authorization: Bearer {token}'"
    url = f"{base}/v1/api/projects/{PROJECT}/segment_profiles/{SEGMENT}/export_jobs"
    return "\n".join(
        [
            "# 1. submit an export (the seed's example 1):",
            f"curl --location --request POST '{url}' \\\n  {auth} \\\n  --header 'Content-Type: application/json' \\\n"
            '  --data-raw \'{"properties": ["ids_$basic_userId", "usr_gender", "tag_rfm"], '
            '"fileFormat": "csv", "csvHeaderType": "key"}\'',
            "# 1b. the seed's example 2 (no properties):",
            f"curl --location --request POST '{url}' {auth} --header 'Content-Type: application/json' "
            "--data-raw '{\"properties\": []}'",
            "# 2. poll the job (put the id from step 1 in place of JOB_ID):",
            f"curl --location --request GET '{base}/v1/api/job/result/JOB_ID' {auth}",
            "# 3. download (put a uri from step 2 in place of URI):",
            f"curl --location '{base}/download?file=URI' {auth} -o UserList.csv",
        ]
    )
