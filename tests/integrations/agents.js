// Credo (0.5) agents for the end-to-end tests in test_agents.py, driven by
// one command per line on stdin; each step prints one line on stdout,
// "EVENT <name> [detail]", that the test waits for.
//
//   mediator <backend port> <ws url>  a Credo mediator whose inbound transport is
//                                     integrations/credo (SocketDock's backend on
//                                     127.0.0.1:<backend port>), reached by
//                                     clients at <ws url>; prints "EVENT
//                                     mediator-invitation <url>", later "EVENT
//                                     queued-for-pickup" for each queued message
//   wallet <invitation url> [<pickup strategy>]
//                                     a mobile-like wallet: WebSocket outbound
//                                     only, no endpoint, mediated (pickup:
//                                     Implicit unless given, e.g. PickUpV2LiveMode);
//                                     prints "EVENT mediation-ready"
//   ping                              trust ping to the mediator -> "EVENT ping-response"
//   sender <port>                     a second agent with an HTTP endpoint on
//                                     127.0.0.1:<port> -> "EVENT sender-ready"
//   connect                           the wallet invites the sender (its routing
//                                     key goes to the mediator: keylist update)
//                                     -> "EVENT keylist-updated", "EVENT connected"
//   send <text>                       sender -> wallet, through the mediator
//                                     -> "EVENT sent <text>"; the wallet prints
//                                     "EVENT received <text>"
//   close                             the wallet stops pickup and closes its
//                                     socket (close code 1000) -> "EVENT closed"
//   drop                              the same, but the TCP connection is dropped
//                                     without a close frame -> "EVENT closed"
//   hold                              the wallet stops its pickup loop (so it does
//                                     not reconnect by itself when its socket
//                                     drops) but keeps its socket -> "EVENT holding"
//   reconnect                         the wallet opens its socket again (implicit
//                                     pickup: a trust ping with return route)
//                                     -> "EVENT reconnected"
//   exit
//
// Needs NODE_PATH pointing at node_modules with @credo-ts/{core,node,askar}
// 0.5.19 and LIB_ARIES_ASKAR_PATH at the directory of libaries_askar.so.
'use strict'

const readline = require('readline')
const {
  Agent,
  ConsoleLogger,
  LogLevel,
  WsOutboundTransport,
  HttpOutboundTransport,
  ConnectionsModule,
  MediationRecipientModule,
  MediatorPickupStrategy,
  BasicMessageEventTypes,
  BasicMessageRole,
  TrustPingEventTypes,
  RoutingEventTypes,
  ConnectionEventTypes,
  DidExchangeState,
  KeyDerivationMethod,
} = require('@credo-ts/core')
const { agentDependencies, HttpInboundTransport } = require('@credo-ts/node')
const { AskarModule } = require('@credo-ts/askar')
// 'socketdock-credo' is integrations/credo, installed by the test with npm
// (on NODE_PATH); SOCKETDOCK_CREDO_TRANSPORT names another module to load
// in its place (test_return_route_pitfall's holding transport).
if (process.env.SOCKETDOCK_CREDO_TRANSPORT) {
  const Module = require('module')
  const resolve = Module._resolveFilename
  Module._resolveFilename = function (request, ...rest) {
    return resolve.call(this, request === 'socketdock-credo' ? process.env.SOCKETDOCK_CREDO_TRANSPORT : request, ...rest)
  }
}
const { ariesAskar } = require('@hyperledger/aries-askar-nodejs')

const logLevel = LogLevel[process.env.CREDO_LOG_LEVEL || 'warn']
const run = Date.now().toString(36) + Math.random().toString(36).slice(2, 8)

function emit(name, detail) {
  process.stdout.write(`EVENT ${name}${detail === undefined ? '' : ' ' + detail}\n`)
}

function makeAgent(label, modules, endpoints) {
  return new Agent({
    config: {
      label,
      walletConfig: makeAgent.walletConfig(label),
      endpoints,
      logger: new ConsoleLogger(logLevel),
    },
    dependencies: agentDependencies,
    modules: { askar: new AskarModule({ ariesAskar }), ...modules },
  })
}

makeAgent.walletConfig = (label) => ({
  id: `${label}-${run}`,
  key: `${label}-key-${run}`,
  keyDerivationMethod: KeyDerivationMethod.Argon2IInt,
  storage: { type: 'sqlite', config: { inMemory: true } },
})

let wallet, walletWs, sender, senderConnectionId

let mediatorAgent

async function startMediator(backendPort, wsUrl) {
  const {
    MediatorModule,
    MessagePickupModule,
    InMemoryMessagePickupRepository,
  } = require('@credo-ts/core')
  // The test counts what is queued for pickup.
  class ObservedQueue extends InMemoryMessagePickupRepository {
    addMessage(options) {
      const id = super.addMessage(options)
      emit('queued-for-pickup')
      return id
    }
  }
  const logger = new ConsoleLogger(logLevel)
  const queue = new ObservedQueue(logger)
  const endpoint = wsUrl
  // SocketDock's callback API (its externalhostandport): this one instance.
  const socketDockUrls = [wsUrl.replace(/^ws/, 'http').replace(/\/ws$/, '')]
  const walletConfig = makeAgent.walletConfig('mediator')
  // README: begin (integrations/credo/README.rst shows this block as it is)
  const {
    SocketDockInboundTransport,
    SocketDockMessagePickupRepository,
  } = require('socketdock-credo')

  const mediator = new Agent({
    config: { label: 'mediator', endpoints: [endpoint], walletConfig, logger },
    dependencies: agentDependencies,
    modules: {
      askar: new AskarModule({ ariesAskar }),
      connections: new ConnectionsModule({ autoAcceptConnections: true }),
      mediator: new MediatorModule({ autoAcceptMediationRequests: true }),
      messagePickup: new MessagePickupModule({
        messagePickupRepository: new SocketDockMessagePickupRepository({
          repository: queue,
          socketDockUrls,
          logger,
        }),
      }),
    },
  })
  mediator.registerInboundTransport(new SocketDockInboundTransport({ port: Number(backendPort) }))
  mediator.registerOutboundTransport(new HttpOutboundTransport())
  mediator.registerOutboundTransport(new WsOutboundTransport())
  await mediator.initialize()
  // README: end
  mediatorAgent = mediator
  const oob = await mediator.oob.createInvitation({ multiUseInvitation: true, label: 'mediator' })
  emit('mediator-invitation', oob.outOfBandInvitation.toUrl({ domain: wsUrl }))
}

async function startWallet(invitationUrl, strategy = 'Implicit') {
  walletWs = new WsOutboundTransport()
  wallet = makeAgent('wallet', {
    connections: new ConnectionsModule({ autoAcceptConnections: true }),
    mediationRecipient: new MediationRecipientModule({
      mediatorInvitationUrl: invitationUrl,
      mediatorPickupStrategy: MediatorPickupStrategy[strategy],
    }),
  })
  wallet.registerOutboundTransport(walletWs)
  wallet.registerOutboundTransport(new HttpOutboundTransport())
  wallet.events.on(BasicMessageEventTypes.BasicMessageStateChanged, ({ payload }) => {
    if (payload.basicMessageRecord.role === BasicMessageRole.Receiver) {
      emit('received', payload.message.content)
    }
  })
  wallet.events.on(TrustPingEventTypes.TrustPingResponseReceivedEvent, () => emit('ping-response'))
  wallet.events.on(RoutingEventTypes.RecipientKeylistUpdated, () => emit('keylist-updated'))
  // initialize() connects to the mediator from the invitation, requests
  // mediation, waits for the grant and starts the pickup.
  await wallet.initialize()
  const mediator = await wallet.mediationRecipient.findDefaultMediator()
  if (!mediator || mediator.state !== 'granted') throw new Error('no granted mediator')
  emit('mediation-ready', mediator.routingKeys.join(','))
}

async function startSender(port) {
  sender = makeAgent(
    'sender',
    { connections: new ConnectionsModule({ autoAcceptConnections: true }) },
    [`http://127.0.0.1:${port}`]
  )
  sender.registerInboundTransport(new HttpInboundTransport({ port: Number(port) }))
  sender.registerOutboundTransport(new WsOutboundTransport())
  sender.registerOutboundTransport(new HttpOutboundTransport())
  await sender.initialize()
  emit('sender-ready')
}

function waitForCompleted(agent, predicate) {
  return new Promise((resolve) => {
    const listener = ({ payload }) => {
      if (payload.connectionRecord.state === DidExchangeState.Completed && predicate(payload.connectionRecord)) {
        agent.events.off(ConnectionEventTypes.ConnectionStateChanged, listener)
        resolve(payload.connectionRecord)
      }
    }
    agent.events.on(ConnectionEventTypes.ConnectionStateChanged, listener)
  })
}

async function connect() {
  // The wallet invites: its new key is registered with the mediator first.
  const oob = await wallet.oob.createInvitation({ label: 'wallet' })
  const walletDone = waitForCompleted(wallet, (c) => c.outOfBandId === oob.id)
  const url = oob.outOfBandInvitation.toUrl({ domain: 'https://example.org' })
  const { connectionRecord } = await sender.oob.receiveInvitationFromUrl(url)
  const senderDone = waitForCompleted(sender, (c) => c.id === connectionRecord.id)
  const [, senderConn] = await Promise.all([walletDone, senderDone])
  senderConnectionId = senderConn.id
  emit('connected')
}

async function ping() {
  const conn = await wallet.mediationRecipient.findDefaultMediatorConnection()
  await wallet.connections.sendPing(conn.id, { responseRequested: true })
}

// abrupt: drop the TCP connection without a close frame (ws's terminate()),
// as a phone losing its network does.
async function closeSocket(abrupt) {
  await wallet.mediationRecipient.stopMessagePickup()
  const closing = []
  for (const socket of walletWs.transportTable.values()) {
    closing.push(new Promise((resolve) => socket.addEventListener('close', () => resolve())))
    if (abrupt) socket.terminate()
    else socket.close(1000)
  }
  await Promise.all(closing)
  emit('closed', closing.length)
}

async function reconnect() {
  const mediator = await wallet.mediationRecipient.findDefaultMediator()
  await wallet.mediationRecipient.initiateMessagePickup(mediator)
  emit('reconnected')
}

async function command(line) {
  const [cmd, ...rest] = line.trim().split(' ')
  const arg = rest.join(' ')
  switch (cmd) {
    case 'mediator':
      return startMediator(rest[0], rest[1])
    case 'wallet':
      return startWallet(rest[0], rest[1])
    case 'sender':
      return startSender(arg)
    case 'connect':
      return connect()
    case 'ping':
      return ping()
    case 'send':
      await sender.basicMessages.sendMessage(senderConnectionId, arg)
      return emit('sent', arg)
    case 'close':
      return closeSocket(false)
    case 'drop':
      return closeSocket(true)
    case 'hold':
      await wallet.mediationRecipient.stopMessagePickup()
      return emit('holding')
    case 'reconnect':
      return reconnect()
    case 'exit':
      for (const a of [wallet, sender, mediatorAgent]) if (a) await a.shutdown().catch(() => {})
      process.exit(0)
      break
    case '':
      return
    default:
      throw new Error(`unknown command ${cmd}`)
  }
}

// One command at a time, in order.
let chain = Promise.resolve()
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  chain = chain.then(() => command(line)).catch((e) => {
    emit('error', JSON.stringify(String((e && e.stack) || e)))
  })
})
process.stdin.on('end', () => chain.then(() => process.exit(0)))
emit('started')
