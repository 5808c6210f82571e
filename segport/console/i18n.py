"""The console's words in English and Chinese, and how a request picks its language.

Error messages come from the services and stay as they are (English, with their stable code), so what the
console shows is exactly what the API answers.
"""

from __future__ import annotations

LANGS = ("en", "zh")
DEFAULT = "en"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "app": "segport console",
        "skip": "Skip to content",
        "nav.segments": "Segments",
        "nav.jobs": "Recent jobs",
        "nav.projects": "Projects",
        "nav.docs": "API docs",
        "nav.events": "Events",
        "events.title": "Events",
        "events.names": "Event names",
        "events.none": "No events yet: send them to the collect endpoint or import a file (segport events import).",
        "events.attributes": "Event attributes",
        "events.attributes.none": "No event attribute yet.",
        "events.sources": "Data sources",
        "events.sources.none": "No data source yet (segport datasources add).",
        "events.collect_key": "Collection key (the SDKs' project key)",
        "col.attrs": "Attributes",
        "col.type": "Type",
        "col.declared": "Declared or seen",
        "col.source": "dataSourceId",
        "col.revoked": "Revoked",
        "events.declared": "declared",
        "events.seen": "seen",
        "lang.switch": "中文",
        "lang.label": "Language",
        "signin.title": "Sign in",
        "signin.intro": "Sign in with a project token (segport token create --project ...). "
        "The token is checked once; the browser keeps only a session cookie.",
        "signin.token": "Project token",
        "signin.submit": "Sign in",
        "signout": "Sign out",
        "signedout": "You are signed out.",
        "projects.title": "Projects",
        "projects.intro": "This token sees these projects.",
        "segments.title": "Segments",
        "segments.search": "Search segments",
        "segments.search.button": "Search",
        "segments.none": "No segment matches.",
        "col.name": "Name",
        "col.key": "Key",
        "col.size": "Users",
        "col.stage": "Detector",
        "col.computed": "Last computed",
        "col.job": "Job",
        "col.target": "Segment",
        "col.created": "Submitted",
        "col.expires": "Expires",
        "col.rows": "Rows",
        "col.bytes": "Size",
        "segment.picker": "Columns to export",
        "segment.rule": "Rule",
        "segment.rule.json": "The rule as JSON",
        "segment.idlist": "An id list, matched on {identity}.",
        "segment.picker.help": "gio_id always comes first; the others follow in the order listed here.",
        "segment.filter": "Filter columns",
        "segment.selected": "selected",
        "segment.cap": "At most {cap} keys per export.",
        "segment.identities": "Identities",
        "segment.properties": "User properties",
        "segment.tags": "Tags",
        "segment.options": "File",
        "segment.format": "Format",
        "segment.format.csv": "CSV",
        "segment.format.json": "JSON Lines",
        "segment.header": "CSV header",
        "segment.header.key": "Keys (usr_gender)",
        "segment.header.name": "Display names (性别)",
        "segment.bom": "Start the CSV with a byte-order mark (for Excel)",
        "segment.gzip": "Compress with gzip",
        "segment.export": "Export",
        "segment.preview": "Update preview",
        "segment.preview.title": "Preview: the first {n} of {total} members",
        "segment.preview.cols": "The preview shows the first {n} chosen columns.",
        "segment.preview.empty": "This segment has no members.",
        "job.title": "Export job",
        "job.stage": "Stage",
        "job.elapsed": "Elapsed",
        "job.rows": "Rows",
        "job.bytes": "Size",
        "job.expires": "Expires",
        "job.files": "Files",
        "job.download": "Download",
        "job.cancel": "Cancel",
        "job.error": "Error",
        "job.nofiles": "The files appear here when the job finishes.",
        "jobs.title": "Recent jobs",
        "jobs.none": "No export yet.",
        "error.title": "Something is wrong",
        "error.back": "Back",
        "stage.NONE": "Queued",
        "stage.RUNNING": "Running",
        "stage.FINISH": "Finished",
        "stage.ERROR": "Failed",
        "stage.EXPIRED": "Expired",
        "csrf.refused": "The form expired or did not come from this console. Reload the page and try again.",
    },
    "zh": {
        "app": "segport 控制台",
        "skip": "跳到正文",
        "nav.segments": "群体",
        "nav.jobs": "最近的任务",
        "nav.projects": "项目",
        "nav.docs": "API 文档",
        "nav.events": "事件",
        "events.title": "事件",
        "events.names": "事件名",
        "events.none": "还没有事件：通过采集接口发送，或导入文件（segport events import）。",
        "events.attributes": "事件属性",
        "events.attributes.none": "还没有事件属性。",
        "events.sources": "数据源",
        "events.sources.none": "还没有数据源（segport datasources add）。",
        "events.collect_key": "采集密钥（SDK 的 project key）",
        "col.attrs": "属性",
        "col.type": "类型",
        "col.declared": "声明或发现",
        "col.source": "dataSourceId",
        "col.revoked": "已撤销",
        "events.declared": "声明",
        "events.seen": "发现",
        "lang.switch": "English",
        "lang.label": "语言",
        "signin.title": "登录",
        "signin.intro": "用项目令牌登录（segport token create --project ...）。令牌只校验一次，浏览器只保存会话 Cookie。",
        "signin.token": "项目令牌",
        "signin.submit": "登录",
        "signout": "退出",
        "signedout": "已退出登录。",
        "projects.title": "项目",
        "projects.intro": "此令牌可以访问以下项目。",
        "segments.title": "群体",
        "segments.search": "搜索群体",
        "segments.search.button": "搜索",
        "segments.none": "没有匹配的群体。",
        "col.name": "名称",
        "col.key": "标识",
        "col.size": "用户数",
        "col.stage": "计算状态",
        "col.computed": "最近计算",
        "col.job": "任务",
        "col.target": "群体",
        "col.created": "提交时间",
        "col.expires": "过期时间",
        "col.rows": "行数",
        "col.bytes": "大小",
        "segment.picker": "导出的列",
        "segment.rule": "规则",
        "segment.rule.json": "规则的 JSON",
        "segment.idlist": "ID 名单，按 {identity} 匹配。",
        "segment.picker.help": "gio_id 总在第一列，其余按此处列出的顺序排列。",
        "segment.filter": "筛选列",
        "segment.selected": "已选",
        "segment.cap": "每次导出最多 {cap} 个字段。",
        "segment.identities": "身份标识",
        "segment.properties": "用户属性",
        "segment.tags": "标签",
        "segment.options": "文件",
        "segment.format": "格式",
        "segment.format.csv": "CSV",
        "segment.format.json": "JSON Lines",
        "segment.header": "CSV 表头",
        "segment.header.key": "字段标识（usr_gender）",
        "segment.header.name": "显示名称（性别）",
        "segment.bom": "CSV 文件以 BOM 开头（适合 Excel）",
        "segment.gzip": "gzip 压缩",
        "segment.export": "导出",
        "segment.preview": "更新预览",
        "segment.preview.title": "预览：{total} 个成员中的前 {n} 个",
        "segment.preview.cols": "预览显示所选的前 {n} 列。",
        "segment.preview.empty": "该群体没有成员。",
        "job.title": "导出任务",
        "job.stage": "状态",
        "job.elapsed": "耗时",
        "job.rows": "行数",
        "job.bytes": "大小",
        "job.expires": "过期时间",
        "job.files": "文件",
        "job.download": "下载",
        "job.cancel": "取消",
        "job.error": "错误",
        "job.nofiles": "任务完成后文件会显示在这里。",
        "jobs.title": "最近的任务",
        "jobs.none": "还没有导出任务。",
        "error.title": "出错了",
        "error.back": "返回",
        "stage.NONE": "排队中",
        "stage.RUNNING": "运行中",
        "stage.FINISH": "已完成",
        "stage.ERROR": "失败",
        "stage.EXPIRED": "已过期",
        "csrf.refused": "表单已过期或并非来自本控制台。请刷新页面后重试。",
    },
}


def pick(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """``?lang=`` first, then the language chosen before (cookie), then the browser's preference."""
    for choice in (query, cookie):
        if choice in LANGS:
            return choice
    return from_accept_language(accept_language or "")


def from_accept_language(header: str) -> str:
    """The first language of ``Accept-Language`` (by q-value) that the console speaks."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower()))
    for neg_q, _, tag in sorted(ranked):
        primary = tag.split("-")[0]
        if neg_q < 0 and primary in LANGS:
            return primary
    return DEFAULT


def translator(lang: str) -> dict[str, str]:
    return STRINGS[lang]
