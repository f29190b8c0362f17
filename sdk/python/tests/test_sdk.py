"""Unit tests of switchyard_sdk with fakes of the bindings componentize-py
generates (`wit_world`, `componentize_py_types`), so they run in plain Python:
python3 -m unittest discover -s sdk/python/tests"""

import json
import sys
import types as pytypes
import unittest
from pathlib import Path


class Err(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


class Record:
    """Any generated record or variant: its arguments, in order."""

    def __init__(self, *args):
        self.args = args

    def __getattr__(self, name):
        fields = {"status": 0, "headers": 1, "body": 2, "value": 0, "name": 0}
        if name in fields and len(self.args) > fields[name]:
            return self.args[fields[name]]
        raise AttributeError(name)


def fake_module(name):
    module = pytypes.ModuleType(name)
    module.__getattr__ = lambda attr: type(attr, (Record,), {})
    return module


SENT = []
REPLIES = []


def install_fakes():
    sys.modules["componentize_py_types"] = pytypes.ModuleType("componentize_py_types")
    sys.modules["componentize_py_types"].Err = Err
    world = pytypes.ModuleType("wit_world")
    imports = pytypes.ModuleType("wit_world.imports")
    for name in ["http", "log", "manifest", "types", "webhooks"]:
        setattr(imports, name, fake_module(name))
    http = imports.http

    def send(request):
        SENT.append(request)
        return REPLIES.pop(0)

    http.send = send
    world.imports = imports
    sys.modules["wit_world"] = world
    sys.modules["wit_world.imports"] = imports
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


install_fakes()
import switchyard_sdk as kit  # noqa: E402


def reply(status, body=b"", headers=()):
    return Record(status, [Record(n, v) for n, v in headers], body)


class ErrorsByStatus(unittest.TestCase):
    def test_status_to_error_kind(self):
        table = [
            (200, None),
            (404, "ConnectorError_InvalidInput"),
            (401, "ConnectorError_Auth"),
            (403, "ConnectorError_Auth"),
            (408, "ConnectorError_Transient"),
            (503, "ConnectorError_Transient"),
            (429, "ConnectorError_RateLimited"),
        ]
        for status, kind in table:
            response = kit.Response("GET", "https://api.test/x", reply(status, b"nope"))
            if kind is None:
                self.assertIs(response.error_for_status(), response)
                continue
            with self.assertRaises(Err) as raised:
                response.error_for_status()
            self.assertEqual(type(raised.exception.value).__name__, kind, status)

    def test_retry_after(self):
        self.assertEqual(kit.retry_after_ms(None), kit.DEFAULT_RETRY_AFTER_MS)
        self.assertEqual(kit.retry_after_ms("2"), 2000)
        self.assertEqual(kit.retry_after_ms("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0), 6000)
        self.assertEqual(kit.retry_after_ms("soon"), kit.DEFAULT_RETRY_AFTER_MS)


class Requests(unittest.TestCase):
    def test_send_encodes_query_and_json(self):
        SENT.clear()
        REPLIES.append(reply(200, b'{"id": "42"}'))
        response = kit.send("POST", "https://api.test/items", query=[("a", "b c")], json_body={"n": 1})
        self.assertEqual(response.json(), {"id": "42"})
        method, url, headers, body, _ = SENT[0].args
        self.assertEqual((method, url), ("POST", "https://api.test/items?a=b+c"))
        self.assertEqual(json.loads(body), {"n": 1})
        self.assertIn(("content-type", "application/json"), [h.args for h in headers])

    def test_path_segment_keeps_one_segment(self):
        self.assertEqual(kit.path_segment("a/../b c"), "a%2F..%2Fb%20c")

    def test_schema_is_canonical(self):
        self.assertEqual(kit.schema({"b": 1, "a": [2]}), '{"a":[2],"b":1}')


if __name__ == "__main__":
    unittest.main()
