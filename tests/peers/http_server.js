// A plain Node `http` server for the backend agent's interop tests.
// Prints {"event": "listening", "port": N} once it listens on 127.0.0.1.
// Without a Content-Length, Node answers with chunked encoding.
"use strict";
const http = require("http");

let connections = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    res.setHeader("content-type", "text/plain");
    if (req.url === "/count") {
      res.end(String(connections));
    } else if (req.url === "/chunked") {
      res.write("part one,");
      setImmediate(() => {
        res.write(" part two,");
        res.end(" end");
      });
    } else if (req.url === "/continue") {
      res.writeContinue();
      res.end("after continue");
    } else if (req.url === "/echo") {
      res.setHeader("x-chunked-request", String(req.headers["transfer-encoding"] === "chunked"));
      res.end(body);
    } else {
      res.setHeader("content-length", "5");
      res.end("hello");
    }
  });
});
server.on("connection", () => {
  connections += 1;
});
server.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ event: "listening", port: server.address().port }));
});
