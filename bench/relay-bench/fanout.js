#!/usr/bin/env node
// SocketDock addition (not in the reference harness): fan-out by tag.
// One process plays N clients and the backend (like bench.js), pinned by
// its caller to one core; the relay (SocketDock's two cluster instances, or
// Pushpin) runs pinned to --relay-cpu.  Every client carries the tag `all`
// and one of 100 group tags (`g0`..`g99`, N/100 each).  Senders post in a
// closed loop: each waits until every carrier received its message (matched
// by a sequence number in the payload) before the next.  Prints one JSON
// line per measurement: deliveries/s, relay CPU per delivered frame, the
// time from the POST to the last carrier's receipt (p50, p99), and the
// harness's own CPU use (near 1.0: the harness, not the relay, was the
// limit).  Loopback only; every loop bounded.  Driven by bench/fanout.py.
'use strict';
const http = require('http');
const net = require('net');
const { spawn } = require('child_process');
const fs = require('fs');
const WebSocket = require('ws');

const o = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const GROUPS = 100;

// ---- /proc
function tree(root) {
  const parent = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try { const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8'); parent.set(+d, +s.slice(s.lastIndexOf(')') + 2).split(' ')[1]); } catch { }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  return out;
}
function cpuOf(pids) {
  let t = 0;
  for (const p of pids) { try { const s = fs.readFileSync(`/proc/${p}/stat`, 'utf8'); const f = s.slice(s.lastIndexOf(')') + 2).split(' '); t += +f[11] + +f[12]; } catch { } }
  return t / 100;
}

// ---- backend: admits every client with its tags (SocketDock: the connect
// answer; Pushpin: WebSocket-over-HTTP, subscribing by GRIP control message)
let opened = 0;
function tagsFor(i) { return ['all', 'g' + (i % GROUPS)]; }
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString();
    if (req.url.startsWith('/connect')) {
      const i = opened++;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ tags: tagsFor(i) }));
    } else if (o.target === 'pushpin' && req.headers['content-type'] === 'application/websocket-events') {
      // Only OPEN needs an answer with content; everything else gets none.
      const headers = { 'Content-Type': 'application/websocket-events', 'Sec-WebSocket-Extensions': 'grip' };
      if (body.startsWith('OPEN')) {
        const i = opened++;
        let out = 'OPEN\r\n';
        for (const t of tagsFor(i)) {
          const c = 'c:' + JSON.stringify({ type: 'subscribe', channel: t });
          out += `TEXT ${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`;
        }
        res.writeHead(200, headers); res.end(out);
      } else { res.writeHead(200, headers); res.end(''); }
    } else { res.writeHead(200, { 'Content-Type': 'text/plain' }); res.end(''); }
  });
});
server.keepAliveTimeout = 60000;

function spawnPinned(cmd, log) {
  const fd = fs.openSync(log, 'a');
  const p = spawn('taskset', ['-c', String(o.relayCpu), 'sh', '-c', 'exec ' + cmd], { stdio: ['ignore', fd, fd], detached: true });
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
  for (let i = 0; i < 600; i++) { if (p.exited) throw new Error('relay exited; see ' + o.log); if (await probe(port)) return; await sleep(50); }
  throw new Error('nothing listens on ' + port);
}

// ---- clients: count receipts per sequence number
const waiting = new Map(); // seq -> { left, resolve }
function onMessage(data) {
  const s = data.toString('latin1', 0, 12); const seq = +s.slice(0, s.indexOf(':'));
  const w = waiting.get(seq);
  if (w && --w.left === 0) { waiting.delete(seq); w.resolve(now()); }
}
function open(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('open', () => resolve(ws));
    ws.on('error', () => resolve(null));
    ws.on('message', onMessage);
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function post(port, path, body, type) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) } },
      (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', () => resolve(0)); req.end(body);
  });
}

async function measure(label, tagMode, viaPort, pids) {
  let seq = 0; const lat = []; let deliveries = 0; let bad = 0;
  let running = true;
  const sizeOf = (t) => (t === 'all' ? o.n : o.n / GROUPS);
  async function sender(k) {
    let g = k;
    while (running) {
      const tag = tagMode === 'all' ? 'all' : 'g' + (g++ % GROUPS);
      const id = ++seq;
      const payload = (id + ':').padEnd(o.size, 'x');
      const expected = sizeOf(tag);
      const done = new Promise((resolve) => waiting.set(id, { left: expected, resolve }));
      const t0 = now();
      let code;
      if (o.target === 'pushpin') {
        code = await post(viaPort, '/publish/', JSON.stringify({ items: [{ channel: tag, formats: { 'ws-message': { content: payload } } }] }), 'application/json');
      } else {
        code = await post(viaPort, `/tags/${tag}/send`, payload, 'text/plain');
      }
      if (code !== 200) { bad++; waiting.delete(id); await sleep(10); continue; }
      const tEnd = await Promise.race([done, sleep(10000).then(() => null)]);
      if (tEnd === null) { bad++; waiting.delete(id); continue; }
      if (counting) { lat.push(tEnd - t0); deliveries += expected; }
    }
  }
  let counting = false;
  const senders = Array.from({ length: tagMode === 'all' ? o.sendersAll : o.sendersGroups }, (_, k) => sender(k));
  await sleep(o.warmup * 1000);
  counting = true;
  const c0 = cpuOf(pids), u0 = process.cpuUsage(), t0 = now();
  await sleep(o.duration * 1000);
  counting = false;
  const c1 = cpuOf(pids), u1 = process.cpuUsage(u0), t1 = now();
  running = false; await Promise.all(senders);
  const secs = (t1 - t0) / 1000; lat.sort((a, b) => a - b);
  const pct = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : NaN);
  console.log(JSON.stringify({
    label, tagMode, via: o.viaNames[viaPort] || String(viaPort), n: o.n, sends: lat.length, failedSends: bad,
    deliveriesPerSec: deliveries / secs, relayCpuUsPerDelivery: 1e6 * (c1 - c0) / deliveries,
    relayCpuUtil: (c1 - c0) / secs, deliveriesPerCpuSec: deliveries / (c1 - c0),
    p50ms: pct(0.5), p99ms: pct(0.99), harnessCpuUtil: (u1.user + u1.system) / 1e6 / secs,
  }));
}

async function main() {
  await new Promise((r) => server.listen(o.backendPort, '127.0.0.1', r));
  const procs = o.commands.map((c, i) => spawnPinned(c, `${o.log}-${i}.log`));
  for (let i = 0; i < procs.length; i++) await waitPort(o.wsPorts[i], procs[i]);
  if (o.target === 'pushpin') await waitPort(o.sendPorts[0], procs[0]);
  await sleep(500);
  const socks = []; let next = 0;
  // A refused open is tried again (up to 5 times): Pushpin refuses some
  // while many are opening at once.
  async function worker() {
    while (next < o.n) {
      next++;
      for (let attempt = 0; attempt < 5; attempt++) { const ws = await open(o.wsUrl); if (ws) { socks.push(ws); break; } await sleep(100); }
    }
  }
  await Promise.all(Array.from({ length: 100 }, worker));
  if (socks.length !== o.n) throw new Error(`only ${socks.length} of ${o.n} opened`);
  await sleep(o.target === 'pushpin' ? 3000 : 1000); // subscriptions settle
  const pids = [].concat(...procs.map((p) => tree(p.pid)));
  for (const port of o.sendPorts) for (const mode of ['all', 'groups']) await measure(o.label, mode, port, pids);
  for (const p of procs) { try { process.kill(-p.pid, 'SIGTERM'); } catch { } }
  for (let i = 0; i < 200 && procs.some((p) => !p.exited); i++) await sleep(50);
  for (const p of procs) { try { process.kill(-p.pid, 'SIGKILL'); } catch { } }
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
