// openapi_check: src/http/static/openapi.json is a valid OpenAPI 3.1
// document, and real answers of `segd serve` for every route, method and
// error status match it (status documented, media type, JSON body against
// its schema with ajv, documented headers such as Allow and Retry-After).
//
// usage: node openapi_check.mjs [SEGD_EXE [WEIGHTS]]
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  ROOT, DATA, config, check, summary, watchdog, startDaemon, stopDaemon, readLog, request, multipart,
  greyPng, decodeRle, sleep, rawRequest, waitExit,
} from './lib.mjs';

const require = createRequire(import.meta.url);
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats').default;

watchdog(240);
const cfg = config();
const SPEC_FILE = path.join(ROOT, 'src', 'http', 'static', 'openapi.json');
const specText = fs.readFileSync(SPEC_FILE, 'utf8');
const spec = JSON.parse(specText);
const METHODS = ['get', 'head', 'post', 'put', 'delete', 'patch', 'options', 'trace'];

// ------------------------------------------------------------ the document

{
  const { Validator } = await import('@seriousme/openapi-schema-validator');
  const v = new Validator();
  const res = await v.validate(structuredClone(spec));
  check('openapi.json is a valid OpenAPI 3.1 document', res.valid && v.version.startsWith('3.1'),
    res.valid ? `version ${v.version}` : JSON.stringify(res.errors).slice(0, 2000));
  // every $ref resolves
  const bad = [];
  const walk = (v) => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (v && typeof v === 'object') {
      if (typeof v.$ref === 'string') {
        const target = v.$ref.replace(/^#\//, '').split('/').reduce((o, k) => (o ? o[k] : undefined), spec);
        if (!v.$ref.startsWith('#/') || target === undefined) bad.push(v.$ref);
      }
      Object.values(v).forEach(walk);
    }
  };
  walk(spec);
  check('every $ref of openapi.json resolves', bad.length === 0, bad.join(', '));
}

// Component schemas compiled with ajv (strict): refs rewritten to $defs.
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const rewrite = (v) => {
  if (Array.isArray(v)) return v.map(rewrite);
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v))
      o[k] = k === '$ref' && typeof x === 'string' ? x.replace('#/components/schemas/', 'urn:segd:openapi#/$defs/') : rewrite(x);
    return o;
  }
  return v;
};
ajv.addSchema({ $id: 'urn:segd:openapi', $defs: rewrite(spec.components.schemas) });
const compiled = new Map();
function validatorFor(schema) {
  const key = JSON.stringify(schema);
  if (!compiled.has(key)) compiled.set(key, ajv.compile(rewrite(schema)));
  return compiled.get(key);
}

function deref(obj) {
  while (obj && obj.$ref) obj = obj.$ref.slice(2).split('/').reduce((o, k) => o[k], spec);
  return obj;
}

function documentedMethods(p) {
  const item = spec.paths[p];
  return item ? METHODS.filter((m) => item[m]).map((m) => m.toUpperCase()) : [];
}

// The response object the document gives for this answer.
function responseDoc(p, method, status) {
  const item = spec.paths[p];
  if (!item) return status === 404 ? deref({ $ref: '#/components/responses/NotFound' }) : null;
  const op = item[method.toLowerCase()];
  if (!op) return status === 405 ? deref({ $ref: '#/components/responses/MethodNotAllowed' }) : null;
  const r = op.responses[String(status)] || op.responses[`${String(status)[0]}XX`] || op.responses.default;
  return r ? deref(r) : null;
}

const mediaBase = (t) => (t || '').split(';')[0].trim().toLowerCase();

// Validate one real answer against the document; `name` labels the check.
function conforms(name, p, method, res) {
  const problems = [];
  const doc = responseDoc(p, method, res.status);
  if (!doc) {
    check(name, false, `status ${res.status} of ${method} ${p} is not documented`);
    return null;
  }
  // headers the document describes (those with a fixed or patterned value)
  for (const [h, hd0] of Object.entries(doc.headers || {})) {
    const hd = deref(hd0);
    const v = res.headers[h.toLowerCase()];
    if (v === undefined) {
      if (['X-Request-Id', 'Cache-Control', 'Allow', 'Retry-After'].includes(h)) problems.push(`header ${h} missing`);
      continue;
    }
    if (hd.schema && !validatorFor(hd.schema)(v)) problems.push(`header ${h}: ${JSON.stringify(v)} does not match its schema`);
  }
  if (res.status === 405 && res.headers.allow !== documentedMethods(p).join(', '))
    problems.push(`Allow "${res.headers.allow}" but the document lists ${documentedMethods(p).join(', ')}`);
  let body = null;
  if (method !== 'HEAD' && res.status !== 204) {
    const ctype = res.headers['content-type'];
    const media = Object.entries(doc.content || {}).find(([t]) => mediaBase(t) === mediaBase(ctype));
    if (!media) {
      problems.push(`Content-Type ${ctype} not documented (${Object.keys(doc.content || {}).join(', ') || 'no body'})`);
    } else {
      if (media[0].toLowerCase() !== (ctype || '').toLowerCase()) problems.push(`Content-Type "${ctype}" vs documented "${media[0]}"`);
      const schema = media[1].schema;
      if (mediaBase(ctype) === 'application/json') {
        try { body = res.json(); } catch (e) { problems.push('body is not JSON: ' + e.message); }
        if (body !== null && schema) {
          const v = validatorFor(schema);
          if (!v(body)) problems.push(ajv.errorsText(v.errors));
        }
      } else if (schema) {
        body = res.text();
        const v = validatorFor(schema);
        if (!v(body)) problems.push(ajv.errorsText(v.errors));
      }
    }
  } else if (res.body.length) {
    problems.push(`${res.body.length} body bytes in a ${method} ${res.status} answer`);
  }
  check(name, problems.length === 0, problems.join('; '));
  return body;
}

// ------------------------------------------------------------ main daemon

const slice110 = fs.readFileSync(path.join(DATA, 'case110_day16_slice_0070_360_310_1.50_1.50.png'));
const slice101 = fs.readFileSync(path.join(DATA, 'case101_day20_slice_0090_266_266_1.50_1.50.png'));

let d;
try {
  d = await startDaemon(cfg, ['--workers', '1', '--cors-origin', '*', '--max-body', '1M',
    '--max-pixels', '120000', '--max-parts', '3']);
} catch (e) {
  check('segd serve starts', false, e.message);
  process.exit(summary());
}
const B = d.base;
const get = (p, m = 'GET', opts = {}) => request(B, m, p, opts);

// every documented path and method
for (const p of Object.keys(spec.paths)) {
  for (const m of documentedMethods(p)) {
    if (m === 'POST') continue; // below, with bodies
    const res = await get(p, m);
    const body = conforms(`${m} ${p} -> ${res.status}`, p, m, res);
    if (m === 'OPTIONS') {
      check(`OPTIONS ${p}: Allow lists the documented methods`, res.status === 204 &&
        res.headers.allow === documentedMethods(p).join(', '), `${res.status} Allow: ${res.headers.allow}`);
      check(`OPTIONS ${p}: CORS preflight headers`, res.headers['access-control-allow-methods'] === res.headers.allow &&
        !!res.headers['access-control-allow-headers'] && res.headers['access-control-allow-origin'] === '*');
    }
    if (m === 'GET' && p === '/openapi.json')
      check('GET /openapi.json serves the source file byte for byte', res.body.toString('utf8') === specText);
    if (m === 'GET' && (p === '/' || p === '/index.html'))
      check(`GET ${p} is the viewer page`, /<title>segd viewer<\/title>/.test(res.text()) && /viewer\.js/.test(res.text()));
    if (m === 'GET' && p === '/metrics') {
      const lines = res.text().split('\n').filter((l) => l && !l.startsWith('#'));
      const badLine = lines.find((l) => !/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfa]+$/.test(l));
      check('GET /metrics is Prometheus text', lines.length > 10 && !badLine, badLine);
    }
    if (m === 'GET' && p === '/v1/model')
      check('GET /v1/model has the classes', Array.isArray(body && body.classes) && body.classes.length > 0);
  }
}

// POST /v1/segment: raw PNG, with ?id= and ?threshold=
{
  const res = await get('/v1/segment?id=case110_day16_slice_0070&threshold=0.5', 'POST',
    { headers: { 'Content-Type': 'image/png', 'X-Request-Id': 'openapi-check-1' }, body: slice110 });
  const body = conforms('POST /v1/segment image/png -> 200', '/v1/segment', 'POST', res);
  check('POST /v1/segment: X-Request-Id echoed', res.headers['x-request-id'] === 'openapi-check-1');
  if (body && body.masks) {
    check('POST /v1/segment: id from ?id=', body.id === 'case110_day16_slice_0070', body.id);
    check('POST /v1/segment: native size', body.width === 360 && body.height === 310);
    const mismatch = Object.keys(body.masks).filter((k) => {
      const m = decodeRle(body.masks[k], body.width * body.height);
      return m.reduce((a, b) => a + b, 0) !== body.pixels[k];
    });
    check('POST /v1/segment: pixels{} = pixels set in the decoded RLE', mismatch.length === 0, mismatch.join(','));
  }
}
// multipart: two files
{
  const mp = multipart([
    { name: 'file', filename: 'scans/case110_day16_slice_0070.png', data: slice110 },
    { name: 'note', filename: '', data: Buffer.from('ignored'), type: 'text/plain' },
    { name: 'file', filename: 'case101_day20_slice_0090.png', data: slice101 },
  ]);
  const res = await get('/v1/segment', 'POST', { headers: { 'Content-Type': mp.type }, body: mp.body });
  const body = conforms('POST /v1/segment multipart -> 200', '/v1/segment', 'POST', res);
  check('multipart: one result per file part, ids from file names', body && Array.isArray(body.results) &&
    body.results.map((r) => r.id).join() === 'case110_day16_slice_0070,case101_day20_slice_0090',
    body && JSON.stringify((body.results || []).map((r) => r.id)));
}

// POST /v1/series: a PNG series (Kaggle names), ordered by slice number
{
  const mp = multipart([
    { name: 'file', filename: 'case110_day16_slice_0071_360_310_1.50_1.50.png', data: slice110 },
    { name: 'file', filename: 'case110_day16_slice_0070_360_310_1.50_1.50.png', data: slice110 },
  ]);
  const res = await get('/v1/series', 'POST', { headers: { 'Content-Type': mp.type }, body: mp.body });
  const body = conforms('POST /v1/series multipart -> 200', '/v1/series', 'POST', res);
  check('series: slices ordered by slice number', body && Array.isArray(body.slices) &&
    body.slices.map((r) => r.id).join() ===
      'case110_day16_slice_0070_360_310_1.50_1.50,case110_day16_slice_0071_360_310_1.50_1.50',
    body && JSON.stringify((body.slices || []).map((r) => r.id)));
  // ?preview=1: each slice with its decoded image (the schema's `image`)
  const pv = await get('/v1/series?preview=1', 'POST', { headers: { 'Content-Type': mp.type }, body: mp.body });
  const pb = conforms('POST /v1/series?preview=1 -> 200 with slice images', '/v1/series', 'POST', pv);
  check('series preview: every slice has image.png, offset, scale', pb && Array.isArray(pb.slices) &&
    pb.slices.every((x) => x.image && typeof x.image.png === 'string' && x.image.scale > 0),
    pb && JSON.stringify(pb.slices.map((x) => Object.keys(x.image || {}))));
}

// error statuses
const errorCases = [
  ['404 unknown path', '/no/such/path', 'GET', {}],
  ['404 unknown path (POST)', '/v2/segment', 'POST', { headers: { 'Content-Type': 'image/png' }, body: slice110 }],
  ['405 GET /v1/segment', '/v1/segment', 'GET', {}],
  ['405 DELETE /v1/model', '/v1/model', 'DELETE', {}],
  ['405 POST /healthz', '/healthz', 'POST', { headers: { 'Content-Type': 'image/png' }, body: Buffer.from('x') }],
  ['405 PUT /', '/', 'PUT', { body: Buffer.from('x') }],
  ['405 POST /openapi.json', '/openapi.json', 'POST', { headers: { 'Content-Type': 'application/json' }, body: Buffer.from('{}') }],
  ['400 not a PNG', '/v1/segment', 'POST', { headers: { 'Content-Type': 'image/png' }, body: Buffer.from('GIF89a not a png') }],
  ['400 empty body', '/v1/segment', 'POST', { headers: { 'Content-Type': 'image/png', 'Content-Length': '0' } }],
  ['400 bad threshold', '/v1/segment?threshold=1.5', 'POST', { headers: { 'Content-Type': 'image/png' }, body: slice110 }],
  ['400 multipart without boundary', '/v1/segment', 'POST', { headers: { 'Content-Type': 'multipart/form-data' }, body: slice110 }],
  ['400 multipart without a file part', '/v1/segment', 'POST', (() => {
    const mp = multipart([{ name: 'other', filename: 'a.png', data: slice110 }]);
    return { headers: { 'Content-Type': mp.type }, body: mp.body };
  })()],
  ['413 chunked body over --max-body', '/v1/segment', 'POST', { headers: { 'Content-Type': 'image/png' }, body: Buffer.alloc(1100 * 1024, 7), chunked: true }],
  ['413 Content-Length over --max-body', '/v1/segment', 'POST', { headers: { 'Content-Type': 'image/png', 'Content-Length': '2000000' }, body: Buffer.alloc(1000, 7), raw: true }],
  ['413 image over --max-pixels', '/v1/segment', 'POST', { headers: { 'Content-Type': 'image/png' }, body: greyPng(400, 400) }],
  ['413 more than --max-parts parts', '/v1/segment', 'POST', (() => {
    const mp = multipart([1, 2, 3, 4].map((i) => ({ name: 'file', filename: `s${i}.png`, data: greyPng(8, 8) })));
    return { headers: { 'Content-Type': mp.type }, body: mp.body };
  })()],
  ['415 text/plain body', '/v1/segment', 'POST', { headers: { 'Content-Type': 'text/plain' }, body: Buffer.from('hello') }],
  ['415 a PNG as application/dicom', '/v1/segment', 'POST', { headers: { 'Content-Type': 'application/dicom' }, body: slice110 }],
  ['415 image/png to /v1/series', '/v1/series', 'POST', { headers: { 'Content-Type': 'image/png' }, body: slice110 }],
  ['406 SEG with Accept: application/json', '/v1/series?format=seg', 'POST', (() => {
    const mp = multipart([{ name: 'file', filename: 'case1_day1_slice_0001_360_310_1.50_1.50.png', data: slice110 }]);
    return { headers: { 'Content-Type': mp.type, Accept: 'application/json' }, body: mp.body };
  })()],
  ['422 PNG series without Kaggle names', '/v1/series', 'POST', (() => {
    const mp = multipart([{ name: 'file', filename: 'a.png', data: slice110 }]);
    return { headers: { 'Content-Type': mp.type }, body: mp.body };
  })()],
  ['422 PNG of zero size', '/v1/segment', 'POST', { headers: { 'Content-Type': 'image/png' }, body: greyPng(0, 5) }],
];
for (const [label, p, m, opts] of errorCases) {
  const want = Number(label.slice(0, 3));
  let res;
  try {
    res = opts.raw ? await rawRequest(B, m, p, opts) : await get(p, m, opts);
  } catch (e) {
    check(label, false, e.message);
    continue;
  }
  if (!check(`${label}: status ${want}`, res.status === want, `got ${res.status} ${res.text().slice(0, 200)}`)) continue;
  const pathKey = spec.paths[new URL(p, B).pathname] ? new URL(p, B).pathname : p;
  conforms(`${label}: answer matches the document`, pathKey, m, res);
}

const st = await stopDaemon(d);
check('main daemon drains and exits 0', st && st.code === 0, JSON.stringify(st) + ' ' + readLog(d).slice(-300));

// ------------------------------------------------------------ 503 / 504 / draining

// One worker that sleeps 1.5 s before each job, a queue of one, a 1 s
// deadline: A runs, B waits in the queue past its deadline (504), C finds
// the queue full (503 + Retry-After); after SIGTERM readyz and new jobs
// answer 503 while A finishes.
try {
  d = await startDaemon(cfg, ['--workers', '1', '--queue-depth', '1', '--debug-job-delay', '1500',
    '--request-timeout', '1', '--drain-timeout', '20']);
} catch (e) {
  check('second daemon starts', false, e.message);
  process.exit(summary());
}
{
  const post = () => request(d.base, 'POST', '/v1/segment', { headers: { 'Content-Type': 'image/png' }, body: slice101 });
  const a = post();
  await sleep(150);
  const b = post();
  await sleep(150);
  const c = post();
  const rc = await c;
  if (check('503 queue full: status', rc.status === 503, `got ${rc.status}`)) {
    conforms('503 queue full: answer matches the document', '/v1/segment', 'POST', rc);
    check('503 queue full: Retry-After', /^[0-9]+$/.test(rc.headers['retry-after'] || ''), rc.headers['retry-after']);
  }
  const rb = await b;
  if (check('504 deadline: status', rb.status === 504, `got ${rb.status}`))
    conforms('504 deadline: answer matches the document', '/v1/segment', 'POST', rb);
  d.child.kill('SIGTERM');
  await sleep(200);
  const rr = await request(d.base, 'GET', '/readyz');
  if (check('503 readyz while draining: status', rr.status === 503, `got ${rr.status}`))
    conforms('503 readyz while draining: answer matches the document', '/readyz', 'GET', rr);
  const rn = await post();
  if (check('503 new job while draining: status', rn.status === 503, `got ${rn.status}`))
    conforms('503 new job while draining: answer matches the document', '/v1/segment', 'POST', rn);
  const ra = await a;
  if (check('accepted job answered during the drain', ra.status === 200, `got ${ra.status}`))
    conforms('drained job: answer matches the document', '/v1/segment', 'POST', ra);
  const st2 = await waitExit(d, 25000);
  check('second daemon drains and exits 0', st2 && st2.code === 0, JSON.stringify(st2));
}

process.exit(summary());
