// ONNX Runtime side of bench/engine: median forward ms at the model grid,
// or a series of N slices in batches of B (forward passes only; MODEL
// exported for batch B, N a multiple of B).
// node engine_ort.js MODEL.onnx SIZE ITERS THREADS [SERIES BATCH]
const ort = require('onnxruntime-node');
(async () => {
  const [model, size, iters, threads, series, batch] = process.argv.slice(2);
  const n = Number(size), b = Number(batch || 1), total = Number(series || 0);
  const s = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads), interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all' });
  const feed = (k) => {
    const data = new Float32Array(k * n * n);
    for (let i = 0; i < data.length; i++) data[i] = Math.random();
    return { image: new ort.Tensor('float32', data, [k, 1, n, n]) };
  };
  if (total % b) throw new Error(`series ${total} is not a multiple of batch ${b}`);
  const one = feed(total ? b : 1);
  // one pass: a forward of one slice, or the whole series batch by batch
  const pass = async () => {
    if (!total) return s.run(one);
    for (let k = 0; k < total; k += b) await s.run(one);
  };
  const times = [];
  for (let i = 0; i < Number(iters) + (total ? 1 : 3); i++) {
    const t = process.hrtime.bigint();
    await pass();
    if (i >= (total ? 1 : 3)) times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, c) => a - c);
  const med = times[Math.floor(times.length / 2)];
  console.log(JSON.stringify(total ? { series: total, batch: b, median_ms: med,
                                       slices_per_s: total / (med / 1e3) }
                                   : { median_ms: med }));
})().catch((e) => { console.error(e); process.exit(1); });
