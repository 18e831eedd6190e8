// The design the Credo README warns against, for test_return_route_pitfall:
// a SocketDock transport that holds each /message POST open until the agent
// sends a return-routed reply, and answers the POST with it (SocketDock's
// inline_reply). No de-duplication by seq. Not for use.
'use strict'

const path = require('path')
const { AgentEventTypes } = require('@credo-ts/core')
const base = require(path.join(__dirname, '..', '..', 'integrations', 'credo'))

class HoldingSession extends base.SocketDockTransportSession {
  async send(agentContext, encryptedMessage) {
    const held = this.held
    if (held && !held.writableEnded) {
      this.held = undefined
      held.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' })
      held.end(JSON.stringify(encryptedMessage))
      return
    }
    return super.send(agentContext, encryptedMessage)
  }
}

class HoldingTransport extends base.SocketDockInboundTransport {
  handle(req, res) {
    if (req.url !== '/message') return super.handle(req, res)
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const doc = JSON.parse(Buffer.concat(chunks).toString('utf8'))
      const meta = doc.meta
      let session = this.sessions.get(meta.connection_id)
      if (!session) {
        session = new HoldingSession(this, meta.connection_id, meta.send)
        this.sessions.set(meta.connection_id, session)
      }
      this.logger.warn(`holding transport: message seq ${meta.seq} on ${meta.connection_id}`)
      session.held = res // answered by the next send on this session, if any
      this.agent.events.emit(this.agent.context, {
        type: AgentEventTypes.AgentMessageReceived,
        payload: { message: JSON.parse(doc.message), session },
      })
    })
  }
}

module.exports = { ...base, SocketDockInboundTransport: HoldingTransport }
