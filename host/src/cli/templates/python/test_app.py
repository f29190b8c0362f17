"""Tests of the connector in plain Python against a fake of the API (./test.sh).

componentize-py generates the bindings (`wit_world`, `componentize_py_types`)
only when it builds the component, so small fakes stand in for them here: the
fake `http.send` keeps what was sent in SENT and answers from REPLIES.
"""

import json
import sys
import types as pytypes
import unittest
from types import SimpleNamespace

SENT = []
REPLIES = []


class Err(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


class Record:
    """Any generated record or variant: it keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.__dict__.update(kwargs)


class Generated(type):
    """A generated type: an unknown attribute is an enum case (its name)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return name


def fake_module(name):
    module = pytypes.ModuleType(name)
    module.__getattr__ = lambda attr: Generated(attr, (Record,), {})
    return module


def send(request):
    SENT.append(request)
    return REPLIES.pop(0)


def install_fakes():
    sys.modules["componentize_py_types"] = pytypes.ModuleType("componentize_py_types")
    sys.modules["componentize_py_types"].Err = Err
    world = pytypes.ModuleType("wit_world")
    imports = pytypes.ModuleType("wit_world.imports")
    exports = fake_module("wit_world.exports")
    for name in ["http", "log", "manifest", "types", "webhooks"]:
        setattr(imports, name, fake_module(name))
    imports.http.send = send
    imports.log.log = lambda level, message: None
    exports.plugin = fake_module("plugin")
    world.imports, world.exports = imports, exports
    sys.modules.update({"wit_world": world, "wit_world.imports": imports, "wit_world.exports": exports})


install_fakes()
import app  # noqa: E402


def reply(status, body):
    return SimpleNamespace(status=status, headers=[], body=json.dumps(body).encode())


CTX = SimpleNamespace(
    connection=SimpleNamespace(id="conn_test", properties=json.dumps({"base_url": "https://api.test/"})),
    env=[],
    trace_id="test",
)


class Connector(unittest.TestCase):
    def setUp(self):
        SENT.clear()
        REPLIES.clear()

    def test_manifest_declares_one_of_each(self):
        manifest = app.Plugin().describe()
        self.assertEqual(manifest.key, "@@name@@")
        self.assertEqual([a.args[0] for a in manifest.actions], ["create-item"])
        self.assertEqual([t.args[0] for t in manifest.triggers], ["new-item", "item-event"])

    def test_create_item_posts_once_per_idempotency_key(self):
        REPLIES.append(reply(201, {"id": 7, "name": "a"}))
        output = app.Plugin().perform(CTX, "create-item", '{"name": "a"}', "key-1")
        self.assertEqual(json.loads(output), {"id": 7, "name": "a"})
        method, url, headers, body, _ = SENT[0].args
        self.assertEqual((method, url), ("POST", "https://api.test/items"))
        self.assertIn(("Idempotency-Key", "key-1"), [h.args for h in headers])
        self.assertEqual(json.loads(body), {"name": "a"})

    def test_poll_turns_a_page_into_events(self):
        REPLIES.append(reply(200, {"items": [{"id": 1}, {"id": "b2"}], "next": "c3"}))
        events, cursor = app.Plugin().poll(CTX, "new-item", "{}", "c0").args
        self.assertEqual(SENT[0].args[1], "https://api.test/items?since=c0")
        self.assertEqual([e.args[0] for e in events], ["1", "b2"])
        self.assertEqual(cursor, "c3")

    def test_server_errors_are_transient(self):
        REPLIES.append(reply(503, {"error": "down"}))
        with self.assertRaises(Err) as raised:
            app.Plugin().poll(CTX, "new-item", "{}", None)
        self.assertEqual(type(raised.exception.value).__name__, "ConnectorError_Transient")


if __name__ == "__main__":
    unittest.main()
