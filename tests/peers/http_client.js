// Node's own http client against SocketDock's callback API (tests/test_fastchannel_peers.py).
// usage: node http_client.js BASE_URL SEND_PATH ; prints one JSON object per check.
"use strict";
const http = require("http");

const [base, sendPath] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const report = (o) => process.stdout.write(JSON.stringify(o) + "\n");

function request(method, path, opts, write) {
  return new Promise((resolve, reject) => {
    const req = http.request(base + path, { method, agent, ...opts }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(),
                                    reused: req.reusedSocket, headers: res.headers }));
    });
    req.on("error", reject);
    req.setTimeout(10000, () => req.destroy(new Error("timeout")));
    write(req);
  });
}

(async () => {
  const first = await request("GET", "/healthz", {}, (r) => r.end());
  const second = await request("GET", "/healthz", {}, (r) => r.end());
  report({ check: "keepalive", status: [first.status, second.status], reused: second.reused });
  const head = await request("HEAD", "/healthz", {}, (r) => r.end());
  report({ check: "head", status: head.status, body: head.body, reused: head.reused });
  const chunked = await request("POST", sendPath, { headers: { "content-type": "text/plain" } }, (r) => {
    r.write("chunked-");
    setImmediate(() => { r.write("from-"); setImmediate(() => r.end("node")); });
  });
  report({ check: "chunked", status: chunked.status, reused: chunked.reused });
  let continued = false;
  const expect = await request("POST", sendPath, {
    headers: { "content-type": "text/plain", expect: "100-continue", "content-length": 14 },
  }, (r) => r.on("continue", () => { continued = true; r.end("after-continue"); }));
  report({ check: "continue", status: expect.status, continued });
  agent.destroy();
})().catch((e) => { report({ check: "error", message: String(e) }); process.exitCode = 1; });
