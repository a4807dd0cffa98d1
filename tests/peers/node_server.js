#!/usr/bin/env node
// A scripted WebSocket server on Node's `ws` package (server side), for wxsocket's interop
// tests (tests/tests/interop.rs). Same behaviour and output as python_server.py:
//
// It listens on 127.0.0.1, port 0, and prints the port as the first line on stdout. After
// that it reports what it saw, one event a line on stdout:
//
//   open PATH              a connection was accepted (PATH includes the query)
//   protocols NAME,NAME... the sub-protocols the client offered, as the library parsed its
//                          Sec-WebSocket-Protocol header (only when it offered some)
//   extensions VALUE       the Sec-WebSocket-Extensions header of the server's answer
//                          (`extensions none` without one), once the handshake is done
//   received KIND LEN HOW  a text or binary message of LEN bytes (inflated) arrived; HOW
//                          is `compressed` when its first frame had RSV1 set (the sender
//                          deflated it), else `plain`
//   sent KIND LEN HOW      the server sent a message of LEN bytes, deflated or not
//                          (reported for the echoes and the scripted deflate messages)
//   frame OPCODE FIN LEN   (on /fragmented only) the server sent a frame: OPCODE text,
//                          binary, cont, ping, pong or close; FIN 1 or 0; LEN payload bytes.
//                          Reported as the library frames it, so the lines are in wire order
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
// Every other path answers a permessage-deflate offer with no extension; these accept it
// (RFC 7692), with the library deflating what it sends (`ws` skips messages under its
// 1 KiB threshold only when its own context is reset per message) and inflating what it
// gets:
//
//   /deflate               the library's default settings (`perMessageDeflate: true`:
//                          context takeover, the window sizes the offer asks for); echoes
//   /deflate-no-context    serverNoContextTakeover and clientNoContextTakeover; echoes
//   /deflate-window-bits   serverMaxWindowBits 10 and clientMaxWindowBits 10; echoes
//   /deflate-fragmented    library defaults; sends the text "compressed one, compressed
//                          two, compressed three" deflated in fragments with the ping
//                          "between fragments" after the first fragment, then the binary
//                          00 01 02 03 ff deflated in fragments, then the text "plain after
//                          compressed" uncompressed (RSV1 clear); reports the pong to the
//                          ping, then echoes
//   /deflate-large/SIZE    library defaults; sends one text message of SIZE bytes "x",
//                          deflated, then echoes
//   /deflate-large-coalesced/SIZE
//                          the same, the message leaving in one TCP write with the
//                          handshake answer (so the client reads both at once)
//
// `--tls CERT KEY` serves wss:// with that certificate chain and key (PEM files).
// `--client-ca CA` (with --tls) requires a client certificate signed by the CA of that PEM
// file (mutual TLS), and reports `client_cert NAME` (its common name) after `open`.
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
  const args = { tls: null, clientCa: null, lifetime: 300 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--tls' && i + 2 < argv.length) {
      args.tls = { cert: argv[i + 1], key: argv[i + 2] };
      i += 2;
    } else if (argv[i] === '--client-ca' && i + 1 < argv.length) {
      args.clientCa = argv[i + 1];
      i += 1;
    } else if (argv[i] === '--lifetime' && i + 1 < argv.length) {
      args.lifetime = Number(argv[i + 1]);
      i += 1;
    } else {
      console.error(`usage: node_server.js [--tls CERT KEY [--client-ca CA]] [--lifetime SECONDS]`);
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
  // `ws` calls this only when the client offered some.
  emit('protocols', [...offered].join(','));
  const route = routeOf(request);
  if (route.length === 2 && route[0] === 'protocol' && offered.has(route[1])) {
    return route[1];
  }
  return false;
}

// The permessage-deflate settings of each deflate path (the first path segment); every
// other path refuses the offer.
const DEFLATE = {
  deflate: true,
  'deflate-no-context': { serverNoContextTakeover: true, clientNoContextTakeover: true },
  'deflate-window-bits': { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
  'deflate-fragmented': true,
  'deflate-large': true,
  'deflate-large-coalesced': true,
};

// Holds the socket's writes from the handshake answer on until the first frame after it has
// been written as well, then lets them go together.
function coalesceAnswerWithNextWrite(socket) {
  socket.cork();
  const write = socket.write;
  let writes = 0;
  socket.write = function (...args) {
    const result = write.apply(this, args);
    writes += 1;
    if (writes === 2) {
      socket.write = write;
      // After the current tick: a frame may take two writes.
      setImmediate(() => socket.uncork());
    }
    return result;
  };
}

// Whether the message being delivered had RSV1 set on its first frame. `ws` does not tell
// its listeners; its receiver keeps the flag of the current message until the next data
// frame starts, and emits 'message' before parsing further.
function arrivedCompressed(ws) {
  return ws._receiver._compressed ? 'compressed' : 'plain';
}

// Sends a message, or the first fragment of one, and reports the whole message: LENGTH
// bytes in all. `ws` decides on compression at the first fragment, for the whole message,
// and keeps its decision in the sender.
function sendReported(ws, data, options, length) {
  ws.send(data, options);
  const kind = options.binary ? 'binary' : 'text';
  emit('sent', kind, length, ws._sender._compress ? 'compressed' : 'plain');
}

const OPCODES = { 0: 'cont', 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

// Reports every frame the library writes from now on (`frame OPCODE FIN LEN`), from the
// header the sender built (`ws` hands each frame to `sendFrame` as [header, payload?]).
function reportFramesSent(ws) {
  const sender = ws._sender;
  const sendFrame = sender.sendFrame;
  sender.sendFrame = function (list, cb) {
    const header = list[0];
    let length = header[1] & 0x7f;
    if (length === 126) length = header.readUInt16BE(2);
    else if (length === 127) length = header.readUIntBE(4, 6);
    emit('frame', OPCODES[header[0] & 0x0f], header[0] & 0x80 ? 1 : 0, length);
    return sendFrame.call(this, list, cb);
  };
}

function echo(ws) {
  ws.on('message', (data, isBinary) => {
    emit('received', isBinary ? 'binary' : 'text', data.length, arrivedCompressed(ws));
    sendReported(ws, data, { binary: isBinary }, data.length);
  });
}

function onConnection(ws, request) {
  emit('open', request.url);
  if (typeof request.socket.getPeerCertificate === 'function') {
    const cert = request.socket.getPeerCertificate();
    if (cert && cert.subject) emit('client_cert', cert.subject.CN);
  }
  emit('extensions', request.wxExtensions || 'none');
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
      reportFramesSent(ws);
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
    case 'deflate-fragmented': {
      const text = 'compressed one, compressed two, compressed three';
      sendReported(ws, 'compressed one, ', { fin: false }, text.length);
      ws.ping('between fragments');
      ws.send('compressed two, ', { fin: false });
      ws.send('compressed three', { fin: true });
      sendReported(ws, Buffer.from([0, 1]), { binary: true, fin: false }, 5);
      ws.send(Buffer.from([2]), { binary: true, fin: false });
      ws.send(Buffer.from([3, 255]), { binary: true, fin: true });
      const plain = 'plain after compressed';
      sendReported(ws, plain, { compress: false }, plain.length);
      echo(ws);
      break;
    }
    case 'deflate-large':
    case 'deflate-large-coalesced':
      sendReported(ws, 'x'.repeat(Number(route[1])), {}, Number(route[1]));
      echo(ws);
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
        ...(args.clientCa
          ? { ca: fs.readFileSync(args.clientCa), requestCert: true, rejectUnauthorized: true }
          : {}),
      })
    : http.createServer();
  // One `ws` server per compression setting (it is a per-server option), the path picking
  // which one answers the upgrade.
  const servers = new Map();
  const serverFor = (name) => {
    const perMessageDeflate = Object.hasOwn(DEFLATE, name) ? DEFLATE[name] : false;
    const key = JSON.stringify(perMessageDeflate);
    if (!servers.has(key)) {
      const wss = new WebSocketServer({
        noServer: true,
        autoPong: false,
        handleProtocols,
        perMessageDeflate,
        maxPayload: 64 * 1024 * 1024,
      });
      wss.on('headers', (headers, request) => {
        const prefix = 'sec-websocket-extensions:';
        const line = headers.find((h) => h.toLowerCase().startsWith(prefix));
        if (line) request.wxExtensions = line.slice(prefix.length).trim();
        if (routeOf(request)[0] === 'deflate-large-coalesced') {
          coalesceAnswerWithNextWrite(request.socket);
        }
      });
      wss.on('connection', onConnection);
      servers.set(key, wss);
    }
    return servers.get(key);
  };
  server.on('upgrade', (request, socket, head) => {
    const wss = serverFor(routeOf(request)[0] || '');
    wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request));
  });
  server.listen(0, '127.0.0.1', () => emit(server.address().port));

  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
  setTimeout(() => process.exit(0), args.lifetime * 1000).unref();
}

main();
