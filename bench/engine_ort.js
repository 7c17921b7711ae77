// ONNX Runtime side of bench/engine: median forward ms at the model grid.
// node engine_ort.js MODEL.onnx SIZE ITERS THREADS
const ort = require('onnxruntime-node');
(async () => {
  const [model, size, iters, threads] = process.argv.slice(2);
  const n = Number(size);
  const s = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads), interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all' });
  const data = new Float32Array(n * n);
  for (let i = 0; i < data.length; i++) data[i] = Math.random();
  const feeds = { image: new ort.Tensor('float32', data, [1, 1, n, n]) };
  const times = [];
  for (let i = 0; i < Number(iters) + 3; i++) {
    const t = process.hrtime.bigint();
    await s.run(feeds);
    if (i >= 3) times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ median_ms: times[Math.floor(times.length / 2)] }));
})().catch((e) => { console.error(e); process.exit(1); });
