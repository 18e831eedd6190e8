#!/usr/bin/env node
// SocketDock addition (not in the reference harness): the reconnect storm.
// One process plays the clients and the HTTP backend (like bench.js); it
// starts instance A (and B) pinned to --relay-cpu, opens N clients to A,
// then kills A (SIGKILL, --mode cluster: all reconnect to B) or stops it
// (SIGTERM, --mode restart: all reconnect to A restarted; --mode failover:
// SIGKILL, no cluster, all reconnect to B), and prints one
// JSON line: time until every client is admitted again, handshakes/s, p99
// handshake latency, the backend's peak concurrent connect requests and the
// notices of the storm (connect, disconnect, recovered).  Loopback only;
// every loop bounded.  Driven by bench/storm.py.
'use strict';
const http = require('http');
const net = require('net');
const { spawn } = require('child_process');
const fs = require('fs');
const WebSocket = require('ws');

const o = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;

// ---- backend
const be = { connects: 0, disconnects: 0, recovered: 0, inflight: 0, peak: 0, other: 0 };
const server = http.createServer((req, res) => {
  be.inflight++; if (be.inflight > be.peak) be.peak = be.inflight;
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body = {}; try { body = JSON.parse(Buffer.concat(chunks).toString()); } catch { }
    if (req.url === '/connect') be.connects++;
    else if (req.url === '/disconnect') { be.disconnects++; if (body.meta && body.meta.recovered) be.recovered++; }
    else be.other++;
    setImmediate(() => { res.writeHead(200, { 'Content-Type': 'text/plain' }); res.end(''); be.inflight--; });
  });
});
server.keepAliveTimeout = 60000; server.maxConnections = 20000;

function relayCmd(cmd, port) {
  return cmd.replaceAll('{port}', port).replaceAll('{relay}', `http://127.0.0.1:${port}`)
    .replaceAll('{backend}', `http://127.0.0.1:${o.backendPort}`);
}
function start(cmd, port, log) {
  const fd = fs.openSync(log, 'a');
  const p = spawn('taskset', ['-c', String(o.relayCpu), 'sh', '-c', 'exec ' + relayCmd(cmd, port)],
    { stdio: ['ignore', fd, fd], detached: true });
  fs.closeSync(fd);
  p.exited = false; p.on('exit', () => { p.exited = true; });
  return p;
}
function probe(port) {
  return new Promise((r) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (v) => { s.destroy(); r(v); };
    s.once('connect', () => done(true)); s.once('error', () => done(false)); s.setTimeout(500, () => done(false));
  });
}
async function waitPort(port, p) {
  for (let i = 0; i < 600; i++) { if (p.exited) throw new Error('relay exited; see logs'); if (await probe(port)) return; await sleep(50); }
  throw new Error('relay did not listen on ' + port);
}
async function waitFor(pred, ms) { const end = Date.now() + ms; while (Date.now() < end) { if (pred()) return true; await sleep(20); } return pred(); }
function cpu(pid) { try { const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').slice(0); const f = s.slice(s.lastIndexOf(')') + 2).split(' '); return (+f[11] + +f[12]) / 100; } catch { return NaN; } }

// ---- clients
function open(port, onClose) {
  return new Promise((resolve) => {
    const t0 = now();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { perMessageDeflate: false });
    let settled = false;
    ws.on('open', () => { settled = true; resolve({ ws, ms: now() - t0, at: now() }); });
    ws.on('error', () => { if (!settled) { settled = true; resolve({ ws: null }); } });
    ws.on('close', () => { if (settled && onClose) onClose(); });
  });
}

async function main() {
  await new Promise((r) => server.listen(o.backendPort, '127.0.0.1', r));
  const procs = [];
  const a = start(o.cmdA, o.portA, o.log + '-a.log'); procs.push(a);
  await waitPort(o.portA, a);
  let b = null;
  const twoInstances = o.mode !== 'restart';
  if (twoInstances) { b = start(o.cmdB, o.portB, o.log + '-b.log'); procs.push(b); await waitPort(o.portB, b); }
  // Phase 1: N clients to A, 200 at a time.
  let next = 0, opened = 0;
  const lost = [];
  const target = twoInstances ? o.portB : o.portA;
  // What the backend must hear in the storm: every client admitted again; a
  // disconnect notice for each from the stopped instance's drain (restart),
  // from B on A's behalf, marked recovered (cluster), or none at all (a
  // killed instance without cluster or journal loses them: failover).
  const expect = { connects: o.n, disconnects: o.mode === 'failover' ? 0 : o.n, recovered: o.mode === 'cluster' ? o.n : 0 };
  let stormStarted = false;
  const storm = { latencies: [], firstOpen: 0, lastOpen: 0, failures: 0 };
  const queue = [];
  let active = 0;
  function pump() {
    while (active < o.stormConcurrency && queue.length) {
      queue.shift(); active++;
      (async function attempt(tries) {
        const t0 = now();
        const r = await open(target, null);
        if (!r.ws) {
          storm.failures++;
          if (tries < 400) { await sleep(25); return attempt(tries + 1); }
          active--; pump(); return;
        }
        storm.latencies.push(now() - t0);
        storm.lastOpen = now(); if (!storm.firstOpen) storm.firstOpen = storm.lastOpen;
        active--; pump();
      })(0);
    }
  }
  const onClose = () => { if (stormStarted) { queue.push(1); pump(); } };
  async function worker() {
    while (next < o.n) { next++; const r = await open(o.portA, onClose); if (r.ws) opened++; }
  }
  await Promise.all(Array.from({ length: 200 }, worker));
  await waitFor(() => be.connects >= opened, 30000);
  if (opened !== o.n) throw new Error(`only ${opened} of ${o.n} opened`);
  await sleep(o.settleMs);
  const cpuBefore = procs.map((p) => cpu(p.pid));
  Object.assign(be, { connects: 0, disconnects: 0, recovered: 0, peak: be.inflight, other: 0 });
  // Phase 2: the storm.
  stormStarted = true;
  const t0 = now();
  const cpuB0 = twoInstances ? cpu(b.pid) : 0;
  if (twoInstances) {
    process.kill(-a.pid, 'SIGKILL');
  } else {
    process.kill(-a.pid, 'SIGTERM');
    await waitFor(() => a.exited, 60000);
    const a2 = start(o.cmdA, o.portA, o.log + '-a2.log'); procs.push(a2);
  }
  const admitted = await waitFor(() => storm.latencies.length >= o.n, o.timeoutMs);
  const tAdmitted = now();
  const cpuAdmitted = twoInstances ? cpu(b.pid) - cpuB0 : cpu(procs[procs.length - 1].pid);
  const noticed = await waitFor(() => be.disconnects >= expect.disconnects && be.connects >= expect.connects, o.timeoutMs);
  await sleep(o.mode === 'failover' ? 4000 : 1000); // anything extra would show up here
  const relayPid = twoInstances ? b.pid : procs[procs.length - 1].pid;
  const lat = storm.latencies.slice().sort((x, y) => x - y);
  const pct = (q) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : NaN;
  const out = {
    mode: o.mode, n: o.n, admitted, noticed,
    secondsUntilAllAdmitted: (storm.lastOpen - t0) / 1000,
    handshakesPerSec: lat.length / ((storm.lastOpen - storm.firstOpen) / 1000 || NaN),
    p50ms: pct(0.5), p99ms: pct(0.99),
    peakConcurrentConnects: be.peak,
    connects: be.connects, disconnects: be.disconnects, recovered: be.recovered,
    refusedAttempts: storm.failures,
    relayCpuSec: twoInstances ? cpu(b.pid) - cpuB0 : cpu(relayPid),
    relayCpuUntilAdmittedSec: cpuAdmitted,
    expected: expect,
  };
  out.correct = out.connects === expect.connects && out.disconnects === expect.disconnects && out.recovered === expect.recovered;
  console.log(JSON.stringify(out));
  for (const p of procs) { try { process.kill(-p.pid, 'SIGKILL'); } catch { } }
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
