"""Events to protobuf: attributes set in place equal what Struct.update() would build."""

from __future__ import annotations

from google.protobuf import struct_pb2

from agent.core.events import FileEvent
from agent.wire import _plain, encode_event


def test_attributes_of_every_shape_encode_as_struct_update_would() -> None:
    attributes = {"attribution": "fanotify", "open_ms": 0.125, "count": 3, "rescan": True, "nothing": None,
                  "source_paths": ["/s/a", "/s/b"], "nested": {"n": {"m": [1, "two", {"x": False}]}},
                  "members": {"b", "a"}, "pair": (1, 2), 7: "a key that is not text", "empty": [],
                  "names": ("x", "y")}
    event = FileEvent(kind="file.read", time_unix_ns=1, path="/s/a", attributes=attributes)
    msg = encode_event(event, 42)
    expected = struct_pb2.Struct()
    expected.update(_plain(event.attributes))
    assert msg.attributes == expected and msg.seq == 42 and msg.path == "/s/a"
    assert list(msg.attributes.fields["members"].list_value.values) == [
        struct_pb2.Value(string_value="a"), struct_pb2.Value(string_value="b")]
