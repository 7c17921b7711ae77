/* segd viewer: posts PNG slices to POST v1/segment (same origin), decodes
 * the run-length masks and draws them over the image.  DICOM files (a .dcm
 * name or "DICM" at byte 128) of one drop or pick go together as one
 * series to POST v1/series?preview=1: the server decodes them (DCMTK) and
 * sends each slice's pixels back as a 16-bit PNG, so this page never
 * parses DICOM.  Vanilla JS, no build step, nothing fetched from elsewhere.
 *
 * Two canvases at the image's native resolution are stacked: #image (the
 * slice through window/level) and #overlay (one pixel per image pixel:
 * each organ's translucent fill, its outline opaque, in the organ's
 * colour; the opacity slider sets the canvas' CSS opacity, so its pixels
 * stay exact).  16-bit PNGs are decoded here (browsers reduce them to 8
 * bits) so that window/level works on the real values; anything this
 * decoder refuses falls back to the browser's own decoding. */
'use strict';

(function () {
  /* ---------------------------------------------------------------- */
  /* Constants                                                         */
  /* ---------------------------------------------------------------- */

  const DEFAULT_CLASSES = ['large_bowel', 'small_bowel', 'stomach'];
  /* Okabe-Ito colours: distinguishable with the common colour-vision
   * deficiencies */
  const ORGAN_COLOURS = {
    large_bowel: [230, 159, 0],
    small_bowel: [86, 180, 233],
    stomach: [0, 158, 115],
  };
  const EXTRA_COLOURS = [[204, 121, 167], [240, 228, 66], [213, 94, 0], [0, 114, 178]];
  const FILL_ALPHA = 110;   /* mask interior */
  const LINE_ALPHA = 255;   /* mask outline */
  const CONCURRENCY = 2;    /* requests in flight */
  const MAX_TRIES = 4;      /* a 503 (busy) is retried after Retry-After */
  const MAX_FILES = 5000;
  const DICM = [68, 73, 67, 77]; /* "DICM" at byte 128 of a Part-10 file */

  /* ---------------------------------------------------------------- */
  /* PNG decoding (8/16-bit grey, RGB, palette, with or without alpha,  */
  /* 1/2/4-bit, Adam7)                                                  */
  /* ---------------------------------------------------------------- */

  const PNG_SIG = [137, 80, 78, 71, 13, 10, 26, 10];
  const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
  const DEPTHS = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };
  const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

  function be32(b, o) {
    return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
  }

  async function inflate(bytes) {
    if (typeof DecompressionStream === 'undefined')
      throw new Error('this browser has no DecompressionStream');
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /* Undo the PNG filters of `rows` rows of `rowBytes` bytes (plus the
   * filter byte each) from raw[off...], into out[outOff...]. */
  function unfilter(raw, off, rows, rowBytes, bpp, out, outOff) {
    for (let y = 0; y < rows; y++) {
      const ft = raw[off];
      off++;
      const cur = outOff + y * rowBytes;
      const prev = cur - rowBytes;
      for (let i = 0; i < rowBytes; i++) {
        const x = raw[off + i];
        const a = i >= bpp ? out[cur + i - bpp] : 0;
        const b = y > 0 ? out[prev + i] : 0;
        let v;
        switch (ft) {
          case 0: v = x; break;
          case 1: v = x + a; break;
          case 2: v = x + b; break;
          case 3: v = x + ((a + b) >> 1); break;
          case 4: {
            const c = y > 0 && i >= bpp ? out[prev + i - bpp] : 0;
            const p = a + b - c;
            const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
            v = x + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
            break;
          }
          default: throw new Error('bad PNG filter type ' + ft);
        }
        out[cur + i] = v & 255;
      }
      off += rowBytes;
    }
    return off;
  }

  /* Sample s (channel-interleaved index) of an unfiltered row. */
  function sampleAt(buf, rowStart, s, depth) {
    if (depth === 8) return buf[rowStart + s];
    if (depth === 16) return (buf[rowStart + 2 * s] << 8) | buf[rowStart + 2 * s + 1];
    const bit = s * depth;
    const byte = buf[rowStart + (bit >> 3)];
    return (byte >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
  }

  /* Decode a PNG into {width, height, channels (1 grey | 3 RGB), depth,
   * maxValue, data (Uint16Array, channel-interleaved), decoder}. */
  async function decodePng(buffer) {
    const b = new Uint8Array(buffer);
    if (b.length < 8 || PNG_SIG.some((v, i) => b[i] !== v)) throw new Error('not a PNG file');
    let pos = 8, ihdr = null, palette = null;
    const idat = [];
    let idatLen = 0;
    while (pos + 12 <= b.length) {
      const len = be32(b, pos);
      const type = String.fromCharCode(b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]);
      const data = b.subarray(pos + 8, pos + 8 + len);
      if (data.length !== len) throw new Error('truncated PNG chunk ' + type);
      if (type === 'IHDR') {
        ihdr = { width: be32(data, 0), height: be32(data, 4), depth: data[8], ctype: data[9],
          compression: data[10], filter: data[11], interlace: data[12] };
      } else if (type === 'PLTE') {
        palette = data;
      } else if (type === 'IDAT') {
        idat.push(data);
        idatLen += len;
      } else if (type === 'IEND') {
        break;
      }
      pos += 12 + len;
    }
    if (!ihdr) throw new Error('PNG without IHDR');
    const { width, height, depth, ctype, interlace } = ihdr;
    if (!width || !height) throw new Error('PNG of zero size');
    if (!(ctype in CHANNELS) || !DEPTHS[ctype].includes(depth)) throw new Error('unsupported PNG colour type/depth');
    if (ihdr.compression !== 0 || ihdr.filter !== 0 || interlace > 1) throw new Error('unsupported PNG method');
    if (ctype === 3 && !palette) throw new Error('palette PNG without PLTE');
    if (width * height > 64 * 1024 * 1024) throw new Error('PNG too large to view');
    const all = new Uint8Array(idatLen);
    let o = 0;
    for (const d of idat) { all.set(d, o); o += d.length; }
    const raw = await inflate(all);

    const ch = CHANNELS[ctype];
    const bpp = Math.max(1, (ch * depth) >> 3);
    const outCh = ctype === 0 || ctype === 4 ? 1 : 3;
    const out = new Uint16Array(width * height * outCh);
    const passes = interlace ? ADAM7 : [[0, 0, 1, 1]];
    let off = 0;
    for (const [x0, y0, dx, dy] of passes) {
      const pw = Math.ceil((width - x0) / dx), ph = Math.ceil((height - y0) / dy);
      if (pw <= 0 || ph <= 0) continue;
      const rowBytes = Math.ceil((pw * ch * depth) / 8);
      if (off + ph * (rowBytes + 1) > raw.length) throw new Error('PNG image data too short');
      const rows = new Uint8Array(ph * rowBytes);
      off = unfilter(raw, off, ph, rowBytes, bpp, rows, 0);
      for (let py = 0; py < ph; py++) {
        const rs = py * rowBytes;
        const y = y0 + py * dy;
        for (let px = 0; px < pw; px++) {
          const p = y * width + x0 + px * dx;
          if (ctype === 3) {
            const idx = sampleAt(rows, rs, px, depth);
            if (3 * idx + 2 >= palette.length) throw new Error('PNG palette index out of range');
            out[3 * p] = palette[3 * idx];
            out[3 * p + 1] = palette[3 * idx + 1];
            out[3 * p + 2] = palette[3 * idx + 2];
          } else if (outCh === 1) {
            out[p] = sampleAt(rows, rs, px * ch, depth);
          } else {
            out[3 * p] = sampleAt(rows, rs, px * ch, depth);
            out[3 * p + 1] = sampleAt(rows, rs, px * ch + 1, depth);
            out[3 * p + 2] = sampleAt(rows, rs, px * ch + 2, depth);
          }
        }
      }
    }
    const outDepth = ctype === 3 ? 8 : depth;
    const kind = { 0: 'grey', 2: 'RGB', 3: 'palette', 4: 'grey + alpha', 6: 'RGBA' }[ctype];
    return { width, height, channels: outCh, depth: outDepth, maxValue: (1 << outDepth) - 1,
      data: out, decoder: `segd ${depth}-bit ${kind}${interlace ? ' (interlaced)' : ''}` };
  }

  /* The browser's own decoding (8 bits per channel). */
  async function decodeWithBrowser(blob) {
    const bitmap = await createImageBitmap(blob);
    const c = document.createElement('canvas');
    c.width = bitmap.width;
    c.height = bitmap.height;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
    const n = c.width * c.height;
    let grey = true;
    for (let i = 0; i < n && grey; i++)
      grey = rgba[4 * i] === rgba[4 * i + 1] && rgba[4 * i] === rgba[4 * i + 2];
    const data = new Uint16Array(n * (grey ? 1 : 3));
    for (let i = 0; i < n; i++) {
      if (grey) data[i] = rgba[4 * i];
      else for (let k = 0; k < 3; k++) data[3 * i + k] = rgba[4 * i + k];
    }
    return { width: c.width, height: c.height, channels: grey ? 1 : 3, depth: 8, maxValue: 255,
      data, decoder: 'browser (8-bit)' };
  }

  async function decodeImage(file) {
    const buf = await file.arrayBuffer();
    try {
      return await decodePng(buf);
    } catch (e) {
      if (e.message === 'not a PNG file') throw e;
      const img = await decodeWithBrowser(new Blob([buf], { type: 'image/png' }));
      img.decoder += ' (own decoder: ' + e.message + ')';
      return img;
    }
  }

  /* ---------------------------------------------------------------- */
  /* RLE (Kaggle UW-Madison: "start length" pairs, 1-based, row-major)  */
  /* ---------------------------------------------------------------- */

  function decodeRle(rle, npix) {
    const mask = new Uint8Array(npix);
    const text = (rle || '').trim();
    if (!text) return mask;
    const v = text.split(/\s+/);
    if (v.length % 2) throw new Error('RLE with an odd number of values');
    let end = 0;
    for (let i = 0; i < v.length; i += 2) {
      if (!/^\d+$/.test(v[i]) || !/^\d+$/.test(v[i + 1])) throw new Error('RLE with a non-number');
      const start = Number(v[i]) - 1, len = Number(v[i + 1]);
      if (start < end || len < 1 || start + len > npix) throw new Error('RLE run out of order or out of the image');
      mask.fill(1, start, start + len);
      end = start + len;
    }
    return mask;
  }

  /* ---------------------------------------------------------------- */
  /* Names                                                             */
  /* ---------------------------------------------------------------- */

  /* Kaggle file name: slice_SSSS_W_H_sx_sy.png (spacing in mm/pixel). */
  function parseKaggleName(name) {
    const m = /slice_(\d+)_(\d+)_(\d+)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.png$/i.exec(name);
    if (!m) return null;
    return { slice: m[1], width: +m[2], height: +m[3], sx: +m[4], sy: +m[5] };
  }

  /* Submission id caseX_dayY_slice_SSSS when the name or the path tells
   * the case and day, else the file name without its extension. */
  function sliceId(name, path) {
    const base = name.replace(/\.png$/i, '');
    const m = /slice_(\d+)/.exec(name);
    const cd = /(case\d+)_(day\d+)/.exec(name) || /(case\d+)_(day\d+)/.exec(path || '');
    if (m && cd) return `${cd[1]}_${cd[2]}_slice_${m[1]}`;
    return base;
  }

  function organLabel(name) {
    return name.replace(/_/g, ' ');
  }

  function naturalCompare(a, b) {
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });
  }

  /* ---------------------------------------------------------------- */
  /* Errors in plain words                                             */
  /* ---------------------------------------------------------------- */

  const STATUS_WORDS = {
    0: 'The segd server could not be reached. Is it still running?',
    400: 'The server could not read this file as a PNG image.',
    404: 'The segmentation endpoint was not found: is this page served by segd?',
    405: 'The server refused the request method.',
    408: 'The upload took too long and the server gave up.',
    413: 'The image is too large for this server (file size or pixel count over its limits).',
    415: 'The server only accepts PNG images.',
    422: 'The PNG was read but cannot be segmented (for example an image of zero width or height).',
    500: 'The server hit an internal error.',
    503: 'The server is busy or shutting down; try again in a moment.',
    504: 'The server did not get to this slice before its deadline; try again when it is less busy.',
  };

  /* the series route's own words where they differ */
  const SERIES_WORDS = {
    400: 'The server could not read the DICOM upload.',
    413: 'The series is too large for this server (file size, pixel count or number of slices over its limits).',
    415: 'The server did not take these files as DICOM images (not DICOM Part-10, an unsupported transfer syntax, or a server built without DICOM support).',
    422: 'The DICOM files were read but do not form one series of greyscale images that can be segmented.',
    504: 'The server did not get to this series before its deadline; try again when it is less busy.',
  };

  function describeError(status, body, words0) {
    let words = (words0 && words0[status]) || STATUS_WORDS[status];
    if (!words) words = status >= 500 ? `The server failed (HTTP ${status}).` : `The request was refused (HTTP ${status}).`;
    const detail = body && body.error && body.error.message;
    return detail ? `${words} (server said: ${detail})` : words;
  }

  /* ---------------------------------------------------------------- */
  /* State and elements                                                */
  /* ---------------------------------------------------------------- */

  const $ = (id) => document.getElementById(id);
  const el = {
    drop: $('drop'), file: $('file'), threshold: $('threshold'), rerun: $('rerun'), csv: $('csv'),
    clear: $('clear'), slices: $('slices'), status: $('status'), error: $('error'), stage: $('stage'),
    canvases: $('canvases'), image: $('image'), overlay: $('overlay'), caption: $('caption'),
    probe: $('probe'), legend: $('legend'), spacing: $('spacing'), opacity: $('opacity'),
    opacityOut: $('opacity-out'), window: $('window'), windowOut: $('window-out'), level: $('level'),
    levelOut: $('level-out'), autoWl: $('auto-wl'), depth: $('depth'), latency: $('latency'),
    model: $('model'), folder: $('folder'), openFolder: $('open-folder'), seriesBox: $('series-box'),
    volumesBody: $('volumes-body'), volumesCaption: $('volumes-caption'), cleanup: $('cleanup'),
  };

  const state = {
    classes: DEFAULT_CLASSES.slice(),
    enabled: {},
    slices: [],          /* sorted by key (path or name; a series' slices in series order) */
    current: null,       /* the slice shown */
    wl: null,            /* {window, level, maxValue} */
    queue: [],
    inFlight: 0,
    nextSeq: 0,
  };

  function colourOf(organ) {
    if (ORGAN_COLOURS[organ]) return ORGAN_COLOURS[organ];
    const i = state.classes.indexOf(organ);
    return EXTRA_COLOURS[(i < 0 ? 0 : i) % EXTRA_COLOURS.length];
  }

  function rgb(c, a) {
    return a === undefined ? `rgb(${c[0]}, ${c[1]}, ${c[2]})` : `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${a})`;
  }

  function setStatus(text) {
    el.status.textContent = text;
  }

  /* ---------------------------------------------------------------- */
  /* Legend and controls                                               */
  /* ---------------------------------------------------------------- */

  function buildLegend() {
    el.legend.textContent = '';
    for (const organ of state.classes) {
      if (!(organ in state.enabled)) state.enabled[organ] = true;
      const li = document.createElement('li');
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.id = 'organ-' + organ;
      box.checked = state.enabled[organ];
      box.dataset.organ = organ;
      box.addEventListener('change', () => {
        state.enabled[organ] = box.checked;
        drawOverlay();
      });
      const label = document.createElement('label');
      label.htmlFor = box.id;
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.setAttribute('aria-hidden', 'true');
      sw.style.background = rgb(colourOf(organ), FILL_ALPHA / 255);
      sw.style.borderColor = rgb(colourOf(organ));
      label.append(sw, document.createTextNode(organLabel(organ)));
      const stats = document.createElement('span');
      stats.className = 'stats';
      stats.id = 'stats-' + organ;
      stats.textContent = '–';
      box.setAttribute('aria-describedby', stats.id);
      li.append(box, label, stats);
      el.legend.append(li);
    }
  }

  function setClasses(classes) {
    if (!Array.isArray(classes) || !classes.length) return;
    const known = new Set(state.classes);
    if (classes.length === known.size && classes.every((c) => known.has(c))) return;
    state.classes = classes.slice();
    buildLegend();
    showSlice(state.current, false);
  }

  function fmtInt(n) {
    return Number(n).toLocaleString('en-US');
  }

  function fmtMs(ms) {
    return ms == null || !isFinite(ms) ? '–' : ms < 10 ? ms.toFixed(2) + ' ms' : ms.toFixed(1) + ' ms';
  }

  function updateLegendStats(s) {
    const sp = s && s.kaggle;
    for (const organ of state.classes) {
      const node = $('stats-' + organ);
      if (!node) continue;
      if (!s || !s.result) {
        node.textContent = '–';
        continue;
      }
      const px = s.counts[organ] || 0;
      let text = `${fmtInt(px)} px`;
      if (sp) text += ` · ${(px * sp.sx * sp.sy / 100).toFixed(2)} cm²`;
      const p = s.result.presence && s.result.presence[organ];
      if (typeof p === 'number') text += ` · presence ${p.toFixed(2)}`;
      node.textContent = text;
    }
    if (!s) el.spacing.textContent = '';
    else if (sp) el.spacing.textContent = `Pixel spacing ${sp.sx} × ${sp.sy} mm (from the ${s.series ? 'DICOM PixelSpacing' : 'file name'}).`;
    else el.spacing.textContent = 'No pixel spacing in the file name: areas need a Kaggle-style name (slice_SSSS_W_H_sx_sy.png).';
  }

  function updateLatency(s) {
    el.latency.textContent = '';
    if (!s || !s.result) return;
    const t = (s.series ? s.series.doc && s.series.doc.timing_ms : s.result.timing_ms) || {};
    const rows = [['round trip', s.rtt], ['queue', t.queue], ['decode', t.decode], ['inference', t.infer],
      ['post-processing', t.post], [s.series ? '3D clean-up' : 'encode', s.series ? t.cleanup : t.encode]];
    const server = ['queue', 'decode', 'infer', 'post', 'encode', 'cleanup'].reduce((a, k) => a + (t[k] || 0), 0);
    rows.splice(1, 0, ['server total', server]);
    for (const [k, v] of rows) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = fmtMs(v);
      el.latency.append(dt, dd);
    }
  }

  function fmtMl(v) {
    return typeof v === 'number' && isFinite(v) ? v.toFixed(2) + ' mL' : '–';
  }

  /* The per-organ volumes and clean-up figures of the series the shown
   * slice belongs to; hidden for PNG slices. */
  function updateSeriesPanel(s) {
    const doc = s && s.series && s.series.doc;
    el.seriesBox.hidden = !doc;
    el.volumesBody.textContent = '';
    el.volumesCaption.textContent = el.cleanup.textContent = '';
    if (!doc) return;
    const vol = doc.volume_ml || {};
    const cu = doc.cleanup || {};
    const comps = cu.components_removed || {}, voxels = cu.voxels_removed || {};
    for (const organ of Object.keys(vol)) {
      const tr = document.createElement('tr');
      tr.dataset.organ = organ;
      const th = document.createElement('th');
      th.scope = 'row';
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.setAttribute('aria-hidden', 'true');
      sw.style.background = rgb(colourOf(organ), FILL_ALPHA / 255);
      sw.style.borderColor = rgb(colourOf(organ));
      th.append(sw, document.createTextNode(organLabel(organ)));
      const tv = document.createElement('td');
      tv.className = 'volume';
      tv.textContent = fmtMl(vol[organ]);
      const tc = document.createElement('td');
      tc.className = 'removed';
      tc.textContent = `${fmtInt(comps[organ] || 0)} (${fmtInt(voxels[organ] || 0)} vx)`;
      tc.title = `${comps[organ] || 0} components, ${voxels[organ] || 0} voxels removed by the 3D clean-up`;
      tr.append(th, tv, tc);
      el.volumesBody.append(tr);
    }
    const vs = doc.voxel_spacing_mm;
    el.volumesCaption.textContent = `${doc.slice_count} slices` +
      (Array.isArray(vs) ? `; voxel ${vs.map((v) => +v.toFixed(3)).join(' × ')} mm` : '; voxel size unknown: no volumes');
    el.cleanup.textContent = Array.isArray(vs)
      ? `3D clean-up: components under ${cu.min_volume_ml} mL dropped (${cu.connectivity}-connectivity); "Removed" counts components (voxels).`
      : 'No 3D clean-up: the slice spacing is unknown.';
  }

  /* ---------------------------------------------------------------- */
  /* Drawing                                                           */
  /* ---------------------------------------------------------------- */

  /* The image's value range, cached on the image. */
  function valueRange(img) {
    if (!img.range) {
      let lo = Infinity, hi = -Infinity;
      const d = img.data;
      for (let i = 0; i < d.length; i++) {
        const v = d[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      img.range = isFinite(lo) ? { lo, hi } : { lo: 0, hi: img.maxValue };
    }
    return img.range;
  }

  function autoWindow(img) {
    const { lo, hi } = valueRange(img);
    return { window: Math.max(1, hi - lo + 1), level: Math.round((lo + hi) / 2), maxValue: img.maxValue };
  }

  /* Sliders span the shown image's values (a 16-bit MR slice uses a few
   * thousand of the 65536), widened to keep the current setting. */
  function syncWlControls() {
    const wl = state.wl;
    const on = !!wl;
    el.window.disabled = el.level.disabled = el.autoWl.disabled = !on;
    if (!on) {
      el.windowOut.value = el.levelOut.value = '';
      return;
    }
    const img = state.current && state.current.image;
    const { lo, hi } = img ? valueRange(img) : { lo: 0, hi: wl.maxValue };
    el.window.min = '1';
    el.window.max = String(Math.min(wl.maxValue + 1, Math.max(wl.window, 2 * (hi - lo + 1))));
    el.level.min = String(Math.max(0, Math.min(wl.level, lo)));
    el.level.max = String(Math.min(wl.maxValue, Math.max(wl.level, hi)));
    el.window.value = String(wl.window);
    el.level.value = String(wl.level);
    el.windowOut.value = String(wl.window);
    el.levelOut.value = String(wl.level);
  }

  function drawImage() {
    const s = state.current;
    if (!s || !s.image) return;
    const img = s.image;
    const { width: w, height: h } = img;
    if (el.image.width !== w || el.image.height !== h) {
      el.image.width = w;
      el.image.height = h;
    }
    const wl = state.wl;
    const lo = wl.level - wl.window / 2;
    const lut = new Uint8ClampedArray(img.maxValue + 1);
    for (let v = 0; v <= img.maxValue; v++) lut[v] = Math.round(((v - lo) / wl.window) * 255);
    const ctx = el.image.getContext('2d');
    const out = ctx.createImageData(w, h);
    const o = out.data, d = img.data;
    const n = w * h;
    if (img.channels === 1) {
      for (let i = 0; i < n; i++) {
        const g = lut[d[i]];
        o[4 * i] = o[4 * i + 1] = o[4 * i + 2] = g;
        o[4 * i + 3] = 255;
      }
    } else {
      for (let i = 0; i < n; i++) {
        o[4 * i] = lut[d[3 * i]];
        o[4 * i + 1] = lut[d[3 * i + 1]];
        o[4 * i + 2] = lut[d[3 * i + 2]];
        o[4 * i + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  /* One overlay pixel per image pixel: the top-most enabled organ (last in
   * the class order) wins; its outline (a mask pixel with a 4-neighbour
   * outside the mask or the image) is opaque, its interior translucent. */
  function drawOverlay() {
    const s = state.current;
    const c = el.overlay;
    delete c.dataset.rendered;
    if (!s) return;
    const w = s.width, h = s.height;
    if (!w || !h) return;
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const ctx = c.getContext('2d', { willReadFrequently: true });
    const out = ctx.createImageData(w, h);
    const o = out.data;
    const layers = state.classes.filter((k) => state.enabled[k] && s.masks && s.masks[k]).reverse();
    if (layers.length) {
      const masks = layers.map((k) => s.masks[k]);
      const cols = layers.map(colourOf);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const p = y * w + x;
          for (let k = 0; k < masks.length; k++) {
            const m = masks[k];
            if (!m[p]) continue;
            const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
              !m[p - 1] || !m[p + 1] || !m[p - w] || !m[p + w];
            const col = cols[k];
            o[4 * p] = col[0];
            o[4 * p + 1] = col[1];
            o[4 * p + 2] = col[2];
            o[4 * p + 3] = edge ? LINE_ALPHA : FILL_ALPHA;
            break;
          }
        }
      }
    }
    ctx.putImageData(out, 0, 0);
    if (s.result) {
      c.dataset.rendered = 'true';
      c.dataset.sliceId = s.id;
    }
  }

  /* A preview's value (the server's decoded pixel) from its stored 16-bit
   * sample. */
  function fmtValue(img, stored) {
    const v = stored * img.scale + img.offset;
    return Number.isInteger(v) ? fmtInt(v) : String(+v.toPrecision(6));
  }

  function describeSlice(s) {
    const parts = [];
    if (s.result) {
      for (const organ of state.classes) {
        const px = s.counts[organ] || 0;
        let t = `${organLabel(organ)} ${px ? fmtInt(px) + ' pixels' : 'not found'}`;
        if (px && s.kaggle) t += ` (${(px * s.kaggle.sx * s.kaggle.sy / 100).toFixed(2)} square centimetres)`;
        parts.push(t);
      }
    }
    return parts.join(', ');
  }

  function showSlice(s, announce) {
    state.current = s || null;
    renderList();
    if (!s) {
      el.stage.hidden = true;
      el.error.hidden = true;
      updateLegendStats(null);
      updateLatency(null);
      updateSeriesPanel(null);
      state.wl = null;
      syncWlControls();
      el.depth.textContent = '';
      return;
    }
    el.stage.hidden = !s.image;
    if (s.image) {
      if (!state.wl || state.wl.maxValue !== s.image.maxValue) state.wl = autoWindow(s.image);
      syncWlControls();
      el.canvases.style.setProperty('--w', s.image.width);
      el.canvases.style.setProperty('--h', s.image.height);
      const r = valueRange(s.image);
      if (s.image.scale !== undefined)
        el.depth.textContent = `Decoded by ${s.image.decoder}; values ${fmtValue(s.image, r.lo)}–${fmtValue(s.image, r.hi)} ` +
          `(stored ${fmtInt(r.lo)}–${fmtInt(r.hi)} of 0–${fmtInt(s.image.maxValue)}, × ${+s.image.scale.toPrecision(6)} + ${+s.image.offset.toPrecision(8)}).`;
      else
        el.depth.textContent = `Decoded by ${s.image.decoder}; values ${fmtInt(r.lo)}–${fmtInt(r.hi)} of 0–${fmtInt(s.image.maxValue)}.`;
      drawImage();
    }
    drawOverlay();
    updateLegendStats(s);
    updateLatency(s);
    updateSeriesPanel(s);
    const pos = `Slice ${state.slices.indexOf(s) + 1} of ${state.slices.length}: ${s.name}`;
    const desc = describeSlice(s);
    el.caption.textContent = s.image ? `${s.name} · ${s.image.width} × ${s.image.height}` : s.name;
    el.image.setAttribute('aria-label', desc ? `${pos}. ${desc}.` : pos);
    if (s.error) {
      el.error.textContent = `${s.name}: ${s.error}`;
      el.error.hidden = false;
    } else {
      el.error.hidden = true;
    }
    if (announce) {
      let text = pos + '. ';
      if (s.status === 'done') text += desc + '.';
      else if (s.status === 'error') text += 'Failed.';
      else text += 'Segmenting…';
      setStatus(text);
    }
  }

  /* ---------------------------------------------------------------- */
  /* Slice list                                                        */
  /* ---------------------------------------------------------------- */

  const STATE_WORDS = { queued: 'waiting', running: 'segmenting…', done: 'done', error: 'error' };

  function renderList() {
    const hadFocus = el.slices.contains(document.activeElement);
    el.slices.textContent = '';
    let focusBtn = null;
    state.slices.forEach((s, i) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.index = String(i);
      const cur = s === state.current;
      b.setAttribute('aria-current', cur ? 'true' : 'false');
      b.tabIndex = cur || (!state.current && i === 0) ? 0 : -1;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = s.name;
      const st = document.createElement('span');
      st.className = 'state ' + s.status;
      st.textContent = s.status === 'done' && s.rtt ? `${Math.round(s.rtt)} ms` : STATE_WORDS[s.status];
      b.append(name, st);
      b.setAttribute('aria-label', `${s.name}, ${STATE_WORDS[s.status]}`);
      b.title = s.path && s.path !== s.name ? s.path : s.name;
      b.addEventListener('click', () => showSlice(s, true));
      li.append(b);
      el.slices.append(li);
      if (cur) focusBtn = b;
    });
    if (hadFocus && focusBtn) focusBtn.focus();
    const any = state.slices.length > 0;
    el.clear.disabled = !any;
    el.rerun.disabled = !any;
    el.csv.disabled = !state.slices.some((s) => s.status === 'done');
  }

  function step(delta, absolute) {
    if (!state.slices.length) return;
    let i = state.slices.indexOf(state.current);
    if (absolute !== undefined) i = absolute;
    else i = Math.min(state.slices.length - 1, Math.max(0, i + delta));
    if (i < 0) i = state.slices.length - 1;
    if (state.slices[i] !== state.current) showSlice(state.slices[i], true);
  }

  /* ---------------------------------------------------------------- */
  /* Requests                                                          */
  /* ---------------------------------------------------------------- */

  function thresholdParam() {
    const t = el.threshold.value.trim();
    if (!t) return null;
    const v = Number(t);
    if (!(v > 0 && v < 1)) throw new Error('The threshold must be a number between 0 and 1 (exclusive).');
    return t;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function segment(s, threshold) {
    const q = new URLSearchParams({ id: s.id });
    if (threshold) q.set('threshold', threshold);
    for (let attempt = 1; ; attempt++) {
      const t0 = performance.now();
      let resp, body = null;
      try {
        resp = await fetch('v1/segment?' + q, { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: s.file });
      } catch (e) {
        throw new Error(describeError(0, null));
      }
      const text = await resp.text();
      try { body = JSON.parse(text); } catch (e) { body = null; }
      const rtt = performance.now() - t0;
      if (resp.ok && body && body.masks) return { body, rtt };
      if (resp.status === 503 && attempt < MAX_TRIES && !/draining|shutting/.test(text)) {
        const after = Math.min(10, Math.max(0.2, Number(resp.headers.get('Retry-After')) || 1));
        s.status = 'queued';
        renderList();
        await sleep(after * 1000 * attempt);
        s.status = 'running';
        renderList();
        continue;
      }
      if (resp.ok) throw new Error('The server answered with a document this viewer does not understand.');
      throw new Error(describeError(resp.status, body));
    }
  }

  async function processSlice(s) {
    const seq = s.seq;
    s.status = 'running';
    renderList();
    try {
      if (!s.image) {
        const head = new Uint8Array(await s.file.slice(0, 8).arrayBuffer());
        if (head.length < 8 || PNG_SIG.some((v, i) => head[i] !== v))
          throw new Error('This file is not a PNG image, so it was not sent.');
        try {
          s.image = await decodeImage(s.file);
        } catch (e) {
          s.image = null; /* the server may still read it */
        }
        if (s === state.current) showSlice(s, false);
      }
      const { body, rtt } = await segment(s, s.threshold);
      if (seq !== s.seq) return; /* superseded by "segment again" */
      const n = body.width * body.height;
      if (s.image && (s.image.width !== body.width || s.image.height !== body.height))
        throw new Error(`The server saw a ${body.width} × ${body.height} image, this page decoded ${s.image.width} × ${s.image.height}.`);
      const masks = {}, counts = {};
      for (const organ of Object.keys(body.masks)) {
        masks[organ] = decodeRle(body.masks[organ], n);
        let c = 0;
        for (let i = 0; i < n; i++) c += masks[organ][i];
        counts[organ] = c;
      }
      s.width = body.width;
      s.height = body.height;
      s.result = body;
      s.masks = masks;
      s.counts = counts;
      s.rtt = rtt;
      s.error = null;
      s.status = 'done';
      setClasses(Object.keys(body.masks));
    } catch (e) {
      if (seq !== s.seq) return;
      s.status = 'error';
      s.error = e.message || String(e);
      s.result = null;
      s.masks = null;
    }
    if (s === state.current) showSlice(s, true);
    else renderList();
    summarise();
  }

  function summarise() {
    const done = state.slices.filter((s) => s.status === 'done').length;
    const bad = state.slices.filter((s) => s.status === 'error').length;
    const left = state.slices.length - done - bad;
    if (left === 0 && state.slices.length) {
      const cur = state.current;
      let text = `${done} of ${state.slices.length} slices segmented` + (bad ? `, ${bad} failed.` : '.');
      if (cur && cur.status === 'done') text += ` Showing ${cur.name}: ${describeSlice(cur)}.`;
      setStatus(text);
    }
  }

  function pump() {
    while (state.inFlight < CONCURRENCY && state.queue.length) {
      const s = state.queue.shift();
      state.inFlight++;
      processSlice(s).finally(() => {
        state.inFlight--;
        pump();
      });
    }
  }

  function enqueue(list, threshold) {
    for (const s of list) {
      s.seq = ++state.nextSeq;
      s.threshold = threshold;
      s.status = 'queued';
      state.queue.push(s);
    }
    renderList();
    pump();
  }

  function sortSlices() {
    state.slices.sort((a, b) => naturalCompare(a.key, b.key));
  }

  /* A DICOM Part-10 file: a .dcm/.dicom name, or "DICM" at byte 128. */
  async function isDicom(file) {
    if (/\.(dcm|dicom)$/i.test(file.name)) return true;
    if (/\.png$/i.test(file.name) || file.name === 'DICOMDIR') return false;
    const b = new Uint8Array(await file.slice(128, 132).arrayBuffer());
    return b.length === 4 && DICM.every((v, i) => b[i] === v);
  }

  /* Files picked or dropped: PNGs each to v1/segment, the DICOM files
   * together as one series.  From a folder, files that are neither are
   * left out; picked one by one, they are listed (and refused). */
  async function addFiles(entries, fromFolder) {
    let threshold;
    try {
      threshold = thresholdParam();
    } catch (e) {
      el.error.textContent = e.message;
      el.error.hidden = false;
      el.threshold.focus();
      return;
    }
    const added = [], dicoms = [];
    for (const { file, path } of entries) {
      if (state.slices.length + added.length + dicoms.length >= MAX_FILES) break;
      const name = file.name;
      let dicom = false;
      try { dicom = await isDicom(file); } catch (e) { dicom = false; }
      if (dicom) {
        dicoms.push({ file, path: path || name });
        continue;
      }
      if (fromFolder && !/\.png$/i.test(name) && file.type !== 'image/png') continue;
      added.push({ file, name, path: path || '', key: path || name, id: sliceId(name, path), kaggle: parseKaggleName(name),
        status: 'queued', image: null, result: null, masks: null, counts: {}, rtt: null, error: null });
    }
    if (dicoms.length) addSeries(dicoms, threshold);
    if (!added.length) {
      if (!dicoms.length) setStatus('No PNG or DICOM files were found in what was dropped.');
      return;
    }
    state.slices.push(...added);
    sortSlices();
    added.sort((a, b) => state.slices.indexOf(a) - state.slices.indexOf(b));
    setStatus(`Segmenting ${added.length} slice${added.length > 1 ? 's' : ''}…`);
    enqueue(added, threshold);
    showSlice(added[0], false);
  }

  /* ---------------------------------------------------------------- */
  /* DICOM series: one POST v1/series?preview=1                        */
  /* ---------------------------------------------------------------- */

  let seriesCount = 0;

  /* The folder the files share, else "DICOM series". */
  function seriesLabel(entries) {
    const dirs = new Set(entries.map((e) => e.path.split('/').filter(Boolean).slice(0, -1).join('/')));
    const dir = dirs.size === 1 ? [...dirs][0] : '';
    return dir ? dir.split('/').pop() : 'DICOM series';
  }

  /* A series group: its files, and until its answer one list entry that
   * stands for it (then its slices, in series order). */
  function addSeries(entries, threshold) {
    const label = seriesLabel(entries);
    const n = ++seriesCount;
    const g = { label, key: `${label}\u0001${String(n).padStart(4, '0')}`, entries, threshold, seq: 0, doc: null };
    g.members = [seriesPlaceholder(g)];
    state.slices.push(...g.members);
    sortSlices();
    setStatus(`Sending ${entries.length} DICOM file${entries.length > 1 ? 's' : ''} as one series…`);
    showSlice(g.members[0], false);
    processSeries(g);
  }

  function seriesPlaceholder(g) {
    return { name: `${g.label} (${g.entries.length} DICOM file${g.entries.length > 1 ? 's' : ''})`, path: '',
      key: g.key, id: g.label, series: g, placeholder: true, status: 'queued', image: null, result: null,
      masks: null, counts: {}, rtt: null, error: null };
  }

  function base64Bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  /* POST the group's files as multipart/related (one Part-10 instance per
   * part); 503 retried after Retry-After as for single slices. */
  async function postSeries(g, onWait) {
    const hex = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
    const boundary = 'segd-viewer-' + hex;
    const parts = [];
    for (const { file } of g.entries)
      parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, '\r\n');
    parts.push(`--${boundary}--\r\n`);
    const body = new Blob(parts);
    const q = new URLSearchParams({ preview: '1' });
    if (g.threshold) q.set('threshold', g.threshold);
    for (let attempt = 1; ; attempt++) {
      const t0 = performance.now();
      let resp, doc = null;
      try {
        resp = await fetch('v1/series?' + q, { method: 'POST', body, headers: {
          'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
          Accept: 'application/json' } });
      } catch (e) {
        throw new Error(describeError(0, null));
      }
      const text = await resp.text();
      try { doc = JSON.parse(text); } catch (e) { doc = null; }
      const rtt = performance.now() - t0;
      if (resp.ok && doc && Array.isArray(doc.slices) && doc.slices.length) return { doc, rtt };
      if (resp.status === 503 && attempt < MAX_TRIES && !/draining|shutting/.test(text)) {
        const after = Math.min(10, Math.max(0.2, Number(resp.headers.get('Retry-After')) || 1));
        onWait(true);
        await sleep(after * 1000 * attempt);
        onWait(false);
        continue;
      }
      if (resp.ok) throw new Error('The server answered with a document this viewer does not understand.');
      throw new Error(describeError(resp.status, doc, SERIES_WORDS));
    }
  }

  /* Slice k of a series answer as a list entry. */
  async function seriesSlice(g, doc, k, rtt) {
    const sd = doc.slices[k];
    const w = doc.width, h = doc.height, n = w * h;
    let image = null;
    if (sd.image && typeof sd.image.png === 'string') {
      image = await decodePng(base64Bytes(sd.image.png).buffer);
      if (image.width !== w || image.height !== h || image.channels !== 1)
        throw new Error(`The server's preview of slice ${k + 1} is ${image.width} × ${image.height}, the series ${w} × ${h}.`);
      image.offset = Number(sd.image.offset) || 0;
      image.scale = Number(sd.image.scale) || 1;
      image.decoder = 'the server (DICOM, DCMTK), sent as a 16-bit PNG';
    }
    const masks = {}, counts = {};
    for (const organ of Object.keys(sd.masks || {})) {
      masks[organ] = decodeRle(sd.masks[organ], n);
      let c = 0;
      for (let i = 0; i < n; i++) c += masks[organ][i];
      counts[organ] = c;
    }
    const ps = sd.dicom && sd.dicom.PixelSpacing;
    const digits = String(doc.slices.length).length;
    return { name: `${g.label} ${String(k + 1).padStart(digits, '0')}/${doc.slices.length}`,
      path: '', key: `${g.key}/${String(k).padStart(6, '0')}`, id: sd.id, series: g, index: k,
      kaggle: Array.isArray(ps) ? { sx: ps[1], sy: ps[0] } : null, status: 'done', image, result: sd,
      masks, counts, rtt, error: null, width: w, height: h };
  }

  function replaceMembers(g, members) {
    const old = new Set(g.members);
    const wasCurrent = old.has(state.current);
    state.slices = state.slices.filter((s) => !old.has(s));
    g.members = members;
    state.slices.push(...members);
    sortSlices();
    return wasCurrent;
  }

  async function processSeries(g) {
    const seq = g.seq = ++state.nextSeq;
    const ph = g.members.length === 1 && g.members[0].placeholder ? g.members[0] : seriesPlaceholder(g);
    ph.status = 'running';
    ph.error = null;
    const wasCurrent = replaceMembers(g, [ph]) || !state.current;
    if (wasCurrent) showSlice(ph, false);
    else renderList();
    let members;
    try {
      const { doc, rtt } = await postSeries(g, (waiting) => {
        ph.status = waiting ? 'queued' : 'running';
        renderList();
      });
      if (seq !== g.seq) return;
      members = [];
      for (let k = 0; k < doc.slices.length; k++) members.push(await seriesSlice(g, doc, k, rtt));
      if (seq !== g.seq) return;
      g.doc = doc;
      setClasses(Object.keys(doc.slices[0].masks || {}));
    } catch (e) {
      if (seq !== g.seq) return;
      g.doc = null;
      ph.status = 'error';
      ph.error = e.message || String(e);
      members = [ph];
    }
    const cur = replaceMembers(g, members);
    if (cur || state.current === ph || !state.current) showSlice(members[0], true);
    else renderList();
    summarise();
  }

  /* Files of a drop, folders walked (webkitGetAsEntry). */
  /* PNGs, DICOM files by name, and names without an extension (DICOM
   * folders often have those: IM0001); the rest is left out. */
  const DROP_NAME = /(\.(png|dcm|dicom)|^[^.]+)$/i;

  async function filesFromDrop(dt) {
    const out = [];
    const items = dt.items ? Array.from(dt.items) : [];
    const entries = items.map((it) => (it.webkitGetAsEntry ? it.webkitGetAsEntry() : null));
    if (!entries.length || entries.some((e) => !e)) {
      for (const f of Array.from(dt.files)) out.push({ file: f, path: f.name });
      return out.filter((e) => DROP_NAME.test(e.file.name) || e.file.type === 'image/png');
    }
    const walk = async (entry) => {
      if (out.length >= MAX_FILES) return;
      if (entry.isFile) {
        if (!DROP_NAME.test(entry.name)) return;
        const file = await new Promise((res, rej) => entry.file(res, rej));
        out.push({ file, path: entry.fullPath });
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
          if (!batch.length) break;
          for (const e of batch) await walk(e);
        }
      }
    };
    for (const e of entries) await walk(e);
    return out;
  }

  /* ---------------------------------------------------------------- */
  /* CSV (submission style: id,class,predicted)                        */
  /* ---------------------------------------------------------------- */

  /* One CSV field: RFC 4180 quoting (a file named "a,b,c.png" must not
   * shift the columns), and a leading = + - @ prefixed with ' so that a
   * spreadsheet shows the id as text instead of running it as a formula. */
  function csvField(v) {
    let s = String(v);
    if (/^[=+\-@]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  function downloadCsv() {
    const lines = ['id,class,predicted'];
    for (const s of state.slices) {
      if (s.status !== 'done') continue;
      for (const organ of state.classes)
        lines.push([csvField(s.id), csvField(organ), csvField(s.result.masks[organ] || '')].join(','));
    }
    const blob = new Blob([lines.join('\r\n') + '\r\n'], { type: 'text/csv' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'segd-masks.csv';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  /* ---------------------------------------------------------------- */
  /* Wiring                                                            */
  /* ---------------------------------------------------------------- */

  function openPicker() {
    el.file.click();
  }

  el.drop.addEventListener('click', openPicker);
  el.drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      openPicker();
    }
  });
  el.file.addEventListener('change', () => {
    const files = Array.from(el.file.files || []);
    el.file.value = '';
    addFiles(files.map((f) => ({ file: f, path: f.webkitRelativePath || f.name })), false);
  });
  el.openFolder.addEventListener('click', () => el.folder.click());
  el.folder.addEventListener('change', () => {
    const files = Array.from(el.folder.files || []);
    el.folder.value = '';
    addFiles(files.map((f) => ({ file: f, path: f.webkitRelativePath || f.name })), true);
  });
  for (const t of ['dragenter', 'dragover']) {
    el.drop.addEventListener(t, (e) => {
      e.preventDefault();
      el.drop.classList.add('over');
    });
  }
  el.drop.addEventListener('dragleave', () => el.drop.classList.remove('over'));
  el.drop.addEventListener('drop', async (e) => {
    e.preventDefault();
    el.drop.classList.remove('over');
    addFiles(await filesFromDrop(e.dataTransfer), true);
  });
  /* a drop next to the zone must not navigate away from the page */
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => {
    if (!el.drop.contains(e.target)) {
      e.preventDefault();
      filesFromDrop(e.dataTransfer).then((list) => addFiles(list, true));
    }
  });

  el.opacity.addEventListener('input', () => {
    el.overlay.style.opacity = String(el.opacity.value / 100);
    el.opacityOut.value = `${el.opacity.value} %`;
  });
  el.window.addEventListener('input', () => {
    if (!state.wl) return;
    state.wl.window = Number(el.window.value);
    el.windowOut.value = el.window.value;
    drawImage();
  });
  el.level.addEventListener('input', () => {
    if (!state.wl) return;
    state.wl.level = Number(el.level.value);
    el.levelOut.value = el.level.value;
    drawImage();
  });
  el.autoWl.addEventListener('click', () => {
    if (!state.current || !state.current.image) return;
    state.wl = autoWindow(state.current.image);
    syncWlControls();
    drawImage();
  });
  el.rerun.addEventListener('click', () => {
    let threshold;
    try {
      threshold = thresholdParam();
    } catch (e) {
      el.error.textContent = e.message;
      el.error.hidden = false;
      return;
    }
    state.queue = [];
    const groups = new Set(state.slices.filter((s) => s.series).map((s) => s.series));
    enqueue(state.slices.filter((s) => !s.series), threshold);
    for (const g of groups) {
      g.threshold = threshold;
      processSeries(g);
    }
    setStatus(`Segmenting ${state.slices.length} slices again…`);
  });
  el.clear.addEventListener('click', () => {
    state.queue = [];
    for (const s of state.slices) {
      s.seq = -1;
      if (s.series) s.series.seq = -1;
    }
    state.slices = [];
    showSlice(null, false);
    setStatus('Cleared. Drop or choose PNG slices or a DICOM series to segment them.');
    el.drop.focus();
  });
  el.csv.addEventListener('click', downloadCsv);

  /* pixel probe: position, raw value and organs under the pointer */
  el.canvases.addEventListener('mousemove', (e) => {
    const s = state.current;
    if (!s || !s.image) return;
    const r = el.canvases.getBoundingClientRect();
    const x = Math.floor(((e.clientX - r.left) / r.width) * s.image.width);
    const y = Math.floor(((e.clientY - r.top) / r.height) * s.image.height);
    if (x < 0 || y < 0 || x >= s.image.width || y >= s.image.height) return;
    const p = y * s.image.width + x;
    const d = s.image.data;
    const v = s.image.scale !== undefined ? fmtValue(s.image, d[p])
      : s.image.channels === 1 ? String(d[p]) : `${d[3 * p]}, ${d[3 * p + 1]}, ${d[3 * p + 2]}`;
    const organs = s.masks ? state.classes.filter((k) => s.masks[k] && s.masks[k][p]).map(organLabel) : [];
    el.probe.textContent = `x ${x}, y ${y}: ${v}${organs.length ? ' · ' + organs.join(', ') : ''}`;
  });
  el.canvases.addEventListener('mouseleave', () => { el.probe.textContent = ''; });

  /* arrow keys step through the stack, except where they already mean
   * something (sliders, text fields) */
  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const t = e.target;
    if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable ||
        (t.tagName === 'INPUT' && t.type !== 'checkbox' && t.type !== 'button'))) return;
    const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
    if (e.key in keys) step(keys[e.key]);
    else if (e.key === 'Home') step(0, 0);
    else if (e.key === 'End') step(0, -1);
    else return;
    e.preventDefault();
  });

  async function loadModel() {
    try {
      const r = await fetch('v1/model', { headers: { Accept: 'application/json' } });
      const m = r.ok ? await r.json() : null;
      if (!m) throw new Error(describeError(r.status, null));
      const sha = m.sha256 ? ` · sha256 ${m.sha256.slice(0, 12)}…` : '';
      const dice = m.validation && typeof m.validation.mean_dice === 'number'
        ? ` · validation mean Dice ${m.validation.mean_dice.toFixed(3)}` : '';
      el.model.textContent = `Model ${m.name || 'unknown'}${sha}${dice}`;
      el.model.classList.remove('bad');
      setClasses(m.classes);
    } catch (e) {
      el.model.textContent = 'Model information unavailable: ' + (e.message || e);
      el.model.classList.add('bad');
    }
  }

  buildLegend();
  el.overlay.style.opacity = String(el.opacity.value / 100);
  loadModel();

  /* for tests and the console */
  window.segdViewer = { decodePng, decodeRle, parseKaggleName, sliceId, describeError, isDicom, state };
})();
