// Tagging and delivery by tag, without Credo: node --test test/
// (@credo-ts/core is stubbed, so this runs with nothing installed).
'use strict'

const assert = require('node:assert')
const http = require('node:http')
const Module = require('node:module')
const { test } = require('node:test')

const realLoad = Module._load
Module._load = function (request, ...rest) {
  if (request === '@credo-ts/core') {
    return { AgentEventTypes: {}, CredoError: Error, TransportService: class {} }
  }
  return realLoad.call(this, request, ...rest)
}
const {
  SocketDockInboundTransport,
  SocketDockMessagePickupRepository,
  SocketDockTransportSession,
} = require('..')
Module._load = realLoad

// A stub SocketDock callback API: records POSTs, answers tag sends with `status`.
async function stubSocketDock(status = 200) {
  const seen = []
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      seen.push({ url: req.url, auth: req.headers.authorization, body: Buffer.concat(chunks).toString() })
      res.writeHead(req.url.startsWith('/tags/') ? status : 200, { 'Content-Type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { seen, server, base: `http://127.0.0.1:${server.address().port}` }
}

// A loopback port nothing listens on (an instance that is down).
async function closedPort() {
  const probe = http.createServer()
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const port = probe.address().port
  await new Promise((resolve) => probe.close(resolve))
  return port
}

test('a session is tagged with its reply keys and DIDComm connection when Credo sets them', async () => {
  const sd = await stubSocketDock()
  try {
    const transport = new SocketDockInboundTransport({ port: 0, apiToken: 'tok' })
    transport.logger = { info() {}, warn() {} }
    const session = new SocketDockTransportSession(transport, 'c1', `${sd.base}/socket/c1/send`)
    // As Credo's MessageReceiver does for a message with return route:
    session.keys = { recipientKeys: [{ publicKeyBase58: 'K1' }], routingKeys: [], senderKey: {} }
    session.connectionId = 'conn-1'
    for (let i = 0; i < 100 && sd.seen.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
    // And again (the next message): nothing new, no POST.
    session.keys = { recipientKeys: [{ publicKeyBase58: 'K1' }], routingKeys: [], senderKey: {} }
    session.connectionId = 'conn-1'
    await new Promise((r) => setTimeout(r, 50))
    assert.deepStrictEqual(
      sd.seen.map((s) => [s.url, JSON.parse(s.body), s.auth]),
      [['/socket/c1/tags', { add: ['K1', 'connection:conn-1'] }, 'Bearer tok']]
    )
    assert.strictEqual(session.connectionId, 'conn-1')
    assert.strictEqual(session.keys.recipientKeys[0].publicKeyBase58, 'K1')
  } finally {
    sd.server.close()
  }
})

function recordingRepository() {
  const added = []
  return {
    added,
    addMessage(options) {
      added.push(options)
      return 'queued-id'
    },
    getAvailableMessageCount: () => added.length,
    takeFromQueue: () => added,
    removeMessages: () => {},
  }
}

test('a message Credo would queue goes by tag first (past an instance that is down)', async () => {
  const sd = await stubSocketDock(200)
  try {
    const repository = recordingRepository()
    const wrapper = new SocketDockMessagePickupRepository({
      repository,
      socketDockUrls: [`http://127.0.0.1:${await closedPort()}`, sd.base],
      apiToken: 'tok',
    })
    const payload = { protected: 'p', iv: 'i', ciphertext: 'c', tag: 't' }
    await wrapper.addMessage({ connectionId: 'conn/1', recipientDids: [], payload })
    assert.deepStrictEqual(sd.seen.map((s) => [s.url, s.body, s.auth]), [
      ['/tags/connection%3Aconn%2F1/send', JSON.stringify(payload), 'Bearer tok'],
    ])
    assert.deepStrictEqual(repository.added, [])
    assert.strictEqual(await wrapper.getAvailableMessageCount({ connectionId: 'conn/1' }), 0)
  } finally {
    sd.server.close()
  }
})

test('nobody carries the tag (404): the message is queued for pickup', async () => {
  const sd = await stubSocketDock(404)
  try {
    const repository = recordingRepository()
    const wrapper = new SocketDockMessagePickupRepository({ repository, socketDockUrls: [sd.base] })
    const id = await wrapper.addMessage({ connectionId: 'c', recipientDids: [], payload: { a: 1 } })
    assert.strictEqual(id, 'queued-id')
    assert.strictEqual(repository.added.length, 1)
    assert.strictEqual(sd.seen.length, 1)
  } finally {
    sd.server.close()
  }
})
