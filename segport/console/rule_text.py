"""A segment's rule as the console shows it: one line per node, indented by depth, in the page's language —
property leaves as ``key op value``, event conditions in words (did / did not, the measure, the window, the
order of a sequence, the drop-off). The rule was checked when the segment was stored; a node this module does
not know how to say is shown as its JSON. A computed tag's definition (docs/tags.md) is said the same way
(:func:`tag_lines`): its type and what it takes, the events it reads, a HORIZONTAL tag's source and layers."""

from __future__ import annotations

import json
from typing import Any

_OPS = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "and": "all of",
        "or": "any of",
        "not": "not",
        "did": "did {event}",
        "where": "where {where}",
        "count": "count",
        "distinct_days": "distinct days",
        "sum": "sum of {a}",
        "avg": "average of {a}",
        "min": "smallest {a}",
        "max": "largest {a}",
        "distinct": "distinct values of {a}",
        "between": "between {low} and {high}",
        "sequence": "did in order: {steps}",
        "max_gap": "each within {d} of the one before",
        "drop_off": "did {event}, not followed by {then} within {d}",
        "last_days": "in the last {n} days",
        "last_hours": "in the last {n} hours",
        "between_time": "from {start} to {end}",
        "since": "since {start}",
        "minutes": "{n} minutes",
        "hours": "{n} hours",
        "days": "{n} days",
        "first": "the earliest value of {a}",
        "last": "the latest value of {a}",
        "most_frequent": "the most frequent value of {a}",
        "layers": "layers of {source}",
        "layers_of": "layers of",
        "rest": "every other value",
        "sep": ", ",
    },
    "zh": {
        "and": "同时满足",
        "or": "满足任一",
        "not": "不满足",
        "did": "做过 {event}",
        "where": "满足 {where}",
        "count": "次数",
        "distinct_days": "天数",
        "sum": "{a} 总和",
        "avg": "{a} 平均值",
        "min": "{a} 最小值",
        "max": "{a} 最大值",
        "distinct": "{a} 去重数",
        "between": "介于 {low} 和 {high}",
        "sequence": "依次做过：{steps}",
        "max_gap": "相邻两步间隔不超过 {d}",
        "drop_off": "做过 {event}，之后 {d} 内未做 {then}",
        "last_days": "最近 {n} 天",
        "last_hours": "最近 {n} 小时",
        "between_time": "{start} 至 {end}",
        "since": "自 {start} 起",
        "minutes": "{n} 分钟",
        "hours": "{n} 小时",
        "days": "{n} 天",
        "first": "最早的 {a}",
        "last": "最近的 {a}",
        "most_frequent": "出现最多的 {a}",
        "layers": "{source} 分层",
        "layers_of": "分层依据",
        "rest": "其余的值",
        "sep": "，",
    },
}


def rule_lines(rule: Any, lang: str = "en") -> list[tuple[int, str]]:
    """``(depth, text)`` per node of ``rule``, in document order."""
    words = _WORDS.get(lang, _WORDS["en"])
    out: list[tuple[int, str]] = []
    _node(rule, 0, words, out)
    return out


def tag_lines(definition: Any, lang: str = "en") -> list[tuple[int, str]]:
    """``(depth, text)`` per line of a computed tag's definition: its type and what it takes, then the events it
    reads (a HORIZONTAL tag: its source, then one line per layer). Checked when the tag was stored; a part this
    function does not know how to say is shown as its JSON."""
    w = _WORDS.get(lang, _WORDS["en"])
    out: list[tuple[int, str]] = []
    try:
        _tag(definition, 0, w, out)
    except (KeyError, TypeError, ValueError, AttributeError):
        return [(0, _json(definition))]
    return out


def _tag(defn: dict[str, Any], depth: int, w: dict[str, str], out: list[tuple[int, str]]) -> None:
    kind = defn.get("type", "AGGREGATED")
    if kind == "HORIZONTAL":
        source = defn["source"]
        if isinstance(source, str):
            out.append((depth, f"{kind}: {w['layers'].format(source=source)}"))
        else:
            out.append((depth, f"{kind}: {w['layers_of']}"))
            _tag(source, depth + 1, w, out)
        for layer in defn["layers"]:
            bound = f"≥ {_json(layer['gte'])}" if "gte" in layer else w["rest"]
            out.append((depth + 1, f"{layer['name']}: {bound}"))
        return
    if kind == "AGGREGATED":
        what = _measure(defn.get("measure", "count"), w)
    else:
        pick = defn["pick"]
        what = w[pick].format(a=defn["attribute"])
    out.append((depth, f"{kind}: {what}"))
    out.append((depth + 1, w["sep"].join([w["did"].format(event=_step(defn, w)), *_time(defn, w)])))


def _node(rule: Any, depth: int, w: dict[str, str], out: list[tuple[int, str]]) -> None:
    if isinstance(rule, dict) and len(rule) == 1 and isinstance(rule.get("and", rule.get("or")), list):
        ((name, children),) = rule.items()
        out.append((depth, w[name]))
        for child in children:
            _node(child, depth + 1, w, out)
        return
    if isinstance(rule, dict) and len(rule) == 1 and "not" in rule:
        out.append((depth, w["not"]))
        _node(rule["not"], depth + 1, w, out)
        return
    try:
        out.append((depth, _leaf(rule, w)))
    except (KeyError, TypeError, ValueError, AttributeError):
        out.append((depth, _json(rule)))


def _leaf(rule: dict[str, Any], w: dict[str, str]) -> str:
    if "sequence" in rule:
        steps = " → ".join(_step(s, w) for s in rule["sequence"])
        parts = [w["sequence"].format(steps=steps)]
        if "max_gap" in rule:
            parts.append(w["max_gap"].format(d=_duration(rule["max_gap"], w)))
        return w["sep"].join(parts + _time(rule, w))
    if "event" in rule:
        if "not_followed_by" in rule:
            then = rule["not_followed_by"]
            text = w["drop_off"].format(event=_step(rule, w), then=_step(then, w), d=_duration(then["within"], w))
            return w["sep"].join([text, *_time(rule, w)])
        parts = [w["did"].format(event=_step(rule, w))]
        measure, op, value = rule.get("measure", "count"), rule.get("op", "gte"), rule.get("value", 1)
        if (measure, op, value) != ("count", "gte", 1):
            parts.append(f"{_measure(measure, w)} {_comparison(op, value, w)}")
        return w["sep"].join(parts + _time(rule, w))
    if "key" in rule:
        op = rule["op"]
        if op in ("is_null", "not_null"):
            return f"{rule['key']} {op}"
        return f"{rule['key']} {_OPS.get(op, op)} {_json(rule.get('value'))}"
    raise ValueError("not a rule node")


def _step(step: dict[str, Any], w: dict[str, str]) -> str:
    text = str(step["event"])
    if step.get("where") is not None:
        text += " (" + w["where"].format(where=_where(step["where"])) + ")"
    return text


def _where(rule: Any) -> str:
    """A step's ``where`` on one line."""
    if isinstance(rule, dict) and len(rule) == 1 and isinstance(rule.get("and", rule.get("or")), list):
        ((name, children),) = rule.items()
        return "(" + f" {name} ".join(_where(c) for c in children) + ")"
    if isinstance(rule, dict) and len(rule) == 1 and "not" in rule:
        return f"not {_where(rule['not'])}"
    if isinstance(rule, dict) and "key" in rule and "op" in rule:
        if rule["op"] in ("is_null", "not_null"):
            return f"{rule['key']} {rule['op']}"
        return f"{rule['key']} {_OPS.get(rule['op'], rule['op'])} {_json(rule.get('value'))}"
    return _json(rule)


def _measure(measure: Any, w: dict[str, str]) -> str:
    if isinstance(measure, str):
        return w[measure]
    ((kind, attribute),) = measure.items()
    return w[kind].format(a=attribute)


def _comparison(op: str, value: Any, w: dict[str, str]) -> str:
    if op == "between":
        low, high = value
        return w["between"].format(low=_json(low), high=_json(high))
    return f"{_OPS[op]} {_json(value)}"


def _time(rule: dict[str, Any], w: dict[str, str]) -> list[str]:
    if "time" not in rule:
        return []
    ((kind, arg),) = rule["time"].items()
    if kind == "between":
        return [w["between_time"].format(start=arg[0], end=arg[1])]
    if kind == "since":
        return [w["since"].format(start=arg)]
    return [w[kind].format(n=arg)]


def _duration(obj: dict[str, Any], w: dict[str, str]) -> str:
    ((unit, n),) = obj.items()
    return w[unit].format(n=n)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
