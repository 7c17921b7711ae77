// dcmjs_check: the DICOM Segmentation segd answers is read by dcmjs, the
// library the OHIF viewer reads SEG with: it parses, finds the three
// segments (with their SNOMED CT codes) and every source instance, by
// series reference and frame by frame.  A DICOM MR series is generated
// with tests/dicom/make_series.py (pydicom) from the slices in tests/data,
// posted to POST /v1/series?format=seg as multipart/related.
//
// usage: node dcmjs_check.mjs [SEGD_EXE [WEIGHTS]]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { ROOT, DATA, config, check, summary, skip, watchdog, startDaemon, stopDaemon, request } from './lib.mjs';

const require = createRequire(import.meta.url);
const dcmjs = require('dcmjs');
watchdog(240);
const cfg = config();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'segd-dcmjs-'));
const pngs = [path.join(DATA, 'case101_day20_slice_0090_266_266_1.50_1.50.png'),
  ...fs.readdirSync(path.join(DATA, 'robust16')).sort().map((f) => path.join(DATA, 'robust16', f))];
const py = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const mk = spawnSync(py, [path.join(ROOT, 'tests', 'dicom', 'make_series.py'), '--out', tmp, ...pngs],
  { encoding: 'utf8' });
if (mk.status !== 0) {
  if (/No module named/.test(mk.stderr)) skip(`pydicom missing: ${mk.stderr.trim().split('\n').pop()}`);
  check('make_series.py', false, mk.stderr);
  process.exit(summary());
}
const series = JSON.parse(fs.readFileSync(path.join(tmp, 'series.json'), 'utf8'));
const uids = series.slices.map((s) => s.sop_instance_uid);

const boundary = 'segd-dcmjs-' + Date.now();
const parts = [];
for (const s of [...series.slices].reverse()) { // out of order on purpose
  parts.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
    fs.readFileSync(path.join(tmp, s.file)), Buffer.from('\r\n'));
}
parts.push(Buffer.from(`--${boundary}--\r\n`));

let d;
try {
  d = await startDaemon(cfg);
  const res = await request(d.base, 'POST', '/v1/series?format=seg', {
    headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      Accept: 'application/dicom' }, body: Buffer.concat(parts) });
  if (check('POST /v1/series?format=seg: 200 application/dicom', res.status === 200 &&
      res.headers['content-type'] === 'application/dicom', `${res.status} ${res.text().slice(0, 200)}`)) {
    const buf = res.body;
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
    let ds = null;
    try {
      const msg = dcmjs.data.DicomMessage.readFile(ab);
      ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(msg.dict);
      ds._meta = dcmjs.data.DicomMetaDictionary.namifyDataset(msg.meta);
    } catch (e) {
      check('dcmjs parses the SEG', false, e.message);
    }
    if (ds && check('dcmjs parses the SEG', true)) {
      check('SOPClassUID: Segmentation Storage', ds.SOPClassUID === '1.2.840.10008.5.1.4.1.1.66.4', ds.SOPClassUID);
      const segs = [].concat(ds.SegmentSequence || []);
      const codes = segs.map((s) => [].concat(s.SegmentedPropertyTypeCodeSequence)[0]?.CodeValue);
      check('three segments with the SNOMED CT codes of large intestine, small intestine, stomach',
        segs.length === 3 && codes.join() === '14742008,30315005,69695003', JSON.stringify(codes));
      const ref = [].concat([].concat(ds.ReferencedSeriesSequence || [])[0]?.ReferencedInstanceSequence || [])
        .map((i) => i.ReferencedSOPInstanceUID);
      check('ReferencedSeriesSequence names every source instance', ref.length === uids.length &&
        uids.every((u) => ref.includes(u)), `${ref.length} of ${uids.length}`);
      const frames = [].concat(ds.PerFrameFunctionalGroupsSequence || []);
      const src = new Set(frames.map((f) => [].concat([].concat(f.DerivationImageSequence)[0]
        ?.SourceImageSequence || [])[0]?.ReferencedSOPInstanceUID));
      check(`${frames.length} frames = 3 x ${uids.length}, each derived from a posted instance, all covered`,
        frames.length === 3 * uids.length && src.size === uids.length && uids.every((u) => src.has(u)),
        `${frames.length} frames, ${src.size} sources`);
      check('FrameOfReferenceUID of the source', ds.FrameOfReferenceUID === series.frame_of_reference_uid);
    }
  }
} catch (e) {
  check('dcmjs check ran', false, e.stack || e.message);
} finally {
  if (d) await stopDaemon(d);
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(summary());
