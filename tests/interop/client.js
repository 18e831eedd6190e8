// A Node `ws` client for SocketDock's interop tests (tests/test_interop_node.py).
//
//   node client.js WS_URL MODE
//
// It prints one JSON object per line on stdout: {"event": "open"}, then the
// results of MODE, and {"event": "closed", "code": N, "reason": "..."} when the
// socket closes. MODE is one of:
//   echo    send text, binary and a 1 MiB binary message; report what came back
//   close   send "hi", then close with 4002 "client bye"
//   wait    send "hi" and wait for the server to close
//   stall   stop reading the socket at once, so pings go unanswered
// It exits by itself after 30 s, so a forgotten process cannot linger.
"use strict";
const WebSocket = require("ws");

const [url, mode] = process.argv.slice(2);
const BIG = 1024 * 1024;
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
setTimeout(() => process.exit(3), 30000).unref();

function pattern(n) {
  const buf = Buffer.alloc(n);
  for (let i = 0; i < n; i++) buf[i] = i % 251;
  return buf;
}

const ws = new WebSocket(url);
ws.on("error", (err) => say({ event: "error", message: String(err) }));
ws.on("close", (code, reason) => {
  say({ event: "closed", code, reason: reason.toString("utf8") });
  process.exit(0);
});
ws.on("open", () => {
  say({ event: "open" });
  if (mode === "echo") {
    const replies = [];
    ws.on("message", (data, isBinary) => {
      replies.push({ data, isBinary });
      if (replies.length < 3) return;
      const [text, bin, big] = replies;
      say({
        event: "echo",
        text: text.isBinary ? null : text.data.toString("utf8"),
        binary: bin.isBinary ? bin.data.toString("hex") : null,
        big_binary: big.isBinary,
        big_length: big.data.length,
        big_equal: Buffer.compare(big.data, pattern(BIG)) === 0,
      });
      ws.close(1000, "done");
    });
    ws.send("hello \u00fc");
    ws.send(Buffer.from([0, 1, 254, 255]));
    ws.send(pattern(BIG));
  } else if (mode === "close") {
    ws.send("hi");
    ws.close(4002, "client bye");
  } else if (mode === "wait") {
    ws.send("hi");
  } else if (mode === "stall") {
    // ws answers pings as it reads them; a paused socket reads nothing. Stop
    // at once: a slow start must not let the first ping time out before the
    // client reports that it stalled.
    ws._socket.pause();
    say({ event: "stalled" });
  } else {
    say({ event: "error", message: "unknown mode " + mode });
    process.exit(2);
  }
});
