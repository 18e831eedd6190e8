// SocketDock inbound transport for Credo (0.5): serves the backend side of
// SocketDock's wire format (POSTs of connect, message and disconnect) and
// sends what the agent has for a client to the connection's `meta.send` URL.
//
//   const { SocketDockInboundTransport } = require('socketdock-credo')
//   agent.registerInboundTransport(new SocketDockInboundTransport({ port: 3001 }))
//
// Each SocketDock connection is one Credo transport session, like one socket
// on Credo's own WsInboundTransport. A message POST is answered 200 as soon
// as the agent has taken the message (queued for processing, in order); the
// answer never waits for a reply: replies, return-routed or not, go by POST
// to `meta.send`. See README.rst for why that matters.
//
// Several instances: each connection is tagged (POST /socket/<id>/tags)
// with the keys its session replies to and `connection:<DIDComm connection
// id>` as Credo learns them, and SocketDockMessagePickupRepository wraps a
// MessagePickupRepository so that a message Credo would queue for a
// connection no session of its own holds is first sent with POST
// /tags/connection:<id>/send through SocketDock (queued only on 404).
'use strict'

const crypto = require('crypto')
const http = require('http')
const { AgentEventTypes, CredoError, TransportService } = require('@credo-ts/core')

const SIGNATURE_HEADER = 'x-socketdock-signature'
const SIGNATURE_WINDOW = 300

// The wire-format helpers below use nothing from Credo; they are exported
// for tests.

function sign(secret, body, now = Date.now() / 1000) {
  const t = String(Math.floor(now))
  return `t=${t},v1=${mac(secret, t, body)}`
}

function mac(secret, t, body) {
  return crypto.createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex')
}

// Throws an Error saying why unless `header` signs the raw `body` (a Buffer)
// under `secret` within `window` seconds of `now`.
function verifySignature(secret, header, body, now = Date.now() / 1000, window = SIGNATURE_WINDOW) {
  if (!header) throw new Error('no X-SocketDock-Signature header')
  let t
  const candidates = []
  for (const part of header.split(',')) {
    const i = part.indexOf('=')
    if (i < 0) continue
    const key = part.slice(0, i).trim()
    const value = part.slice(i + 1).trim()
    if (key === 't') t = value
    else if (key === 'v1') candidates.push(value.toLowerCase())
  }
  if (!t || !/^[0-9]+$/.test(t) || candidates.length === 0) {
    throw new Error('malformed X-SocketDock-Signature header')
  }
  if (Math.abs(now - Number(t)) > window) {
    throw new Error('X-SocketDock-Signature timestamp outside the window')
  }
  const expected = Buffer.from(mac(secret, t, body), 'utf8')
  const ok = candidates.some((c) => {
    const given = Buffer.from(c, 'utf8')
    return given.length === expected.length && crypto.timingSafeEqual(given, expected)
  })
  if (!ok) throw new Error('X-SocketDock-Signature does not match')
}

// Exactly-once intake by meta.seq: SocketDock sends one connection's messages
// one at a time, in order, from 1, and a retry carries the same number.
class SeqFilter {
  constructor() {
    this.highest = 0
  }
  take(seq) {
    if (seq === undefined || seq === null) return true
    if (seq <= this.highest) return false
    this.highest = seq
    return true
  }
}

class SocketDockTransportSession {
  constructor(transport, connectionId, sendUrl) {
    this.type = 'SocketDock'
    this.id = connectionId
    this.transport = transport
    this.sendUrl = sendUrl
    this.seq = new SeqFilter()
    this.closed = false
    this.tagged = new Set()
    this._keys = undefined
    this._connectionId = undefined
    this._tagging = false
  }

  // Credo's MessageReceiver sets `keys` and then `connectionId` on a session
  // when a message asks for return route: that is when the transport learns
  // whom the connection belongs to, and tags it.
  get keys() {
    return this._keys
  }
  set keys(value) {
    this._keys = value
    this.learn()
  }
  get connectionId() {
    return this._connectionId
  }
  set connectionId(value) {
    this._connectionId = value
    this.learn()
  }

  // The tags this session should carry: its reply keys (base58) and its
  // DIDComm connection.
  wantedTags() {
    const tags = []
    for (const key of (this._keys && this._keys.recipientKeys) || []) {
      if (key && key.publicKeyBase58) tags.push(key.publicKeyBase58)
    }
    if (this._connectionId) tags.push(connectionTag(this._connectionId))
    return tags
  }

  learn() {
    if (this._tagging) return
    this._tagging = true
    // Both setters run in one go: one POST for what they taught.
    queueMicrotask(() => {
      this._tagging = false
      const add = this.wantedTags().filter((t) => !this.tagged.has(t))
      if (add.length === 0 || this.closed) return
      for (const t of add) this.tagged.add(t)
      this.transport.tag(this, add).catch(() => {})
    })
  }

  get tagsUrl() {
    return this.sendUrl.replace(/\/send$/, '/tags')
  }

  // Resolves once SocketDock has handed the message to the socket; throws
  // otherwise, so Credo falls back to its other routes (the pickup queue).
  async send(agentContext, encryptedMessage) {
    if (this.closed) throw new CredoError(`SocketDock connection ${this.id} is closed`)
    const body = JSON.stringify(encryptedMessage)
    const headers = { 'Content-Type': 'text/plain; charset=utf-8' }
    if (this.transport.apiToken) headers.Authorization = `Bearer ${this.transport.apiToken}`
    let delay = 100
    for (let attempt = 1; ; attempt++) {
      let status
      let retryAfter
      try {
        const response = await fetch(this.sendUrl, {
          method: 'POST',
          headers,
          body,
          signal: AbortSignal.timeout(this.transport.sendTimeoutMs),
        })
        status = response.status
        retryAfter = response.headers.get('retry-after')
        await response.arrayBuffer()
      } catch (error) {
        // Refused at the TCP level: that instance is gone. Timeouts and
        // resets are tried again.
        const code = error && error.cause && error.cause.code
        if (code === 'ECONNREFUSED') {
          this.transport.drop(this)
          throw new CredoError(`SocketDock connection ${this.id}: instance gone (${code})`)
        }
      }
      if (status >= 200 && status < 300) return
      if (status === 404 || status === 410) {
        this.transport.drop(this)
        throw new CredoError(`SocketDock connection ${this.id} is no longer live (${status})`)
      }
      const retry = status === undefined || status === 408 || status === 429 || status >= 500
      if (!retry) {
        // Refused for good (400, 401, 413): a retry would be too. Credo only
        // logs the thrown error at debug, so a wrong apiToken would look like
        // a wallet that never gets answers; say it here.
        const hint = status === 401 || status === 403 ? ': check apiToken against SocketDock\'s api_token' : ''
        this.transport.logger.warn(
          `SocketDock connection ${this.id}: reply refused with HTTP ${status}${hint}; ` +
            'Credo falls back to its other routes (queued for pickup)'
        )
      }
      if (!retry || attempt >= 6 || this.closed) {
        throw new CredoError(`SocketDock connection ${this.id}: send failed (${status || 'no answer'})`)
      }
      const seconds = Number(retryAfter)
      const wait = Number.isFinite(seconds) && retryAfter ? Math.min(seconds * 1000, 30000) : delay
      await new Promise((resolve) => setTimeout(resolve, wait))
      delay = Math.min(delay * 2, 5000)
    }
  }

  // Credo "closes" a session after a message without return route. Its own
  // WsInboundTransport then closes the socket; here the socket stays open
  // (closing it would make the client reconnect for nothing, and a message
  // already on its way on that socket would lose its return route). The
  // session only stops being offered for replies until a message with
  // return route saves it again. To close a client's socket, POST to its
  // `meta.disconnect` URL.
  async close() {
    this.transport.transportService.removeSession(this)
  }
}

class SocketDockInboundTransport {
  // options: port (required), host (default 127.0.0.1), signingSecret and
  // apiToken (default: env SOCKETDOCK_SIGNING_SECRET, SOCKETDOCK_API_TOKEN),
  // sendTimeoutMs (10000), maxBodyBytes (8 MiB).
  constructor(options = {}) {
    this.port = options.port
    this.host = options.host || '127.0.0.1'
    this.signingSecret = options.signingSecret ?? (process.env.SOCKETDOCK_SIGNING_SECRET || undefined)
    this.apiToken = options.apiToken ?? (process.env.SOCKETDOCK_API_TOKEN || undefined)
    this.sendTimeoutMs = options.sendTimeoutMs || 10000
    this.maxBodyBytes = options.maxBodyBytes || 8 * 1024 * 1024
    this.sessions = new Map()
    this.server = undefined
  }

  async start(agent) {
    this.agent = agent
    this.logger = agent.config.logger
    this.transportService = agent.dependencyManager.resolve(TransportService)
    this.server = http.createServer((req, res) => this.handle(req, res))
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    this.logger.info(
      `SocketDock transport listening on http://${this.host}:${this.server.address().port}` +
        ` (signatures ${this.signingSecret ? 'required' : 'not checked'}, api token ${this.apiToken ? 'set' : 'not set'})`
    )
  }

  async stop() {
    for (const session of this.sessions.values()) this.drop(session)
    if (this.server) {
      const server = this.server
      this.server = undefined
      server.closeAllConnections?.()
      await new Promise((resolve) => server.close(() => resolve()))
    }
  }

  // POST /socket/<id>/tags to the instance holding the connection (a few tries).
  async tag(session, add) {
    const body = JSON.stringify({ add })
    for (let attempt = 1; attempt <= 3 && !session.closed; attempt++) {
      let status
      try {
        const response = await fetch(session.tagsUrl, {
          method: 'POST',
          headers: jsonHeaders(this.apiToken),
          body,
          signal: AbortSignal.timeout(this.sendTimeoutMs),
        })
        status = response.status
        await response.arrayBuffer()
      } catch (error) {
        status = undefined
      }
      if (status >= 200 && status < 300) {
        this.logger.info(`SocketDock connection ${session.id} tagged with ${add.length} tag(s)`)
        return
      }
      if (status !== undefined && status !== 429 && status < 500) {
        this.logger.warn(`SocketDock connection ${session.id}: tagging answered HTTP ${status}`)
        return
      }
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt))
    }
  }

  forget(session) {
    if (this.sessions.get(session.id) === session) this.sessions.delete(session.id)
    this.transportService.removeSession(session)
  }

  drop(session) {
    session.closed = true
    this.forget(session)
  }

  handle(req, res) {
    const answer = (status, text) => {
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' })
      res.end(text ? text + '\n' : '')
    }
    const route = { '/connect': 'connect', '/message': 'message', '/disconnect': 'disconnect' }[req.url]
    if (!route) return answer(404, 'not found')
    if (req.method !== 'POST') return answer(405, 'POST only')
    const chunks = []
    let size = 0
    req.on('data', (chunk) => {
      size += chunk.length
      if (size > this.maxBodyBytes) {
        answer(413, 'too large')
        req.destroy()
      } else chunks.push(chunk)
    })
    req.on('end', () => {
      if (res.writableEnded) return
      const body = Buffer.concat(chunks)
      if (this.signingSecret) {
        try {
          verifySignature(this.signingSecret, req.headers[SIGNATURE_HEADER], body)
        } catch (error) {
          this.logger.warn(`SocketDock POST ${req.url} refused: ${error.message}`)
          return answer(401, error.message)
        }
      }
      let doc
      try {
        doc = JSON.parse(body.toString('utf8'))
      } catch (error) {
        return answer(400, 'body is not JSON')
      }
      const meta = (doc && doc.meta) || {}
      const id = meta.connection_id || doc.connection_id
      if (typeof id !== 'string' || !id) return answer(400, 'no meta.connection_id')
      try {
        const [status, text] = this[route](id, meta, doc)
        answer(status, text)
      } catch (error) {
        this.logger.error(`SocketDock ${route} for ${id} failed: ${error}`)
        answer(500, 'not taken; retry')
      }
    })
  }

  open(id, meta) {
    let session = this.sessions.get(id)
    if (!session) {
      if (!meta.send) return undefined
      session = new SocketDockTransportSession(this, id, meta.send)
      this.sessions.set(id, session)
      this.logger.info(`SocketDock connection ${id} opened`)
    } else if (meta.send) {
      session.sendUrl = meta.send
    }
    return session
  }

  connect(id, meta) {
    if (!this.open(id, meta)) return [400, 'no meta.send']
    return [200, '']
  }

  message(id, meta, doc) {
    if (typeof doc.message !== 'string') return [400, 'no message']
    const session = this.open(id, meta)
    if (!session) return [400, 'no meta.send']
    if (!session.seq.take(meta.seq)) {
      this.logger.info(`SocketDock connection ${id}: message ${meta.seq} is a retry of one already taken`)
      return [200, '']
    }
    let text = doc.message
    if (meta.encoding === 'base64') text = Buffer.from(text, 'base64').toString('utf8')
    let encryptedMessage
    try {
      encryptedMessage = JSON.parse(text)
    } catch (error) {
      return [400, 'message is not JSON'] // final: a retry would not parse either
    }
    // Taken: the agent processes received messages in order, one at a time
    // (unless processDidCommMessagesConcurrently); do not wait for it. The
    // answer has an empty body: with SocketDock's inline_reply on, a
    // non-empty 2xx body would go to the client as a message.
    this.agent.events.emit(this.agent.context, {
      type: AgentEventTypes.AgentMessageReceived,
      payload: { message: encryptedMessage, session },
    })
    return [200, '']
  }

  disconnect(id, meta) {
    const session = this.sessions.get(id)
    this.logger.info(
      `SocketDock connection ${id} closed (code ${meta.code}, initiator ${meta.initiator}${meta.recovered ? ', recovered' : ''})`
    )
    if (session) this.drop(session)
    return [200, '']
  }
}

function connectionTag(connectionId) {
  return `connection:${connectionId}`
}

function jsonHeaders(apiToken) {
  const headers = { 'Content-Type': 'application/json' }
  if (apiToken) headers.Authorization = `Bearer ${apiToken}`
  return headers
}

// POST /tags/<tag>/send through the first of `baseUrls` that answers:
// 'delivered' (200), 'nobody' (404: no connection carries the tag) or
// 'unreachable' (no instance answered, or 503 from every one).
async function sendByTag({ baseUrls, apiToken, timeoutMs = 10000 }, tag, payload) {
  const headers = { 'Content-Type': 'text/plain; charset=utf-8' }
  if (apiToken) headers.Authorization = `Bearer ${apiToken}`
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload)
  for (const base of baseUrls) {
    let status
    try {
      const response = await fetch(`${base.replace(/\/+$/, '')}/tags/${encodeURIComponent(tag)}/send`, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(timeoutMs),
      })
      status = response.status
      await response.arrayBuffer()
    } catch (error) {
      continue
    }
    if (status >= 200 && status < 300) return 'delivered'
    if (status === 404 || status === 410) return 'nobody'
  }
  return 'unreachable'
}

// A MessagePickupRepository (Credo 0.5) around another one: a message Credo
// queues for a connection (it found no session of its own for it) is first
// sent through SocketDock to whichever connection is tagged with that
// DIDComm connection, on any instance; only when none is (404), or no
// instance answers, does it go to the wrapped repository for pickup.
//
//   new MessagePickupModule({
//     messagePickupRepository: new SocketDockMessagePickupRepository({
//       repository: new InMemoryMessagePickupRepository(logger),
//       socketDockUrls: ['http://10.0.0.5:8765', 'http://10.0.0.6:8765'],
//     }),
//   })
class SocketDockMessagePickupRepository {
  // options: repository (required), socketDockUrls (the instances'
  // externalhostandport; default env SOCKETDOCK_TRUSTED_URLS, comma-
  // separated), apiToken (default env SOCKETDOCK_API_TOKEN), sendTimeoutMs
  // (10000), logger.
  constructor(options = {}) {
    if (!options.repository) throw new Error('SocketDockMessagePickupRepository needs a repository to wrap')
    this.repository = options.repository
    const urls = options.socketDockUrls ?? (process.env.SOCKETDOCK_TRUSTED_URLS || '').split(',')
    this.baseUrls = urls.map((u) => u.trim()).filter(Boolean)
    this.apiToken = options.apiToken ?? (process.env.SOCKETDOCK_API_TOKEN || undefined)
    this.sendTimeoutMs = options.sendTimeoutMs || 10000
    this.logger = options.logger
  }

  async addMessage(options) {
    if (options.connectionId && this.baseUrls.length) {
      const outcome = await sendByTag(
        { baseUrls: this.baseUrls, apiToken: this.apiToken, timeoutMs: this.sendTimeoutMs },
        connectionTag(options.connectionId),
        options.payload
      )
      if (this.logger) this.logger.info(`SocketDock send by tag for connection ${options.connectionId}: ${outcome}`)
      if (outcome === 'delivered') return undefined
    }
    return this.repository.addMessage(options)
  }

  getAvailableMessageCount(options) {
    return this.repository.getAvailableMessageCount(options)
  }

  takeFromQueue(options) {
    return this.repository.takeFromQueue(options)
  }

  removeMessages(options) {
    return this.repository.removeMessages(options)
  }
}

module.exports = {
  SocketDockInboundTransport,
  SocketDockMessagePickupRepository,
  SocketDockTransportSession,
  SeqFilter,
  connectionTag,
  sendByTag,
  verifySignature,
  sign,
}
