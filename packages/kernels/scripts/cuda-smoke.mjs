#!/usr/bin/env node
// Checks the CUDA device plug-in of a built addon on a machine with a GPU, with nothing but Node (no
// vitest, no node_modules): allocation, zero fill, every copy direction (host→device through the pinned
// staging buffers included), fill of every dtype at aligned and odd offsets, readFile to the device,
// memory statistics, out-of-memory recovery, the layout kernels on cuda and the DeviceError of mixed devices.
// (scripts/cuda-core-check.mjs checks the allocator, cast, copyStrided and matmul in depth.)
//
//   node scripts/cuda-smoke.mjs [path/to/lowbit_kernels.node]    (default: $LOWBIT_KERNELS_PATH or build/Release)
//
// Prints one line per check and exits non-zero on the first failure.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { addonPathFrom, loadAddon, ShapeError, DisposedError, DeviceError, FileError, OutOfMemoryError, assert, throwsClass } from "./check-harness.mjs";

const addonPath = addonPathFrom(process.argv[2]);
const b = loadAddon(addonPath);


let failures = 0;
function check(name, fn) {
  try {
    const detail = fn();
    console.log(`ok   ${name}${detail ? ` (${detail})` : ""}`);
  } catch (error) {
    failures++;
    console.log(`FAIL ${name}: ${error instanceof Error ? error.stack : String(error)}`);
  }
}
async function checkAsync(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok   ${name}${detail ? ` (${detail})` : ""}`);
  } catch (error) {
    failures++;
    console.log(`FAIL ${name}: ${error instanceof Error ? error.stack : String(error)}`);
  }
}
function pattern(n, seed) {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 131 + seed) & 255;
  return a;
}
function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

console.log(`addon ${addonPath} version ${b.version}, cudaCompiled ${b.cudaCompiled}`);
const count = b.cudaDeviceCount();
check("a CUDA device is visible", () => {
  assert(b.cudaCompiled === true, "this build did not compile CUDA");
  assert(count >= 1, `cudaDeviceCount() = ${count}: ${b.cudaUnavailableReason()}`);
  assert(b.cudaUnavailableReason() === null, "cudaUnavailableReason() should be null");
  return `${count} device(s)`;
});
if (count === 0) process.exit(1);

check("deviceInfo", () => {
  const info = b.deviceInfo("cuda:0");
  assert(info.device === "cuda:0" && info.name.length > 0, JSON.stringify(info));
  assert(info.totalBytes > 0 && info.freeBytes > 0 && info.freeBytes <= info.totalBytes, JSON.stringify(info));
  assert(info.multiProcessorCount > 0 && Array.isArray(info.computeCapability) && info.computeCapability[0] >= 7, JSON.stringify(info));
  return `${info.name}, ${info.multiProcessorCount} SMs, cc ${info.computeCapability.join(".")}, ${(info.freeBytes / 2 ** 30).toFixed(1)} of ${(info.totalBytes / 2 ** 30).toFixed(1)} GiB free`;
});

check("allocate is zero-filled and counted", () => {
  const before = b.memoryStats("cuda:0");
  const n = (3 << 20) + 5;
  const s = b.allocate("cuda", n);
  assert(s.device === "cuda:0" && s.byteLength === n && !s.readOnly, "storage fields");
  const out = new Uint8Array(n).fill(7);
  b.download(s, 0, out);
  assert(out.every((x) => x === 0), "not zero-filled");
  const during = b.memoryStats("cuda:0");
  assert(during.allocatedBytes === before.allocatedBytes + n, `allocated ${during.allocatedBytes}`);
  assert(during.peakBytes >= during.allocatedBytes && during.reservedBytes >= during.allocatedBytes, JSON.stringify(during));
  s.dispose();
  s.dispose();
  assert(b.memoryStats("cuda:0").allocatedBytes === before.allocatedBytes, "not released by dispose");
  throwsClass(() => b.download(s, 0, out), DisposedError);
  const empty = b.allocate("cuda:0", 0);
  assert(empty.byteLength === 0, "zero-length storage");
  empty.dispose();
});

check("upload / download round trips (small, and large through the staging buffers)", () => {
  for (const [n, offset] of [[1000, 3], [300 << 10, 0], [(40 << 20) + 12345, 17]]) {
    const s = b.allocate("cuda:0", n + offset);
    const data = pattern(n, n & 255);
    b.upload(s, offset, data);
    const back = new Uint8Array(n);
    b.download(s, offset, back);
    assert(equalBytes(back, data), `round trip of ${n} bytes at ${offset} differs`);
    s.dispose();
  }
});

check("copyBytes in every direction", () => {
  const n = (20 << 20) + 7;
  const data = pattern(n, 9);
  const host = b.allocate("cpu", n);
  b.upload(host, 0, data);
  const g1 = b.allocate("cuda:0", n);
  const g2 = b.allocate("cuda:0", n);
  b.copyBytes(g1, 0, host, 0, n); // host → device (pinned staging)
  b.copyBytes(g2, 1, g1, 0, n - 1); // device → device
  const host2 = b.allocate("cpu", n);
  b.copyBytes(host2, 0, g2, 0, n); // device → host
  const back = new Uint8Array(n);
  b.download(host2, 0, back);
  assert(back[0] === 0 && equalBytes(back.subarray(1), data.subarray(0, n - 1)), "copy chain differs");
  b.copyBytes(g2, 0, g2, 1, n - 1); // overlapping on one device (through a temporary)
  b.copyBytes(host2, 0, g2, 0, n);
  b.download(host2, 0, back);
  assert(equalBytes(back.subarray(0, n - 1), data.subarray(0, n - 1)), "overlapping device copy differs");
  throwsClass(() => b.copyBytes(g1, 1, host, 0, n), ShapeError);
  for (const s of [host, host2, g1, g2]) s.dispose();
});

check("fill matches the CPU fill for every dtype, aligned and at odd offsets", () => {
  const cases = [[0, 1.5], [1, -2.25], [2, 3.140625], [3, 1000], [4, -0.5], [5, -7], [6, 200], [7, -300], [8, 123456789], [9, -5], [10, 1]];
  for (const [dtype, value] of cases) {
    for (const offset of [0, 1, 3]) {
      const count = 100003;
      const size = count * 8 + 16;
      const c = b.allocate("cpu", size);
      const g = b.allocate("cuda:0", size);
      b.fill(c, offset, dtype, count, value);
      b.fill(g, offset, dtype, count, value);
      const want = new Uint8Array(size);
      const got = new Uint8Array(size);
      b.download(c, 0, want);
      b.download(g, 0, got);
      assert(equalBytes(got, want), `fill dtype ${dtype} offset ${offset} differs`);
      c.dispose();
      g.dispose();
    }
  }
});

await checkAsync("readFile into device memory", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lowbit-cuda-"));
  try {
    const n = (70 << 20) + 99;
    const data = pattern(n, 77);
    const path = join(dir, "blob.bin");
    writeFileSync(path, data);
    const s = await b.readFile(path, 1234, n - 1234, "cuda:0");
    assert(s.device === "cuda:0" && s.byteLength === n - 1234, "storage fields");
    const back = new Uint8Array(n - 1234);
    b.download(s, 0, back);
    assert(equalBytes(back, data.subarray(1234)), "readFile content differs");
    s.dispose();
    let rejected = null;
    await b.readFile(path, n, 1, "cuda:0").catch((e) => (rejected = e));
    assert(rejected instanceof FileError, `expected FileError, got ${rejected}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

check("out of memory throws OutOfMemoryError and the device keeps working", () => {
  const request = 2 ** 44; // 16 TiB
  const e = throwsClass(() => b.allocate("cuda:0", request), OutOfMemoryError);
  assert(e.requestedBytes === request && e.freeBytes > 0, `requested ${e.requestedBytes}, free ${e.freeBytes}`);
  const s = b.allocate("cuda:0", 1 << 20);
  b.fill(s, 0, 0, 1 << 18, 2);
  const out = new Float32Array(4);
  b.download(s, 0, out);
  assert(out.every((x) => x === 2), "device unusable after OOM");
  s.dispose();
  return e.message;
});

check("layout kernels run on cuda; mixed devices give DeviceError", () => {
  const g = b.allocate("cuda:0", 64);
  const c = b.allocate("cpu", 64);
  b.upload(g, 32, new Float32Array([1, -2.5, 3.25, 65520]));
  b.cast(g, 0, 1, g, 32, 0, 4); // float32 → float16 (65520 rounds to inf)
  const h = new Uint16Array(4);
  b.download(g, 0, h);
  assert(h.join() === [0x3c00, 0xc100, 0x4280, 0x7c00].join(), `cast gave ${Array.from(h, (x) => x.toString(16))}`);
  b.copyStrided(g, 48, [1, 2], g, 32, [2, 1], 0, [2, 2]); // 2x2 transpose
  const t = new Float32Array(4);
  b.download(g, 48, t);
  assert(t.join() === [1, 3.25, -2.5, 65520].join(), `copyStrided gave ${t.join()}`);
  throwsClass(() => b.cast(c, 0, 1, g, 0, 0, 4), DeviceError);
  throwsClass(() => b.copyStrided(c, 0, [1], g, 0, [1], 0, [4]), DeviceError);
  throwsClass(() => b.allocate(`cuda:${count}`, 4), DeviceError);
  b.synchronize("cuda:0");
  b.resetPeakMemoryStats("cuda");
  g.dispose();
  c.dispose();
});

console.log(failures === 0 ? "cuda-smoke: all checks passed" : `cuda-smoke: ${failures} check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
