// Shared helpers of the viewer/OpenAPI checks: a `segd serve` child on an
// ephemeral loopback port, a small HTTP client (node:http, so that every
// method and header goes out as written), PNG writing for error cases, the
// reference masks of `segd infer`, RLE decoding and pass/fail counting.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const DATA = path.join(ROOT, 'tests', 'data');

// segd binary and weights: argv[2] / argv[3], else $SEGD_EXE /
// $SEGD_TEST_WEIGHTS, else build/segd and weights/unet3p-16.safetensors.
export function config() {
  const exe = process.argv[2] || process.env.SEGD_EXE || path.join(ROOT, 'build', 'segd');
  const weights = process.argv[3] || process.env.SEGD_TEST_WEIGHTS ||
    path.join(ROOT, 'weights', 'unet3p-16.safetensors');
  return { exe: path.resolve(exe), weights: path.resolve(weights) };
}

// ---------------------------------------------------------------- results

let passed = 0, failed = 0;
export function check(name, ok, detail) {
  if (ok) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail ? ': ' + detail : ''}`);
  }
  return !!ok;
}
export function summary() {
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}
export function skip(reason) {
  console.log(`SKIP: ${reason}`);
  console.log('0 passed, 0 failed, 1 skipped');
  process.exit(77); // meson's "skipped"
}

// ---------------------------------------------------------------- daemon

const daemons = new Set();

export async function startDaemon(cfg, extra = [], env = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'segd-viewer-'));
  const portFile = path.join(dir, 'port');
  const logFile = path.join(dir, 'log');
  const log = fs.openSync(logFile, 'w');
  const args = ['serve', '--bind', '127.0.0.1', '--port', '0', '--port-file', portFile,
    '--weights', cfg.weights, '--access-log', 'off', ...extra];
  const child = spawn(cfg.exe, args, { stdio: ['ignore', log, log], env: { ...process.env, ...env } });
  fs.closeSync(log);
  const d = { child, dir, logFile, exited: null };
  daemons.add(d);
  d.exitPromise = new Promise((res) => child.on('exit', (code, sig) => { d.exited = { code, sig }; daemons.delete(d); res(d.exited); }));
  child.on('error', () => {});
  const t0 = Date.now();
  while (Date.now() - t0 < 30000) {
    if (d.exited) throw new Error(`segd serve exited early (${JSON.stringify(d.exited)}): ${readLog(d)}`);
    if (fs.existsSync(portFile)) {
      const port = parseInt(fs.readFileSync(portFile, 'utf8'), 10);
      if (port > 0) {
        d.port = port;
        d.base = `http://127.0.0.1:${port}`;
        return d;
      }
    }
    await sleep(50);
  }
  await stopDaemon(d);
  throw new Error('segd serve did not start in 30 s: ' + readLog(d));
}

export function readLog(d) {
  try { return fs.readFileSync(d.logFile, 'utf8').slice(-2000); } catch { return ''; }
}

// SIGTERM (drain), then SIGKILL after `grace` ms.  Resolves to the exit.
export async function stopDaemon(d, grace = 15000) {
  if (!d.exited) {
    d.child.kill('SIGTERM');
    const t = setTimeout(() => d.child.kill('SIGKILL'), grace);
    await d.exitPromise;
    clearTimeout(t);
  }
  fs.rmSync(d.dir, { recursive: true, force: true });
  return d.exited;
}

// Wait up to `ms` for the daemon to exit by itself, then stop it.
export async function waitExit(d, ms) {
  await Promise.race([d.exitPromise, sleep(ms)]);
  return stopDaemon(d);
}

function killAll() {
  for (const d of daemons) try { d.child.kill('SIGKILL'); } catch { /* gone */ }
}
process.on('exit', killAll);
// An exception nobody caught (a timeout of a page wait, say) still ends
// with a FAIL line and the summary.
process.on('uncaughtException', (e) => {
  check('no unexpected error', false, (e && e.stack) || String(e));
  killAll();
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(1);
});

// Whole-script time limit: kill the children and fail.
export function watchdog(seconds) {
  const t = setTimeout(() => {
    console.log(`FAIL time limit of ${seconds} s reached`);
    killAll();
    console.log(`${passed} passed, ${failed + 1} failed`);
    process.exit(1);
  }, seconds * 1000);
  t.unref();
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- HTTP

// Resolves to the answer {status, headers, body, text(), json()}.  The
// body goes with a Content-Length unless `chunked`.
export function request(base, method, urlPath, { headers = {}, body = null, timeout = 60000, chunked = false } = {}) {
  const u = new URL(urlPath, base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: u.pathname + u.search,
      headers: { ...(body && !chunked ? { 'Content-Length': body.length } : {}), ...headers }, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks),
        text() { return this.body.toString('utf8'); },
        json() { return JSON.parse(this.body.toString('utf8')); } }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timed out`)));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

// The request written as given on a raw socket (headers verbatim, e.g. a
// Content-Length that the body does not match); the answer read until the
// server closes the connection.
export function rawRequest(base, method, urlPath, { headers = {}, body = null, timeout = 30000 } = {}) {
  const u = new URL(urlPath, base);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname);
    const chunks = [];
    sock.setTimeout(timeout, () => sock.destroy(new Error(`${method} ${urlPath}: timed out`)));
    sock.on('connect', () => {
      let head = `${method} ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n`;
      for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
      sock.write(head + '\r\n');
      if (body) sock.write(body);
    });
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (e) => { if (!chunks.length) reject(e); });
    sock.on('close', () => {
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error('no HTTP answer'));
      const lines = all.subarray(0, end).toString('latin1').split('\r\n');
      const hs = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        hs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      let b = all.subarray(end + 4);
      if (hs['content-length'] !== undefined) b = b.subarray(0, Number(hs['content-length']));
      resolve({ status: Number(lines[0].split(' ')[1]), headers: hs, body: b,
        text() { return this.body.toString('utf8'); },
        json() { return JSON.parse(this.body.toString('utf8')); } });
    });
  });
}

export function multipart(parts, boundary = 'segd-test-' + Math.random().toString(16).slice(2)) {
  const bufs = [];
  for (const p of parts) {
    let h = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename) h += `; filename="${p.filename}"`;
    h += `\r\nContent-Type: ${p.type || 'image/png'}\r\n\r\n`;
    bufs.push(Buffer.from(h), p.data, Buffer.from('\r\n'));
  }
  bufs.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(bufs), type: `multipart/form-data; boundary=${boundary}` };
}

// ---------------------------------------------------------------- PNG

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
// An 8-bit grey PNG (pixel(x, y) -> 0..255); width or height may be 0.
export function greyPng(width, height, pixel = (x, y) => (x * 7 + y * 13) & 255) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 0;
  const raw = Buffer.alloc(height * (width + 1));
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) raw[y * (width + 1) + 1 + x] = pixel(x, y);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

// ---------------------------------------------------------------- masks

// `segd infer` on the files: {id: document}, id = file name without .png.
export function inferMasks(cfg, files) {
  const out = execFileSync(cfg.exe, ['infer', '--weights', cfg.weights, ...files],
    { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 120000 });
  const docs = {};
  for (const line of out.split('\n')) if (line.trim()) {
    const d = JSON.parse(line);
    docs[d.id] = d;
  }
  return docs;
}

export function decodeRle(rle, npix) {
  const m = new Uint8Array(npix);
  const v = (rle || '').trim().split(/\s+/).filter(Boolean).map(Number);
  if (v.length % 2) throw new Error('odd RLE');
  for (let i = 0; i < v.length; i += 2) {
    if (v[i] < 1 || v[i] - 1 + v[i + 1] > npix) throw new Error('RLE out of range');
    m.fill(1, v[i] - 1, v[i] - 1 + v[i + 1]);
  }
  return m;
}
