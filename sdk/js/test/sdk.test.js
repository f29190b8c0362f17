// Unit tests of the SDK under node, the WIT imports faked (test/fakes/):
// `npm test` in sdk/js.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as kit from '../src/index.js';
import { replies, sent } from './fakes/http.js';

const reply = (status, body = '', headers = []) => ({
  status,
  headers,
  body: new TextEncoder().encode(body),
});

test('a status maps to its connector error', () => {
  const table = [
    [200, undefined],
    [404, 'invalid-input'],
    [401, 'auth'],
    [403, 'auth'],
    [408, 'transient'],
    [503, 'transient'],
    [429, 'rate-limited'],
  ];
  for (const [status, tag] of table) {
    const response = new kit.Response('GET', 'https://api.test/x', reply(status, 'nope'));
    if (tag === undefined) {
      assert.equal(response.errorForStatus(), response);
      continue;
    }
    assert.throws(() => response.errorForStatus(), (e) => e.payload.tag === tag, `${status}`);
  }
});

test('Retry-After in seconds or as a date', () => {
  assert.equal(kit.retryAfterMs(undefined), kit.DEFAULT_RETRY_AFTER_MS);
  assert.equal(kit.retryAfterMs('2'), 2000);
  assert.equal(kit.retryAfterMs('Thu, 01 Jan 1970 00:00:10 GMT', 4000), 6000);
  assert.equal(kit.retryAfterMs('soon'), kit.DEFAULT_RETRY_AFTER_MS);
});

test('send encodes the query and a JSON body', () => {
  replies.push(reply(200, '{"id":"42"}'));
  const url = kit.withQuery('https://api.test/items', { a: 'b c', skip: undefined });
  const response = kit.send('POST', url, { json: { n: 1 } });
  assert.deepEqual(response.json(), { id: '42' });
  const request = sent.at(-1);
  assert.equal(request.url, 'https://api.test/items?a=b%20c');
  assert.deepEqual(JSON.parse(new TextDecoder().decode(request.body)), { n: 1 });
  assert.ok(request.headers.some((h) => h.name === 'content-type' && h.value === 'application/json'));
});

test('a transport error keeps its kind', () => {
  const error = new Error('host');
  error.payload = { tag: 'timeout', val: 'after 10 s' };
  replies.push(error);
  assert.throws(
    () => kit.send('GET', 'https://api.test/slow'),
    (e) => e.payload.tag === 'transient' && e.message.includes('timed out'),
  );
});
