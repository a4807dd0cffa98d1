#!/usr/bin/env node
// A scripted WebSocket server on Node's `ws` package (server side), for wxsocket's interop
// tests (tests/tests/interop.rs). Same behaviour and output as python_server.py:
//
// It listens on 127.0.0.1, port 0, and prints the port as the first line on stdout. After
// that it reports what it saw, one event a line on stdout:
//
//   open PATH              a connection was accepted (PATH includes the query)
//   ping                   the client pinged
//   pong PAYLOAD           the client answered our ping
//   closed CODE REASON     the connection ended; CODE and REASON of the client's close frame
//                          (1005 when it had no code), `closed none` when the client sent
//                          no close frame
//
// What it does is chosen by the request path:
//
//   /echo                  echoes text and binary messages (any size up to 64 MiB)
//   /protocol/NAME         selects sub-protocol NAME if the client offered it, else none;
//                          then echoes (every other path selects none)
//   /headers               sends the request headers as one JSON text message (names
//                          lower-cased, keys sorted, compact), then echoes
//   /fragmented            sends a text and a binary message in several fragments each (with
//                          a ping between two fragments of the text), then echoes
//   /ping                  pings the client with payload "are you there" and reports the
//                          pong, then echoes
//   /close/CODE[/REASON]   closes at once with CODE and the URL-decoded REASON
//   /drop-mid-message      sends the first bytes of a 100-byte binary frame and drops the
//                          TCP connection
//   /silent                answers nothing at all: no echo, no pong (it still reports the
//                          pings it receives)
//
// `--tls CERT KEY` serves wss:// with that certificate chain and key (PEM files).
//
// The server exits when its stdin reaches end of file (the test that started it is gone)
// and in any case after --lifetime seconds.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const PEER_PING_PAYLOAD = 'are you there';

function parseArgs(argv) {
  const args = { tls: null, lifetime: 300 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--tls' && i + 2 < argv.length) {
      args.tls = { cert: argv[i + 1], key: argv[i + 2] };
      i += 2;
    } else if (argv[i] === '--lifetime' && i + 1 < argv.length) {
      args.lifetime = Number(argv[i + 1]);
      i += 1;
    } else {
      console.error(`usage: node_server.js [--tls CERT KEY] [--lifetime SECONDS]`);
      process.exit(2);
    }
  }
  return args;
}

function emit(...parts) {
  process.stdout.write(parts.join(' ') + '\n');
}

function routeOf(request) {
  const path = request.url.split('?', 1)[0];
  return path.split('/').slice(1).map((p) => decodeURIComponent(p));
}

function handleProtocols(offered, request) {
  const route = routeOf(request);
  if (route.length === 2 && route[0] === 'protocol' && offered.has(route[1])) {
    return route[1];
  }
  return false;
}

function echo(ws) {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

function onConnection(ws, request) {
  emit('open', request.url);
  const route = routeOf(request);
  const name = route[0] || '';
  const silent = name === 'silent';

  // autoPong is off for the whole server so /silent can ignore pings; every other route
  // answers them here, with the library's own pong.
  ws.on('ping', (data) => {
    emit('ping');
    if (!silent) ws.pong(data);
  });
  ws.on('pong', (data) => emit('pong', data.toString()));
  ws.on('close', (code, reason) => {
    // ws reports 1006 when no close frame arrived.
    emit('closed', code === 1006 ? 'none' : code, code === 1006 ? '' : reason.toString());
  });
  ws.on('error', () => {});

  switch (name) {
    case 'headers': {
      const headers = {};
      for (const key of Object.keys(request.headers).sort()) {
        const value = request.headers[key];
        headers[key] = Array.isArray(value) ? value.join(', ') : value;
      }
      ws.send(JSON.stringify(headers));
      echo(ws);
      break;
    }
    case 'fragmented':
      ws.send('fragment one, ', { fin: false });
      ws.ping('between fragments');
      ws.send('fragment two, ', { fin: false });
      ws.send('fragment three', { fin: true });
      ws.send(Buffer.from([0, 1]), { binary: true, fin: false });
      ws.send(Buffer.from([2]), { binary: true, fin: false });
      ws.send(Buffer.from([3, 255]), { binary: true, fin: true });
      echo(ws);
      break;
    case 'ping':
      ws.ping(PEER_PING_PAYLOAD);
      echo(ws);
      break;
    case 'close':
      ws.close(Number(route[1]), route[2] || '');
      break;
    case 'drop-mid-message': {
      // Header of an unmasked binary frame announcing 100 bytes, then only 10 of them.
      const socket = request.socket;
      socket.write(Buffer.concat([Buffer.from([0x82, 100]), Buffer.alloc(10)]), () =>
        socket.destroy(),
      );
      break;
    }
    case 'silent':
      break;
    default:
      echo(ws);
  }
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const server = args.tls
    ? https.createServer({
        cert: fs.readFileSync(args.tls.cert),
        key: fs.readFileSync(args.tls.key),
      })
    : http.createServer();
  const wss = new WebSocketServer({
    server,
    autoPong: false,
    handleProtocols,
    perMessageDeflate: false,
    maxPayload: 64 * 1024 * 1024,
  });
  wss.on('connection', onConnection);
  server.listen(0, '127.0.0.1', () => emit(server.address().port));

  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
  setTimeout(() => process.exit(0), args.lifetime * 1000).unref();
}

main();
