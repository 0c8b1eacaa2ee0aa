// Runs the original Thunderpush browser client, `thunderpush.js` (taken from the
// thunderpush 1.0.1 sdist by setup.sh, path in $THUNDERPUSH_JS), with the real
// `sockjs-client` in Node, and reports what a page would see as JSON lines on stdout:
//
//   {"event": "open"}                           the SockJS socket opened
//   {"event": "message", "data": <value>}       a message reached a Thunder.listen handler
//   {"event": "close", "code": N, "reason": S}  the socket closed (then the process exits 0)
//
// Usage: node client.js --server host:port --key APP_KEY --user USER [--channels a,b]
//                       [--timeout SECONDS]
// It exits when stdin closes (its parent went away), after the first close, or after
// --timeout seconds (exit 3). Diagnostics go to stderr only.
"use strict";

const fs = require("fs");
const vm = require("vm");

function parseArgs(argv) {
  const args = { channels: "", timeout: "60" };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (argv[i + 1] === undefined) {
      throw new Error(`--${name} needs a value`);
    }
    args[name] = argv[i + 1];
  }
  for (const needed of ["server", "key", "user"]) {
    if (!args[needed]) {
      throw new Error(`--${needed} is required`);
    }
  }
  return args;
}

function report(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const source = process.env.THUNDERPUSH_JS;
  if (!source) {
    throw new Error("THUNDERPUSH_JS must name the original thunderpush.js");
  }
  // thunderpush.js expects a browser: a global SockJS, and `window` for its logger.
  globalThis.SockJS = require("sockjs-client");
  globalThis.window = globalThis;
  vm.runInThisContext(fs.readFileSync(source, "utf8"), { filename: source });
  const Thunder = globalThis.Thunder;

  // Watch every socket Thunder makes (it makes a new one on each reconnect).
  const makeConnection = Thunder.makeConnection;
  Thunder.makeConnection = function () {
    makeConnection.apply(this, arguments);
    this.socket.addEventListener("open", () => report({ event: "open" }));
    this.socket.addEventListener("close", (e) => {
      Thunder.no_reconnect = true;
      report({ event: "close", code: e.code, reason: e.reason });
      setTimeout(() => process.exit(0), 50);
    });
  };

  const channels = args.channels ? args.channels.split(",") : [];
  Thunder.connect(args.server, args.key, channels, { user: args.user, retry: false });
  Thunder.listen((data) => report({ event: "message", data }));

  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
  setTimeout(() => {
    process.stderr.write("client.js: timed out\n");
    process.exit(3);
  }, Number(args.timeout) * 1000);
}

try {
  main();
} catch (e) {
  process.stderr.write(`client.js: ${e.message}\n`);
  process.exit(2);
}
