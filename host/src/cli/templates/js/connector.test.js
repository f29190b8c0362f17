// Tests of the connector under node against a fake of the API (./test.sh):
// the fake `http.send` (./fakes/http.js) keeps what was sent and answers from
// its `replies`.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { plugin } from '../src/connector.js';
import { replies, sent } from './fakes/http.js';

const encoder = new TextEncoder();
const ctx = { connection: { id: 'conn_test', properties: JSON.stringify({ base_url: 'https://api.test/' }) }, env: [], traceId: 'test' };

function reply(status, body) {
  return { status, headers: [], body: encoder.encode(JSON.stringify(body)) };
}

beforeEach(() => {
  sent.length = 0;
  replies.length = 0;
});

test('the manifest declares one action and two triggers', () => {
  const manifest = plugin.describe();
  assert.equal(manifest.key, '@@name@@');
  assert.deepEqual(manifest.actions.map((a) => a.key), ['create-item']);
  assert.deepEqual(manifest.triggers.map((t) => t.key), ['new-item', 'item-event']);
});

test('create-item posts the input with the idempotency key', () => {
  replies.push(reply(201, { id: 7, name: 'a' }));
  const output = plugin.perform(ctx, 'create-item', '{"name": "a"}', 'key-1');
  assert.deepEqual(JSON.parse(output), { id: 7, name: 'a' });
  assert.equal(sent[0].method, 'POST');
  assert.equal(sent[0].url, 'https://api.test/items');
  assert.ok(sent[0].headers.some((h) => h.name === 'Idempotency-Key' && h.value === 'key-1'));
});

test('a poll turns a page into events and a cursor', () => {
  replies.push(reply(200, { items: [{ id: 1 }, { id: 'b2' }], next: 'c3' }));
  const result = plugin.poll(ctx, 'new-item', '{}', 'c0');
  assert.equal(sent[0].url, 'https://api.test/items?since=c0');
  assert.deepEqual(result.events.map((e) => e.id), ['1', 'b2']);
  assert.equal(result.cursor, 'c3');
});

test('server errors are transient', () => {
  replies.push(reply(503, { error: 'down' }));
  assert.throws(() => plugin.poll(ctx, 'new-item', '{}', undefined), (e) => e.payload?.tag === 'transient');
});
