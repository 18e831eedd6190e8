// The transport's wire-format helpers, without Credo: node --test test/
// (@credo-ts/core is stubbed, so this runs with nothing installed).
'use strict'

const assert = require('node:assert')
const crypto = require('node:crypto')
const http = require('node:http')
const Module = require('node:module')
const { test } = require('node:test')

// index.js requires @credo-ts/core for the transport classes only.
const realLoad = Module._load
Module._load = function (request, ...rest) {
  if (request === '@credo-ts/core') {
    return { AgentEventTypes: {}, CredoError: Error, TransportService: class {} }
  }
  return realLoad.call(this, request, ...rest)
}
const { verifySignature, sign, SeqFilter, SocketDockTransportSession } = require('..')
Module._load = realLoad

const BODY = Buffer.from('{"meta": {"connection_id": "ab", "seq": 1}, "message": "hi"}')

test('a signature made the way the spec says verifies', () => {
  const mac = crypto.createHmac('sha256', 'k').update(Buffer.concat([Buffer.from('1700000000.'), BODY])).digest('hex')
  verifySignature('k', `t=1700000000,v1=${mac}`, BODY, 1700000000)
  assert.strictEqual(sign('k', BODY, 1700000000), `t=1700000000,v1=${mac}`)
})

test('five-minute window, both ways', () => {
  const header = sign('s', BODY, 1000)
  verifySignature('s', header, BODY, 1300)
  verifySignature('s', header, BODY, 700)
  assert.throws(() => verifySignature('s', header, BODY, 1301), /window/)
  assert.throws(() => verifySignature('s', header, BODY, 699), /window/)
})

test('wrong secret, altered body, missing or malformed header', () => {
  const header = sign('s', BODY, 1000)
  assert.throws(() => verifySignature('other', header, BODY, 1000), /does not match/)
  assert.throws(() => verifySignature('s', header, Buffer.concat([BODY, Buffer.from(' ')]), 1000), /does not match/)
  for (const bad of [undefined, '', 'garbage', 't=abc,v1=00', 't=1000', 'v1=00', 't=-5,v1=00']) {
    assert.throws(() => verifySignature('s', bad, BODY, 1000))
  }
  assert.throws(() => verifySignature('s', 't=1000,v1=00', BODY, 1000), /does not match/)
})

test('any of several v1 values may match', () => {
  const good = sign('s', BODY, 1000).split('v1=')[1]
  verifySignature('s', `t=1000,v1=${'0'.repeat(64)},v1=${good}`, BODY, 1000)
  verifySignature('s', `t=1000, v1=${good.toUpperCase()}`, BODY, 1000)
})

test('seq filter drops retries, keeps messages without seq', () => {
  const f = new SeqFilter()
  assert.deepStrictEqual([1, 2, 2, 3, 1, 3, 4].map((s) => f.take(s)), [true, true, false, true, false, false, true])
  const g = new SeqFilter()
  assert.ok(g.take(undefined))
  assert.ok(g.take(null))
  assert.ok(g.take(1))
})

test('a reply SocketDock refuses is logged at warn, and the send throws', async () => {
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(req.headers.authorization === 'Bearer right' ? 200 : 401)
      res.end()
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const warned = []
    const transport = {
      apiToken: 'wrong',
      sendTimeoutMs: 5000,
      logger: { warn: (line) => warned.push(line) },
      drop: () => {},
    }
    const url = `http://127.0.0.1:${server.address().port}/socket/ab/send`
    const session = new SocketDockTransportSession(transport, 'ab', url)
    await assert.rejects(session.send({}, { protected: 'x' }), /send failed \(401\)/)
    assert.strictEqual(warned.length, 1)
    assert.match(warned[0], /reply refused with HTTP 401: check apiToken/)
    transport.apiToken = 'right'
    await session.send({}, { protected: 'x' })
    assert.strictEqual(warned.length, 1)
  } finally {
    server.close()
  }
})
