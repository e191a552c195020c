// MQTT.js over uringmq's WebSocket listener: the client browsers use, here under Node.
// Starts the uringmq binary ($URINGMQ_BIN, else target/{ci,release,debug}/uringmq) with a ws
// listener on free ports, then: v3.1.1 and v5 pub/sub over ws://, a payload much larger than
// one frame, and a packet deliberately written in pieces (one WebSocket message per piece).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import WebSocket from 'ws';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const binary = process.env.URINGMQ_BIN ??
  ['ci', 'release', 'debug'].map((p) => join(repo, 'target', p, 'uringmq')).find(existsSync);

const freePort = () => new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});

const listening = (port) => new Promise((resolve) => {
  const s = tcpConnect(port, '127.0.0.1');
  s.on('connect', () => { s.destroy(); resolve(true); });
  s.on('error', () => resolve(false));
});

let broker;
let wsPort;

before(async () => {
  assert.ok(binary, 'uringmq binary not built (set URINGMQ_BIN)');
  const port = await freePort();
  wsPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'uringmq-node-'));
  const conf = join(dir, 'uringmq.toml');
  writeFileSync(conf, `[[listener]]\ntransport = "ws"\nport = ${wsPort}\n`);
  broker = spawn(binary, ['--port', String(port), '--cores', '2', '--config', conf], { stdio: 'inherit' });
  for (let i = 0; i < 200 && !(await listening(wsPort)); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(() => broker?.kill('SIGTERM'));

const open = (protocolVersion) => mqtt.connectAsync(`ws://127.0.0.1:${wsPort}/mqtt`, {
  protocolVersion, clientId: `mqttjs-${protocolVersion}-${Math.random().toString(16).slice(2)}`,
  reconnectPeriod: 0,
});

const nextMessage = (client) => new Promise((resolve) => {
  client.once('message', (topic, payload) => resolve({ topic, payload }));
});

for (const version of [4, 5]) {
  test(`MQTT.js v${version === 4 ? '3.1.1' : '5'} publish/subscribe over ws://`, async () => {
    const sub = await open(version);
    const pub = await open(version);
    await sub.subscribeAsync(`js/${version}/#`, { qos: 1 });
    const big = Buffer.alloc(300_000, 7);
    const got = nextMessage(sub);
    await pub.publishAsync(`js/${version}/big`, big, { qos: 1 });
    const { topic, payload } = await got;
    assert.equal(topic, `js/${version}/big`);
    assert.ok(payload.equals(big));
    await pub.endAsync();
    await sub.endAsync();
  });
}

test('a CONNECT written over several WebSocket messages is one packet', async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${wsPort}/mqtt`, 'mqtt');
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  assert.equal(ws.protocol, 'mqtt');
  const connack = new Promise((resolve) => ws.once('message', (data) => resolve(Buffer.from(data))));
  // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "split".
  const connect = Buffer.from([0x10, 17, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 60, 0, 5,
    0x73, 0x70, 0x6c, 0x69, 0x74]);
  for (const piece of [connect.subarray(0, 1), connect.subarray(1, 9), connect.subarray(9)]) {
    ws.send(piece, { binary: true });
  }
  assert.deepEqual([...(await connack)], [0x20, 2, 0, 0]);
  ws.close();
});
