// openapi_check: src/http/static/openapi.json is a valid OpenAPI 3.1
// document that lists every route the daemon serves (its route table in
// src/http/server.c, the Open Inference Protocol's /versions/ forms of
// src/http/oip.c and the viewer files of src/http/static/meson.build) with
// the methods the daemon allows, and no other; and real answers of `segd
// serve` for every route, method and error status match it (status
// documented, media type, JSON body against its schema with ajv,
// documented headers such as Allow and Retry-After).
//
// usage: node openapi_check.mjs [SEGD_EXE [WEIGHTS]]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  ROOT, DATA, config, check, summary, watchdog, startDaemon, stopDaemon, readLog, request, multipart,
  greyPng, decodeRle, sleep, rawRequest, waitExit, inferMasks,
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

// ------------------------------------------------------------ the route table

// Every route the daemon serves, read from its sources: {path: Allow}.
// server.c's segd_routes[] gives each path (the viewer files stand behind
// its "static" entry) and Allow; oip.c also takes /versions/{version}
// after a model's name; the document names the path parameters
// model_name and model_version.
function servedRoutes() {
  const src = (...p) => fs.readFileSync(path.join(ROOT, 'src', 'http', ...p), 'utf8');
  const table = src('server.c').match(/segd_routes\[R_NONE\] = \{([\s\S]*?)\n\};/);
  if (!table) return null;
  const routes = {};
  for (const [, p, allow] of table[1].matchAll(/\[R_\w+\] = \{"([^"]+)", (?:true|false), "([^"]+)"\}/g)) {
    if (p === 'static') {
      const files = src('static', 'meson.build').match(/segd_static_files = files\(([^)]*)\)/);
      for (const [, f] of (files ? files[1] : '').matchAll(/'([^']+)'/g)) routes['/' + f] = allow;
      routes['/'] = allow; // index.html
      continue;
    }
    const q = p.replace('{name}', '{model_name}');
    routes[q] = allow;
    if (q.startsWith('/v2/models/{model_name}') && src('oip.c').includes('"/versions/"'))
      routes[q.replace('{model_name}', '{model_name}/versions/{model_version}')] = allow;
  }
  return routes;
}
{
  const routes = servedRoutes();
  if (check('the route table of src/http/server.c is readable', routes && Object.keys(routes).length > 10,
    JSON.stringify(routes))) {
    const missing = Object.keys(routes).filter((p) => !spec.paths[p]);
    check('openapi.json lists every route the daemon serves', missing.length === 0, missing.join(', '));
    const extra = Object.keys(spec.paths).filter((p) => !routes[p]);
    check('openapi.json lists no route the daemon lacks', extra.length === 0, extra.join(', '));
    const wrong = Object.keys(routes).filter((p) => spec.paths[p] && documentedMethods(p).join(', ') !== routes[p])
      .map((p) => `${p}: ${documentedMethods(p).join(', ')} vs Allow ${routes[p]}`);
    check('openapi.json gives each route the methods of its Allow', wrong.length === 0, wrong.join('; '));
  }
}

// The document's path (template) of a request path, or null.
function specPath(urlPath) {
  if (spec.paths[urlPath]) return urlPath;
  for (const p of Object.keys(spec.paths)) {
    if (!p.includes('{')) continue;
    const re = new RegExp('^' + p.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/]+') + '$');
    if (re.test(urlPath)) return p;
  }
  return null;
}

// The response object the document gives for this answer.
function responseDoc(p, method, status) {
  const item = spec.paths[specPath(p)];
  if (!item) return status === 404 ? deref({ $ref: '#/components/responses/NotFound' }) : null;
  const op = item[method.toLowerCase()];
  if (!op && status === 405) { // the path's own 405 (the protocol's form on /v2), else the common one
    const own = METHODS.map((m) => item[m] && item[m].responses['405']).find(Boolean);
    return deref(own || { $ref: '#/components/responses/MethodNotAllowed' });
  }
  if (!op) return null;
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
  if (res.status === 405 && res.headers.allow !== documentedMethods(specPath(p)).join(', '))
    problems.push(`Allow "${res.headers.allow}" but the document lists ${documentedMethods(specPath(p)).join(', ')}`);
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

// the served model's name and version fill the /v2 path templates
const model = (await get('/v1/model')).json();
const MODEL = model.name, VERSION = model.sha256.slice(0, 12);
const fill = (p) => p.replace('{model_name}', MODEL).replace('{model_version}', VERSION);

// every documented path and method
for (const p of Object.keys(spec.paths)) {
  for (const m of documentedMethods(p)) {
    if (m === 'POST') continue; // below, with bodies
    const res = await get(fill(p), m);
    const body = conforms(`${m} ${fill(p)} -> ${res.status}`, p, m, res);
    if (p.includes('{'))
      check(`${m} ${fill(p)}: 200 or 204 for the served model`, res.status === (m === 'OPTIONS' ? 204 : 200), String(res.status));
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
    if (m === 'GET' && p.startsWith('/v2/models/') && !p.endsWith('/ready'))
      check(`GET ${fill(p)}: the served model's name and version`, body && body.name === MODEL &&
        body.versions[0] === VERSION, JSON.stringify(body));
  }
}

// POST /v2/models/{model_name}[/versions/{model_version}]/infer (the Open
// Inference Protocol): the PNG as BYTES with both outputs, the grey values
// as a nested UINT8 tensor; the masks as segd infer's
{
  const ref = inferMasks(cfg, [path.join(DATA, 'case101_day20_slice_0090_266_266_1.50_1.50.png')]);
  const want = ref['case101_day20_slice_0090_266_266_1.50_1.50'];
  const json = (doc) => ({ headers: { 'Content-Type': 'application/json' }, body: Buffer.from(JSON.stringify(doc)) });
  const png = { name: 'image', shape: [1], datatype: 'BYTES', data: [slice101.toString('base64')] };
  for (const p of ['/v2/models/{model_name}/infer', '/v2/models/{model_name}/versions/{model_version}/infer']) {
    const res = await get(fill(p), 'POST', json({ id: 'oip-1', inputs: [png], outputs: [{ name: 'rle' }, { name: 'masks' }] }));
    const body = conforms(`POST ${fill(p)} BYTES -> ${res.status}`, p, 'POST', res);
    const outs = Object.fromEntries(((body && body.outputs) || []).map((o) => [o.name, o]));
    const plane = want.width * want.height;
    const rleSame = outs.rle && Object.keys(want.masks).every((k, c) => outs.rle.data[c] === want.masks[k]);
    const maskSame = outs.masks && Object.keys(want.masks).every((k, c) => {
      const m = decodeRle(want.masks[k], plane);
      return m.every((v, i) => outs.masks.data[c * plane + i] === v);
    });
    check(`POST ${fill(p)}: id, version, rle and masks as segd infer's`, body && body.id === 'oip-1' &&
      body.model_version === VERSION && rleSame && maskSame, body && JSON.stringify(body).slice(0, 300));
  }
  const grey = { name: 'image', shape: [2, 3], datatype: 'UINT8', data: [[0, 10, 20], [30, 40, 50]] };
  const res = await get(fill('/v2/models/{model_name}/infer'), 'POST', json({ inputs: [grey], parameters: { threshold: 0.5 } }));
  const body = conforms(`POST ${fill('/v2/models/{model_name}/infer')} UINT8 [2, 3] -> ${res.status}`,
    '/v2/models/{model_name}/infer', 'POST', res);
  check('infer UINT8 [2, 3]: masks [3, 2, 3] only', body && body.outputs.length === 1 &&
    JSON.stringify(body.outputs[0].shape) === '[3,2,3]', body && JSON.stringify(body.outputs.map((o) => o.shape)));
  const inferPath = fill('/v2/models/{model_name}/infer');
  const oipErrors = [
    ['400 not JSON', inferPath, { headers: { 'Content-Type': 'application/json' }, body: Buffer.from('{not json') }],
    ['400 two inputs', inferPath, json({ inputs: [png, png] })],
    ['400 UINT8 value out of range', inferPath, json({ inputs: [{ ...grey, data: [0, 1, 2, 3, 4, 256] }] })],
    ['404 unknown model', '/v2/models/no-such-model/infer', json({ inputs: [png] })],
    ['404 unknown version', fill('/v2/models/{model_name}/versions/000000000000/infer'), json({ inputs: [png] })],
    ['405 GET infer', inferPath, { method: 'GET' }],
    ['405 POST /v2/health/live', '/v2/health/live', json({})],
    ['413 over --max-pixels', inferPath, json({ inputs: [{ name: 'image', shape: [400, 400], datatype: 'FP32', data: [0] }] })],
    ['415 image/png body', inferPath, { headers: { 'Content-Type': 'image/png' }, body: slice101 }],
    ['422 PNG of zero size', inferPath, json({ inputs: [{ ...png, data: [greyPng(0, 5).toString('base64')] }] })],
  ];
  for (const [label, p, opts] of oipErrors) {
    const m = opts.method || 'POST';
    const r = await get(p, m, opts);
    if (!check(`${label}: status ${label.slice(0, 3)}`, r.status === Number(label.slice(0, 3)), `got ${r.status} ${r.text().slice(0, 200)}`))
      continue;
    conforms(`${label}: answer matches the document`, p, m, r);
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
  ['404 unknown path under /v2/models', '/v2/models/x/y', 'GET', {}],
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
  conforms(`${label}: answer matches the document`, new URL(p, B).pathname, m, res);
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
  // the Open Inference Protocol's readiness: a 4xx means not ready
  const m = (await request(d.base, 'GET', '/v1/model')).json();
  for (const p of ['/v2/health/ready', `/v2/models/${m.name}/ready`]) {
    const r = await request(d.base, 'GET', p);
    if (check(`400 GET ${p} while draining: status`, r.status === 400, `got ${r.status}`)) {
      const b = conforms(`400 GET ${p} while draining: answer matches the document`, p, 'GET', r);
      check(`GET ${p} while draining: ready false`, b && b.ready === false, JSON.stringify(b));
    }
  }
  const ri = await request(d.base, 'POST', `/v2/models/${m.name}/infer`, { headers: { 'Content-Type': 'application/json' },
    body: Buffer.from(JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [slice101.toString('base64')] }] })) });
  if (check('503 infer while draining: status', ri.status === 503, `got ${ri.status}`)) {
    conforms('503 infer while draining: answer matches the document', `/v2/models/${m.name}/infer`, 'POST', ri);
    check('503 infer while draining: Retry-After', /^[0-9]+$/.test(ri.headers['retry-after'] || ''), ri.headers['retry-after']);
  }
  const ra = await a;
  if (check('accepted job answered during the drain', ra.status === 200, `got ${ra.status}`))
    conforms('drained job: answer matches the document', '/v1/segment', 'POST', ra);
  const st2 = await waitExit(d, 25000);
  check('second daemon drains and exits 0', st2 && st2.code === 0, JSON.stringify(st2));
}

// ------------------------------------------------------------ 401 (--api-key-file)

{
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'segd-openapi-keys-'));
  fs.writeFileSync(path.join(dir, 'keys'), 'openapi-check-5b0e2c7a9d14f3e6\n');
  try {
    d = await startDaemon(cfg, ['--workers', '1', '--api-key-file', path.join(dir, 'keys')]);
    const m = (await request(d.base, 'GET', '/v1/model')).json();
    const cases = [
      ['/v1/segment', { 'Content-Type': 'image/png' }, slice101],
      [`/v2/models/${m.name}/infer`, { 'Content-Type': 'application/json', Authorization: 'Bearer wrong-key-0123456789' },
        Buffer.from('{"inputs": []}')],
    ];
    for (const [p, headers, body] of cases) {
      const r = await request(d.base, 'POST', p, { headers, body });
      if (check(`401 POST ${p} without a valid key: status`, r.status === 401, `got ${r.status}`))
        conforms(`401 POST ${p}: answer matches the document`, p, 'POST', r);
    }
    const st3 = await stopDaemon(d);
    check('daemon with --api-key-file drains and exits 0', st3 && st3.code === 0, JSON.stringify(st3));
  } catch (e) {
    check('daemon with --api-key-file starts', false, e.message);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.exit(summary());
