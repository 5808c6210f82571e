"""Run by tests/test_events_sdk.py in the SDK's own venv: GrowingIO's Python SDK (growingio-tracker) sends events
to a served segport through each of its consumers and encoders, unchanged.

argv: server URL, collection key, dataSourceId, what to do ("matrix" or "replay"). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

from growingio_tracker import AsyncBufferedConsumer, BufferedConsumer, DefaultConsumer, GrowingTracker
from growingio_tracker.data_parser import JsonParser
from growingio_tracker.message import CustomEventMessage
from growingio_tracker_protobuf.protobuf_parser import ProtobufParser
from growingio_tracker_snappy.snappy_parser import SnappyParser

URL, KEY, SOURCE, WHAT = sys.argv[1:5]
PARSERS = {
    "json": JsonParser,
    "protobuf": ProtobufParser,
    "snappy": lambda: SnappyParser(crypt_data=False),
    "snappy_xor": lambda: SnappyParser(crypt_data=True),
}
EVENTS_PER_RUN = 5


def consumer(kind: str, parser: object) -> object:
    if kind == "default":
        return DefaultConsumer(KEY, SOURCE, URL, data_parser=parser)
    if kind == "buffered":
        return BufferedConsumer(KEY, SOURCE, URL, data_parser=parser, max_size=2)
    return AsyncBufferedConsumer(KEY, SOURCE, URL, data_parser=parser, flush_after=0.2, max_size=2)


def matrix() -> dict[str, object]:
    sent = []
    for kind in ("default", "buffered", "async"):
        for name, make in PARSERS.items():
            combo = f"{kind}_{name}"
            c = consumer(kind, make())
            tracker = GrowingTracker.consumer(c)
            for i in range(EVENTS_PER_RUN):
                tracker.track_custom_event(
                    "buy",
                    anonymous_id=f"dev-{combo}",
                    login_user_id=f"u-{combo}",
                    attributes={"combo": combo, "i": i, "tags": ["a", "b"]},
                )
            tracker.track_user(
                login_user_key="$email", login_user_id=f"{combo}@example.com", attributes={"tier": "gold"}
            )
            tracker.submit_item("product", f"p-{combo}", {"color": "red"})
            if kind == "buffered":
                c.flush()
            if kind == "async":
                c.flush()
                deadline = time.monotonic() + 10
                while (c._async_events or c._async_buffers["events"]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                c.stop()
            sent.append(combo)
    return {"sent": sent}


def replay() -> dict[str, object]:
    """A retry as the SDK sends it: the same body, the same stm, the same headers, through the SDK's own session."""
    out = {}
    for name, make in PARSERS.items():
        parser = make()
        c = DefaultConsumer(KEY, SOURCE, URL, data_parser=parser)
        message = (
            CustomEventMessage.EventBuilder()
            .set_product_id(KEY)
            .set_data_source_id(SOURCE)
            .set_event_name("retry")
            .set_anonymous_id(f"dev-replay-{name}")
            .set_attributes({"parser": name})
            .build()
        )
        stm = parser.get_timestamp()
        data = parser.get_bytes([message], stm)
        params = parser.get_params(stm=stm)
        results = [
            c.send_data(c.endpoints["collect"], data, params=params, headers=parser.get_headers()) for _ in range(2)
        ]
        out[name] = results
    return out


print(json.dumps(matrix() if WHAT == "matrix" else replay()))
