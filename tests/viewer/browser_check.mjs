// browser_check: the viewer in headless Chromium (Debian's chromium driven
// by playwright-core) against a real `segd serve`: keyboard-opened file
// picker, upload, overlay pixels read back and compared with the masks of
// `segd infer`, organ toggles, legend counts and areas, latency, opacity,
// the 16-bit decoder and window/level, arrow-key stepping, plain-words
// errors; then a screenshot for the README.  Last, a DICOM series made by
// tests/dicom/make_series.py is loaded through the file input and through
// "Open folder": one POST /v1/series?preview=1, slices in series order with
// the server's images, masks drawn, the volume table = the JSON's.
//
// usage: node browser_check.mjs [SEGD_EXE [WEIGHTS]]
// env:   CHROMIUM (default /usr/bin/chromium), SEGD_VIEWER_SCREENSHOT
//        (default docs/viewer.png)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import {
  ROOT, DATA, config, check, summary, skip, watchdog, startDaemon, stopDaemon, inferMasks, decodeRle, greyPng,
  request,
} from './lib.mjs';

const require = createRequire(import.meta.url);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(CHROMIUM)) skip(`no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  skip('playwright-core is not installed (npm ci in tests/viewer)');
}

watchdog(300);
const cfg = config();
const SHOT = path.resolve(process.env.SEGD_VIEWER_SCREENSHOT || path.join(ROOT, 'docs', 'viewer.png'));
const F110 = path.join(DATA, 'case110_day16_slice_0070_360_310_1.50_1.50.png');
const F101 = path.join(DATA, 'case101_day20_slice_0090_266_266_1.50_1.50.png');
const ref = inferMasks(cfg, [F110, F101]);
const REF110 = ref['case110_day16_slice_0070_360_310_1.50_1.50'];
const REF101 = ref['case101_day20_slice_0090_266_266_1.50_1.50'];
check('segd infer gives reference masks', REF110 && REF101);
const CLASSES = Object.keys(REF110.masks);

let d, browser;
async function finish() {
  if (browser) await browser.close().catch(() => {});
  if (d) await stopDaemon(d);
  process.exit(summary());
}

try {
  d = await startDaemon(cfg, ['--workers', '1']);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-dev-shm-usage'] });
} catch (e) {
  check('daemon and browser start', false, e.message);
  await finish();
}

const pageErrors = [];
const page = await browser.newPage({ viewport: { width: 1360, height: 820 }, deviceScaleFactor: 1 });
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
page.on('request', (r) => {
  if (!r.url().startsWith(d.base)) pageErrors.push('request outside the daemon: ' + r.url());
});
page.setDefaultTimeout(60000);
// File choosers are intercepted from the start (subscribing just before the
// key press races with the press) and queued here.
const choosers = [];
page.on('filechooser', (fc) => choosers.push(fc));
async function nextChooser(ms = 10000) {
  const t0 = Date.now();
  while (!choosers.length && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 50));
  return choosers.shift() || null;
}

// ------------------------------------------------------------ helpers

async function readOverlay(pg = page) {
  return pg.evaluate(() => {
    const c = document.getElementById('overlay');
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    return { w: c.width, h: c.height, id: c.dataset.sliceId, data: Array.from(px) };
  });
}

async function legendColours() {
  return page.evaluate((classes) => Object.fromEntries(classes.map((k) => {
    const sw = document.querySelector(`label[for="organ-${k}"] .swatch`);
    const m = sw ? /rgba?\((\d+), (\d+), (\d+)/.exec(getComputedStyle(sw).borderColor) : null;
    return [k, m ? [+m[1], +m[2], +m[3]] : null];
  })), CLASSES);
}

// Compare the overlay with reference masks: every pixel's organ (the
// top-most enabled one, the last in class order) by its legend colour,
// opaque exactly on the outline.  Returns a list of problems.
function compareOverlay(ov, refDoc, enabled, colours) {
  const problems = [];
  const { width: w, height: h } = refDoc;
  if (ov.w !== w || ov.h !== h) return [`overlay ${ov.w}x${ov.h}, image ${w}x${h}`];
  const masks = enabled.map((k) => decodeRle(refDoc.masks[k], w * h));
  let wrongOrgan = 0, wrongEdge = 0, first = '';
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const p = y * w + x;
    let want = -1;
    for (let k = masks.length - 1; k >= 0; k--) if (masks[k][p]) { want = k; break; }
    const a = ov.data[4 * p + 3];
    let got = -1;
    if (a > 0) {
      let best = 1e9;
      enabled.forEach((k, i) => {
        const c = colours[k];
        const dist = Math.abs(c[0] - ov.data[4 * p]) + Math.abs(c[1] - ov.data[4 * p + 1]) + Math.abs(c[2] - ov.data[4 * p + 2]);
        if (dist < best && dist <= 12) { best = dist; got = i; }
      });
      if (got < 0) got = -2;
    }
    if (got !== want) {
      wrongOrgan++;
      if (!first) first = `(${x},${y}) want ${enabled[want] || 'none'} got ${got === -2 ? 'unknown colour' : enabled[got] || 'none'}`;
      continue;
    }
    if (want >= 0) {
      const m = masks[want];
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !m[p - 1] || !m[p + 1] || !m[p - w] || !m[p + w];
      if ((a === 255) !== edge) wrongEdge++;
    }
  }
  if (wrongOrgan) problems.push(`${wrongOrgan} pixels of the wrong organ, first ${first}`);
  if (wrongEdge) problems.push(`${wrongEdge} pixels with a wrong outline/fill alpha`);
  return problems;
}

const text = (sel) => page.locator(sel).innerText();

// ------------------------------------------------------------ page load

const resp = await page.goto(d.base + '/');
check('GET / loads the viewer', resp && resp.status() === 200 && (await page.title()) === 'segd viewer');
try {
  await page.waitForFunction(() => /^Model /.test(document.getElementById('model').textContent), null, { timeout: 15000 });
  check('model information shown', /unet3p|Model \S+/.test(await text('#model')), await text('#model'));
} catch (e) {
  check('model information shown', false, await text('#model'));
}
check('status region is aria-live', (await page.getAttribute('#status', 'aria-live')) === 'polite');
check('drop zone is a focusable button', (await page.getAttribute('#drop', 'role')) === 'button' &&
  (await page.getAttribute('#drop', 'tabindex')) === '0');
const colours = await legendColours();
check('legend has a colour per organ', CLASSES.every((k) => colours[k]), JSON.stringify(colours));
check('legend colours differ', new Set(Object.values(colours).map(String)).size === CLASSES.length);

// ------------------------------------------------------------ first slice (Space opens the picker)

await page.focus('#drop');
{
  await page.keyboard.press('Space');
  const chooser = await nextChooser();
  check('Space on the drop zone opens the file picker', !!chooser && chooser.isMultiple());
  if (chooser) await chooser.setFiles(F110);
  else await page.setInputFiles('#file', F110);
}
try {
  await page.waitForSelector('#overlay[data-rendered="true"][data-slice-id="case110_day16_slice_0070"]', { timeout: 60000 });
  check('overlay drawn for case110_day16_slice_0070', true);
} catch (e) {
  check('overlay drawn for case110_day16_slice_0070', false, (await text('#status')) + ' / ' + (await text('#error').catch(() => '')));
  await finish();
}
{
  const ov = await readOverlay();
  const probs = compareOverlay(ov, REF110, CLASSES, colours);
  check('overlay pixels = segd infer masks (all organs, native resolution)', probs.length === 0, probs.join('; '));
  const img = await page.evaluate(() => [document.getElementById('image').width, document.getElementById('image').height]);
  check('image canvas at native resolution', img[0] === 360 && img[1] === 310, String(img));
}
// organ toggles: only one organ at a time
for (const only of CLASSES) {
  for (const k of CLASSES) await page.setChecked(`#organ-${k}`, k === only);
  const ov = await readOverlay();
  const probs = compareOverlay(ov, REF110, [only], colours);
  check(`toggles: only ${only} drawn`, probs.length === 0, probs.join('; '));
}
for (const k of CLASSES) await page.setChecked(`#organ-${k}`, false);
{
  const ov = await readOverlay();
  check('toggles: nothing drawn with every organ off', ov.data.every((v, i) => i % 4 !== 3 || v === 0));
}
for (const k of CLASSES) await page.setChecked(`#organ-${k}`, true);

// legend numbers: pixels and areas from the file name's spacing (1.50 mm)
for (const k of CLASSES) {
  const px = decodeRle(REF110.masks[k], 360 * 310).reduce((a, b) => a + b, 0);
  const t = await text(`#stats-${k}`);
  const wantPx = `${px.toLocaleString('en-US')} px`;
  const wantArea = `${(px * 1.5 * 1.5 / 100).toFixed(2)} cm²`;
  check(`legend ${k}: ${wantPx}, ${wantArea}`, t.includes(wantPx) && t.includes(wantArea), t);
}
{
  const lat = await text('#latency');
  check('latency shows round trip and server timings', /round trip\s+[\d.]+ ms/.test(lat) && /inference\s+[\d.]+ ms/.test(lat), lat);
  const st = await text('#status');
  check('status announces the result', /large bowel/.test(st), st);
  const label = await page.getAttribute('#image', 'aria-label');
  check('image has a text alternative with the findings', /Slice 1 of 1/.test(label) && /square centimetres/.test(label), label);
}
// opacity slider by keyboard
await page.focus('#opacity');
await page.keyboard.press('End');
check('opacity slider: End sets the overlay opaque', (await page.evaluate(() => document.getElementById('overlay').style.opacity)) === '1');
await page.keyboard.press('Home');
check('opacity slider: Home hides the overlay', (await page.evaluate(() => document.getElementById('overlay').style.opacity)) === '0');
await page.fill('#opacity', '70');
await page.dispatchEvent('#opacity', 'input');

// ------------------------------------------------------------ second slice (Enter), 16-bit

await page.focus('#drop');
{
  await page.keyboard.press('Enter');
  const chooser = await nextChooser();
  check('Enter on the drop zone opens the file picker', !!chooser);
  if (chooser) await chooser.setFiles(F101);
  else await page.setInputFiles('#file', F101);
}
try {
  await page.waitForSelector('#overlay[data-rendered="true"][data-slice-id="case101_day20_slice_0090"]', { timeout: 60000 });
  const ov = await readOverlay();
  const probs = compareOverlay(ov, REF101, CLASSES, colours);
  check('16-bit slice: overlay pixels = segd infer masks', probs.length === 0, probs.join('; '));
} catch (e) {
  check('16-bit slice segmented', false, (await text('#status')) + ' ' + e.message);
}
check('16-bit slice: decoded by the viewer at 16 bits', /16-bit grey/.test(await text('#depth')), await text('#depth'));
check('16-bit slice: window/level work on values beyond 8 bits', Number(await page.getAttribute('#window', 'max')) > 256 &&
  /of 0–65,535/.test(await text('#depth')), await text('#depth'));
{
  const sum = () => page.evaluate(() => {
    const c = document.getElementById('image');
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = 0;
    for (let i = 0; i < px.length; i += 4) s += px[i];
    return s;
  });
  const before = await sum();
  await page.focus('#level');
  await page.keyboard.press('PageUp'); // brighter level = darker image
  for (let i = 0; i < 20; i++) await page.keyboard.press('ArrowRight');
  const after = await sum();
  check('window/level: raising the level darkens the image', after < before, `${before} -> ${after}`);
  await page.click('#auto-wl');
  check('window/level: Auto restores the image range', (await sum()) === before);
}
// the stack: case101 first (name order), arrow keys step
await page.focus('#drop');
const current = () => page.evaluate(() => document.querySelector('#slices [aria-current="true"] .name').textContent);
check('slices sorted by name, the new one shown', (await current()).startsWith('case101'));
await page.keyboard.press('ArrowDown');
check('ArrowDown steps to the next slice', (await current()).startsWith('case110') &&
  (await page.getAttribute('#overlay', 'data-slice-id')) === 'case110_day16_slice_0070');
await page.keyboard.press('ArrowUp');
check('ArrowUp steps back', (await current()).startsWith('case101'));
await page.keyboard.press('End');
check('End goes to the last slice', (await current()).startsWith('case110'));

// ------------------------------------------------------------ own PNG decoder vs the browser's

{
  const files = ['grey8', 'grey16', 'rgb', 'rgba', 'palette'].map((k) => `synthetic-37x53-${k}.png`)
    .concat(['case101_day20_slice_0090_266_266_1.50_1.50.png']);
  const inputs = files.map((f) => [f, fs.readFileSync(path.join(DATA, f)).toString('base64')]);
  const results = await page.evaluate(async (list) => {
    const out = [];
    for (const [name, b64] of list) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const mine = await window.segdViewer.decodePng(bytes.buffer);
      const bmp = await createImageBitmap(new Blob([bytes], { type: 'image/png' }), { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
      const c = new OffscreenCanvas(bmp.width, bmp.height);
      const ctx = c.getContext('2d');
      ctx.drawImage(bmp, 0, 0);
      const ref = ctx.getImageData(0, 0, c.width, c.height).data;
      let worst = 0, compared = 0; // worst difference beyond the rounding allowed
      const scale = mine.maxValue === 65535 ? 257 : 1;
      for (let p = 0; p < mine.width * mine.height; p++) {
        // translucent pixels come back from the canvas premultiplied and
        // rounded: allow 2 steps at alpha >= 128, skip the fainter ones
        const a = ref[4 * p + 3];
        if (a < 128) continue;
        const allow = (a === 255 ? 0 : 2) + (scale > 1 ? 1 : 0);
        compared++;
        for (let k = 0; k < 3; k++) {
          const v = mine.channels === 1 ? mine.data[p] : mine.data[3 * p + k];
          worst = Math.max(worst, Math.abs(Math.round(v / scale) - ref[4 * p + k]) - allow);
        }
      }
      out.push({ name, w: mine.width, h: mine.height, bw: bmp.width, bh: bmp.height, worst, compared, depth: mine.depth, decoder: mine.decoder });
    }
    return out;
  }, inputs);
  for (const r of results)
    check(`PNG decoder matches the browser on ${r.name} (${r.decoder})`, r.w === r.bw && r.h === r.bh && r.compared > 0 &&
      r.worst <= 0, JSON.stringify(r));
}
// RLE decoder and name parsing
{
  const r = await page.evaluate(() => {
    const v = window.segdViewer;
    const m = v.decodeRle('2 2 6 3', 12);
    let bad = 0;
    for (const s of ['1', '0 1', '3 2 1 1', '11 3', 'a b']) try { v.decodeRle(s, 12); } catch (e) { bad++; }
    return { m: Array.from(m).join(''), bad, k: v.parseKaggleName('slice_0070_360_310_1.50_1.63.png'),
      id1: v.sliceId('slice_0070_360_310_1.50_1.50.png', '/train/case110/case110_day16/scans/slice_0070_360_310_1.50_1.50.png'),
      id2: v.sliceId('scan.png', 'scan.png') };
  });
  check('RLE decode (1-based, row-major) and strictness', r.m === '011001110000' && r.bad === 5, JSON.stringify(r));
  check('Kaggle file name: spacing and ids', r.k && r.k.sx === 1.5 && r.k.sy === 1.63 && r.k.width === 360 &&
    r.id1 === 'case110_day16_slice_0070' && r.id2 === 'scan', JSON.stringify(r));
}

// ------------------------------------------------------------ screenshot

await page.keyboard.press('End');
await page.locator('#stage').scrollIntoViewIfNeeded();
await page.mouse.move(10, 10);
await page.evaluate(() => document.activeElement && document.activeElement.blur());
await page.emulateMedia({ colorScheme: 'dark' });
fs.mkdirSync(path.dirname(SHOT), { recursive: true });
await page.screenshot({ path: SHOT });
check(`screenshot saved to ${path.relative(ROOT, SHOT)}`, fs.statSync(SHOT).size > 10000);

// ------------------------------------------------------------ errors in plain words (a fresh page)

{
  const p2 = await browser.newPage();
  p2.on('pageerror', (e) => pageErrors.push(e.message));
  await p2.goto(d.base + '/');
  await p2.setInputFiles('#file', [
    { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('this is not a PNG') },
    { name: 'huge_slice.png', mimeType: 'image/png', buffer: greyPng(1100, 1000) },
  ]);
  await p2.waitForFunction(() => document.querySelectorAll('#slices .state.error').length === 2, null, { timeout: 60000 })
    .catch(() => {});
  const states = await p2.locator('#slices .state').allInnerTexts();
  check('failed slices marked in the list', states.filter((s) => s === 'error').length === 2, states.join(','));
  // huge_slice sorts first and is shown: the 413 in plain words
  await p2.click('#slices li:nth-child(1) button');
  const e1 = await p2.locator('#error').innerText();
  check('413 explained in plain words', /too large for this server/.test(e1) && (await p2.getAttribute('#error', 'role')) === 'alert', e1);
  await p2.click('#slices li:nth-child(2) button');
  const e2 = await p2.locator('#error').innerText();
  check('a non-PNG file is refused in plain words', /not a PNG image/.test(e2), e2);
  await p2.close();
}

// ------------------------------------------------------------ a DICOM series (decoded by the server)

async function dicomSeries() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'segd-viewer-dcm-'));
  try {
    const pngs = [F101, ...fs.readdirSync(path.join(DATA, 'robust16')).sort().map((f) => path.join(DATA, 'robust16', f))];
    const py = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
    const mk = spawnSync(py, [path.join(ROOT, 'tests', 'dicom', 'make_series.py'), '--out', tmp, ...pngs], { encoding: 'utf8' });
    if (mk.status !== 0) {
      if (/No module named/.test(mk.stderr)) console.log(`SKIP DICOM part: ${mk.stderr.trim().split('\n').pop()}`);
      else check('make_series.py writes a DICOM series', false, mk.stderr);
      return;
    }
    const series = JSON.parse(fs.readFileSync(path.join(tmp, 'series.json'), 'utf8'));
    const uids = series.slices.map((x) => x.sop_instance_uid);
    // the files in name order (hashes): not the series order
    const files = fs.readdirSync(tmp).filter((f) => f.endsWith('.dcm')).sort().map((f) => path.join(tmp, f));
    // a segd without DCMTK refuses multipart/related with 415: reported, not failed
    const probe = await request(d.base, 'POST', '/v1/series', { body: Buffer.from('--x--\r\n'),
      headers: { 'Content-Type': 'multipart/related; type="application/dicom"; boundary=x' } });
    if (probe.status === 415 && /without DICOM/.test(probe.text())) {
      console.log(`SKIP DICOM part: this segd was built without DICOM support (${probe.text()})`);
      return;
    }
    // the reference: the same request as the viewer's
    const b = 'segd-browser-check';
    const body = Buffer.concat([...files.flatMap((f) => [Buffer.from(`--${b}\r\nContent-Type: application/dicom\r\n\r\n`),
      fs.readFileSync(f), Buffer.from('\r\n')]), Buffer.from(`--${b}--\r\n`)]);
    const res = await request(d.base, 'POST', '/v1/series?preview=1', { body,
      headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${b}` } });
    if (!check('POST /v1/series?preview=1 answers the series', res.status === 200, `${res.status} ${res.text().slice(0, 300)}`)) return;
    const ref = res.json();
    check('the JSON has the series in slice order', ref.slices.map((x) => x.id).join() === uids.join());

    const p3 = await browser.newPage({ viewport: { width: 1360, height: 820 }, deviceScaleFactor: 1 });
    p3.on('pageerror', (e) => pageErrors.push(e.message));
    let refusing = false; // the browser logs the refused request itself
    p3.on('console', (m) => {
      if (m.type() === 'error' && !(refusing && /status of 415/.test(m.text()))) pageErrors.push(m.text());
    });
    const posts = [];
    p3.on('request', (r) => {
      if (!r.url().startsWith(d.base)) pageErrors.push('request outside the daemon: ' + r.url());
      if (r.method() === 'POST') posts.push({ url: r.url().slice(d.base.length), ctype: r.headers()['content-type'] || '' });
    });
    p3.setDefaultTimeout(60000);
    await p3.goto(d.base + '/');
    const n = uids.length;
    const done = (k) => p3.waitForFunction((k) => {
      const st = window.segdViewer.state.slices;
      return st.length === k && st.every((x) => x.status === 'done' || x.status === 'error');
    }, k, { timeout: 90000 }).then(() => true, () => false);

    await p3.setInputFiles('#file', files);
    const ok = await done(n);
    const err = ok ? '' : await p3.locator('#error').innerText().catch(() => '');
    check(`${n} DICOM files by the file input: ${n} slices listed`, ok, err + ' ' + (await p3.locator('#status').innerText()));
    check('one POST /v1/series?preview=1, multipart/related of application/dicom',
      posts.length === 1 && /^\/v1\/series\?preview=1/.test(posts[0].url) &&
      /^multipart\/related; type="application\/dicom"; boundary=/.test(posts[0].ctype), JSON.stringify(posts));
    const listed = await p3.evaluate(() => window.segdViewer.state.slices.map((x) => ({ id: x.id, status: x.status,
      w: x.image && x.image.width, scale: x.image && x.image.scale })));
    check('slices listed in series order (by position, not file name), all done', listed.map((x) => x.id).join() === uids.join() &&
      listed.every((x) => x.status === 'done'), JSON.stringify(listed.map((x) => x.id + ' ' + x.status)));
    check('each slice shows the server\'s 16-bit preview', listed.every((x) => x.w === 266 && typeof x.scale === 'number'));
    const names = await p3.locator('#slices .name').allInnerTexts();
    check('list names number the slices in order', names.every((t, k) => t.endsWith(` ${k + 1}/${n}`)), names.join(', '));

    // every slice: overlay = the JSON's masks, image drawn
    for (let k = 0; k < n; k++) {
      await p3.click(`#slices li:nth-child(${k + 1}) button`);
      await p3.waitForSelector(`#overlay[data-rendered="true"][data-slice-id="${uids[k]}"]`, { timeout: 20000 }).catch(() => {});
      const ov = await readOverlay(p3);
      const probs = compareOverlay(ov, { width: ref.width, height: ref.height, masks: ref.slices[k].masks }, CLASSES, colours);
      check(`DICOM slice ${k + 1}: overlay = the series' masks`, ov.id === uids[k] && probs.length === 0, `${ov.id} ${probs.join('; ')}`);
    }
    const lit = await p3.evaluate(() => {
      const c = document.getElementById('image');
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let bright = 0;
      for (let i = 0; i < px.length; i += 4) bright += px[i] > 20;
      return { w: c.width, h: c.height, bright };
    });
    check('the DICOM image is drawn (266 x 266, not black)', lit.w === 266 && lit.h === 266 && lit.bright > 1000, JSON.stringify(lit));
    check('decoded by the server', /the server \(DICOM/.test(await p3.locator('#depth').innerText()), await p3.locator('#depth').innerText());

    // the volume table: three organs, the JSON's numbers
    const rows = await p3.evaluate(() => Array.from(document.querySelectorAll('#volumes-body tr')).map((tr) => ({
      organ: tr.dataset.organ, vol: tr.querySelector('.volume').textContent, removed: tr.querySelector('.removed').textContent })));
    const visible = await p3.isVisible('#series-box');
    const want = Object.keys(ref.volume_ml).map((o) => ({ organ: o, vol: `${ref.volume_ml[o].toFixed(2)} mL`,
      removed: `${ref.cleanup.components_removed[o].toLocaleString('en-US')} (${ref.cleanup.voxels_removed[o].toLocaleString('en-US')} vx)` }));
    check('volume table: three organs with the JSON\'s volume_ml and clean-up figures', visible && rows.length === 3 &&
      JSON.stringify(rows) === JSON.stringify(want), `${JSON.stringify(rows)} want ${JSON.stringify(want)}`);
    check('clean-up threshold shown', (await p3.locator('#cleanup').innerText()).includes(`${ref.cleanup.min_volume_ml} mL`));
    // pixel probe: the server's value (stored * scale + offset)
    {
      const box = await p3.locator('#canvases').boundingBox();
      await p3.mouse.move(box.x + box.width * (133.5 / 266), box.y + box.height * (100.5 / 266));
      const t = await p3.locator('#probe').innerText();
      const img = ref.slices[n - 1].image;
      // the source PNG of the last slice (make_series.py keeps its values)
      const src = await p3.evaluate(async (b64) => {
        const img = await window.segdViewer.decodePng(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer);
        return img.data[100 * img.width + 133];
      }, fs.readFileSync(pngs[n - 1]).toString('base64'));
      check('pixel probe reads x, y and the source value (offset and scale applied)', typeof img.scale === 'number' &&
        t.startsWith(`x 133, y 100: ${src.toLocaleString('en-US')}`), `${t}, want ${src}`);
      console.log(`     probe: ${t}`);
    }

    // the same series by "Open folder" (series.json in the folder is left out)
    posts.length = 0;
    await p3.click('#clear');
    await p3.setInputFiles('#folder', tmp);
    const ok2 = await done(n);
    const ids2 = await p3.evaluate(() => window.segdViewer.state.slices.map((x) => x.id));
    check('"Open folder": one series request, slices in series order', ok2 && posts.length === 1 && ids2.join() === uids.join(),
      `${posts.length} posts; ${ids2.join()}`);
    // refused by the server: the error shown like the others
    await p3.click('#clear');
    refusing = true;
    await p3.setInputFiles('#file', [{ name: 'broken.dcm', mimeType: 'application/dicom', buffer: Buffer.alloc(300) }]);
    await done(1);
    const e3 = await p3.locator('#error').innerText();
    check('a refused series is explained in plain words', /DICOM/.test(e3) && /server said/.test(e3) &&
      (await p3.locator('#slices .state').allInnerTexts()).join() === 'error', e3);
    await p3.close();
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
await dicomSeries();

check('no script errors and no request outside the daemon', pageErrors.length === 0, pageErrors.join(' | '));
await finish();
