// Minimal segd client for a web page (or Node 18+): post a PNG, decode the
// run-length masks, paint them over the image.  An ES module:
//
//   <canvas id="overlay"></canvas>
//   <script type="module">
//     import { segment, decodeRle, paintMasks } from './viewer-snippet.js';
//     input.onchange = async () => {
//       const result = await segment(input.files[0], 'http://127.0.0.1:8080');
//       paintMasks(document.getElementById('overlay'), result);
//     };
//   </script>
//
// From another origin the server needs --cors-origin (e.g. '*').
//
// A server started with --api-key-file wants "Authorization: Bearer KEY":
// pass { apiKey } (in Node it defaults to $SEGD_API_KEY).  A key in a web
// page is readable by everyone who loads it: in a browser, ask the user for
// it or let your own backend add the header, never write it into the page.

// POST one PNG (File, Blob, ArrayBuffer or Uint8Array) to /v1/segment.
// Resolves to the result document; rejects with the server's message.
export async function segment(png, base = '', {
  id, threshold, apiKey = globalThis.process?.env?.SEGD_API_KEY,
} = {}) {
  const q = new URLSearchParams();
  if (id) q.set('id', id);
  if (threshold) q.set('threshold', String(threshold));
  const qs = q.toString();
  const url = `${base.replace(/\/$/, '')}/v1/segment${qs ? '?' + qs : ''}`;
  const headers = { 'Content-Type': 'image/png' };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const resp = await fetch(url, { method: 'POST', headers, body: png });
  const doc = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(`segd ${resp.status}: ${doc?.error?.message ?? resp.statusText}`);
  return doc;
}

// Kaggle UW-Madison RLE ("start length" pairs, 1-based, row-major) to a
// mask of width*height bytes (1 = organ).
export function decodeRle(rle, width, height) {
  const mask = new Uint8Array(width * height);
  const v = rle.trim() ? rle.trim().split(/\s+/).map(Number) : [];
  for (let i = 0; i + 1 < v.length; i += 2) mask.fill(1, v[i] - 1, v[i] - 1 + v[i + 1]);
  return mask;
}

// Paint every organ of `result` on `canvas` (resized to the image: lay it
// over an <img> of the same slice with CSS), translucent.
export function paintMasks(canvas, result, colours = {
  large_bowel: [230, 159, 0], small_bowel: [86, 180, 233], stomach: [0, 158, 115],
}) {
  const { width, height } = result;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(width, height);
  for (const [organ, rle] of Object.entries(result.masks)) {
    const mask = decodeRle(rle, width, height);
    const [r, g, b] = colours[organ] ?? [255, 255, 255];
    for (let p = 0; p < mask.length; p++) {
      if (!mask[p]) continue;
      img.data.set([r, g, b, 140], 4 * p);
    }
  }
  ctx.putImageData(img, 0, 0);
}
