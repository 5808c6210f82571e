"""`segport demo`: a project shaped like the seed's example, with synthetic users that look real."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from segport.app import App
from segport.services.data import SegmentSpec, catalog_entry

PROJECT = "WlGk4Daj"
SEGMENT = "seg_51activity"

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

SEGMENT_RULE = {
    "and": [
        {"key": "usr_age", "op": "between", "value": [18, 45]},
        {"key": "usr_city", "op": "in", "value": ["北京", "上海", "广州", "深圳", "杭州", "成都"]},
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


def build_demo(app: App, users: int = 100_000) -> str:
    """Create the demo project, catalogue, users and segment; return a new token for it."""
    data = app.data
    if PROJECT not in {p.id for p in app.meta.projects()}:
        app.meta.create_project(PROJECT, "示例项目")
    data.add_catalog_entries(PROJECT, [catalog_entry(k, n, t) for k, n, t in CATALOG])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "users.parquet"
        generate_users(path, users)
        data.import_users(PROJECT, path)
    if SEGMENT not in {s.key for s in app.meta.segments(PROJECT)[0]}:
        data.create_segment(
            PROJECT,
            SegmentSpec(
                key=SEGMENT,
                name="51活动用户",
                rule=SEGMENT_RULE,
                description="五一活动目标人群：18-45岁，一线及新一线城市",
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
