// Tests of the addon's core: loading, storage lifetime and memory accounting, file mapping / reading,
// byte movement, fill, cast (against @lowbit/dtypes' codecs) and copyStrided (against a TS reference),
// and that every bad argument throws a typed error instead of crashing.
import { mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Worker } from "node:worker_threads";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

import {
  DTYPES,
  bfloat16ToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
  float32ToFloat8E4M3FN,
  float32ToFloat8E5M2,
  float8E4M3FNToFloat32,
  float8E5M2ToFloat32,
} from "@lowbit/dtypes";
import { afterAll, describe, expect, it } from "vitest";

import {
  ArgumentError,
  BUILD_COMMAND,
  DTypeError,
  DeviceError,
  DisposedError,
  FileError,
  KernelsLoadError,
  LOCAL_BUILD_PATH,
  OutOfMemoryError,
  ShapeError,
  devices,
  getBinding,
  loadKernels,
  memoryStats,
  parseDevice,
  type NativeStorage,
} from "../src/index.js";
import { loadAddon } from "../src/loader.js";
import pkg from "../package.json" with { type: "json" };

const b = getBinding();
// The addon file in use: scripts/asan.sh points LOWBIT_KERNELS_PATH at its ASan build.
const addonPath = process.env.LOWBIT_KERNELS_PATH ? resolve(process.env.LOWBIT_KERNELS_PATH) : LOCAL_BUILD_PATH;
const id = (name: keyof typeof DTYPES): number => DTYPES[name].id;

const tmp = mkdtempSync(join(tmpdir(), "lowbit-core-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A cpu storage holding `data`'s bytes. */
function storageOf(data: ArrayBufferView): NativeStorage {
  const s = b.allocate("cpu", data.byteLength);
  b.upload(s, 0, data);
  return s;
}

function bytesOf(s: NativeStorage, offset = 0, length = s.byteLength - offset): Uint8Array {
  const out = new Uint8Array(length);
  b.download(s, offset, out);
  return out;
}

/** Casts `src` (srcDtype) to dstDtype through the addon; returns the raw output bytes. */
function nativeCast(src: ArrayBufferView, srcDtype: keyof typeof DTYPES, dstDtype: keyof typeof DTYPES, numel: number): Uint8Array {
  const s = storageOf(src);
  const d = b.allocate("cpu", numel * DTYPES[dstDtype].bytes);
  b.cast(d, 0, id(dstDtype), s, 0, id(srcDtype), numel);
  const out = bytesOf(d);
  s.dispose();
  d.dispose();
  return out;
}

/** Index of the first differing element (-1 when equal): large arrays compare fast and report where. */
function firstMismatch(a: ArrayLike<number | bigint>, e: ArrayLike<number | bigint>): number {
  if (a.length !== e.length) return Math.min(a.length, e.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== e[i]) return i;
  return -1;
}

/** Compares raw element bits; two NaNs match whatever their payload. */
function expectSameFloats(actual: ArrayLike<number>, expected: ArrayLike<number>, toF32: (bits: number) => number, label: string): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (a !== e && !(Number.isNaN(toF32(a)) && Number.isNaN(toF32(e)))) {
      throw new Error(`${label}: element ${i} is 0x${a.toString(16)} (${toF32(a)}) but expected 0x${e.toString(16)} (${toF32(e)})`);
    }
  }
}

/** Interesting float32 inputs: signed zeros, subnormals of every small format, ties, overflow, inf, NaN, plus random values over many binades. */
function floatSamples(): Float32Array {
  const v: number[] = [0, -0, 1, -1, 0.5, 1.5, 2.5, 3.5, 1 / 3, Math.PI, -Math.E, 65504, 65519, 65520, 65536, 1e5, -1e5, 448, 449, 464, 465, 480, 500, 57344, 61439, 61440, 61441];
  v.push(2 ** -6, 2 ** -7, 2 ** -9, 2 ** -10, 3 * 2 ** -10, 2 ** -14, 2 ** -16, 2 ** -17, 3 * 2 ** -17, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -126, 2 ** -149);
  v.push(Infinity, -Infinity, NaN, -NaN, 3.4e38, -3.4e38, 1.00390625, 1.01171875, 255.5, 256.5);
  // Deterministic pseudo-random values (xorshift) spread over exponents -30..30.
  let x = 0x9e3779b9;
  for (let i = 0; i < 4000; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const mant = ((x >>> 0) / 2 ** 32) * 2 - 1;
    v.push(mant * 2 ** ((i % 61) - 30));
  }
  return new Float32Array(v);
}

// ---------------------------------------------------------------------------------------------------------

describe("loading", () => {
  it("loads the local build and reports the package version", () => {
    expect(b.version).toBe(pkg.version);
    expect(typeof b.cudaCompiled).toBe("boolean");
    expect(loadKernels()).toBe(b);
    expect(loadKernels({ nativeBinding: addonPath })).toBe(b);
  });

  it("throws one KernelsLoadError naming the path and the build command", () => {
    const missing = join(tmp, "nope", "lowbit_kernels.node");
    let error: unknown;
    try {
      loadAddon({ nativeBinding: missing });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KernelsLoadError);
    const message = (error as KernelsLoadError).message;
    expect(message).toContain(missing);
    expect(message).toContain(BUILD_COMMAND);
    expect((error as KernelsLoadError).attempts).toHaveLength(1);
  });

  it("rejects an object that is not the addon, and a nativeBinding of the wrong type", () => {
    expect(() => loadAddon({ nativeBinding: {} as never })).toThrow(/is not a @lowbit\/kernels addon/);
    expect(() => loadAddon({ nativeBinding: 42 as never })).toThrow(ArgumentError);
    // A different addon after the first load is refused rather than silently ignored.
    expect(() => loadKernels({ nativeBinding: join(tmp, "other.node") })).toThrow(ArgumentError);
  });

  it("accepts an already-loaded addon object", () => {
    expect(loadAddon({ nativeBinding: b }).binding).toBe(b);
  });

  it("loads in a worker thread with that environment's own error classes", async () => {
    const code = `
      const { parentPort, workerData } = require("node:worker_threads");
      const b = require(workerData);
      class E extends Error {}
      class O extends Error { constructor(m, r, f) { super(m); this.r = r; } }
      b.initialize({ ArgumentError: E, DTypeError: E, ShapeError: E, DisposedError: E, DeviceError: E, OutOfMemoryError: O, FileError: E });
      const s = b.allocate("cpu", 16);
      s.dispose();
      let kind = "none";
      try { b.fill(s, 0, 0, 1, 1); } catch (e) { kind = e instanceof E ? "worker class" : e.constructor.name; }
      parentPort.postMessage(kind);
    `;
    const worker = new Worker(code, { eval: true, workerData: addonPath });
    const result = await new Promise((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    await worker.terminate();
    expect(result).toBe("worker class");
    // The main thread's classes are untouched by the worker's initialize().
    const s = b.allocate("cpu", 4);
    s.dispose();
    expect(() => b.fill(s, 0, 0, 1, 1)).toThrow(DisposedError);
  });
});

describe("devices", () => {
  it("lists cpu and every CUDA device, with a reason when there is none", () => {
    const count = b.cudaDeviceCount();
    expect(devices()).toEqual(["cpu", ...Array.from({ length: count }, (_, i) => `cuda:${i}`)]);
    const reason = b.cudaUnavailableReason();
    if (count === 0) {
      expect(typeof reason).toBe("string");
      expect(reason!.length).toBeGreaterThan(10);
      expect(reason!.trim().split(/(?<=\.)\s/)).toHaveLength(1);  // one sentence
      expect(() => b.allocate("cuda", 16)).toThrow(DeviceError);
      expect(() => b.allocate("cuda:0", 16)).toThrow(DeviceError);
      expect(() => b.deviceInfo("cuda:0")).toThrow(DeviceError);
      expect(() => b.synchronize("cuda")).toThrow(DeviceError);
      expect(() => b.cudaGemmBackend("cuda:0")).toThrow(DeviceError);
      expect(b.memoryStats("cpu").reservedBytes).toBe(b.memoryStats("cpu").allocatedBytes);
    } else {
      expect(reason).toBeNull();
      expect(() => b.allocate(`cuda:${count}`, 16)).toThrow(DeviceError);
      expect(["cublas", "fallback"]).toContain(b.cudaGemmBackend("cuda:0"));
    }
  });

  it("times device work with events (deviceElapsed) and holds a stream (deviceSleep)", () => {
    expect(() => b.deviceElapsed("cpu", () => {})).toThrow(ArgumentError);
    expect(() => b.deviceSleep("cpu", 10)).toThrow('Expected a CUDA device ("cuda" or "cuda:N") for device but received "cpu"');
    if (b.cudaDeviceCount() === 0) {
      expect(() => b.deviceElapsed("cuda", () => {})).toThrow(DeviceError);
      expect(() => b.deviceSleep("cuda", 10)).toThrow(DeviceError);
      return;
    }
    expect(() => b.deviceElapsed("cuda:0", 5 as never)).toThrow("Expected a function for work");
    expect(() => b.deviceSleep("cuda:0", -1)).toThrow(ArgumentError);
    expect(() => b.deviceSleep("cuda:0", 20_000_000)).toThrow(ArgumentError);
    const idle = b.deviceElapsed("cuda:0", () => {});
    expect(idle).toBeGreaterThanOrEqual(0);
    expect(idle).toBeLessThan(1);
    // a 3 ms spin queued inside the span is counted; work that throws passes its error on and leaves the device usable
    expect(b.deviceElapsed("cuda:0", () => b.deviceSleep("cuda:0", 3000))).toBeGreaterThan(2.5);
    expect(() => b.deviceElapsed("cuda:0", () => {
      throw new RangeError("from work");
    })).toThrow("from work");
    const s = b.allocate("cuda:0", 64);
    expect(b.deviceElapsed("cuda:0", () => b.fill(s, 0, id("uint8"), 64, 9))).toBeGreaterThanOrEqual(0);
    const got = new Uint8Array(64);
    b.download(s, 0, got);
    expect(got.every((v) => v === 9)).toBe(true);
    s.dispose();
  });

  it("cudaGemmBackend takes only CUDA devices", () => {
    expect(() => b.cudaGemmBackend("cpu")).toThrow(ArgumentError);
    expect(() => b.cudaGemmBackend("cpu")).toThrow('Expected a CUDA device ("cuda" or "cuda:N") for device but received "cpu"');
    expect(() => b.cudaGemmBackend("gpu")).toThrow(ArgumentError);
  });

  it("describes the cpu", () => {
    const info = b.deviceInfo("cpu");
    expect(info.device).toBe("cpu");
    expect(info.name.length).toBeGreaterThan(0);
    expect(info.totalBytes).toBeGreaterThan(0);
    expect(info.freeBytes).toBeGreaterThan(0);
    expect(info.freeBytes).toBeLessThanOrEqual(info.totalBytes);
    b.synchronize("cpu");
  });

  it("parses device strings and rejects malformed ones with ArgumentError", () => {
    expect(parseDevice("cpu")).toEqual({ type: "cpu", index: 0 });
    expect(parseDevice("cuda")).toEqual({ type: "cuda", index: 0 });
    expect(parseDevice("cuda:3")).toEqual({ type: "cuda", index: 3 });
    for (const bad of ["gpu", "CPU", "cuda:", "cuda:-1", "cuda:1.5", " cpu", "cuda:x", "", "cpu:0"]) {
      expect(() => parseDevice(bad)).toThrow(ArgumentError);
      expect(() => b.allocate(bad, 4)).toThrow(ArgumentError);
    }
    expect(() => parseDevice(7 as never)).toThrow(ArgumentError);
    expect(() => b.allocate(7 as never, 4)).toThrow(ArgumentError);
    expect(() => b.allocate("gpu", 4)).toThrow(
      'Expected a device string ("cpu", "cuda" or "cuda:N") for device but received "gpu"',
    );
  });

  it("sets and gets the number of CPU threads", () => {
    const before = b.getNumThreads();
    expect(before).toBeGreaterThanOrEqual(1);
    b.setNumThreads(1);
    expect(b.getNumThreads()).toBe(1);
    b.setNumThreads(before);
    expect(b.getNumThreads()).toBe(before);
    for (const bad of [0, -1, 1.5, NaN, "2", 5000]) expect(() => b.setNumThreads(bad as never)).toThrow(ArgumentError);
  });
});

describe("storage", () => {
  it("allocates zero-filled cpu memory of any size, including 0 and the mmap path", () => {
    for (const n of [0, 1, 63, 64, 65, 4096, (1 << 20) + 3]) {
      const s = b.allocate("cpu", n);
      expect(s.byteLength).toBe(n);
      expect(s.device).toBe("cpu");
      expect(s.readOnly).toBe(false);
      expect(s.disposed).toBe(false);
      expect(bytesOf(s).every((x) => x === 0)).toBe(true);
      s.dispose();
    }
  });

  it("round-trips bytes through upload / download at offsets, from any ArrayBufferView", () => {
    const s = b.allocate("cpu", 64);
    b.upload(s, 3, new Uint8Array([1, 2, 3, 4, 5]));
    b.upload(s, 16, new Float32Array([1.5, -2.25]));
    const ab = new ArrayBuffer(12);
    new Uint8Array(ab).set([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12]);
    b.upload(s, 40, new DataView(ab, 2, 6)); // bytes 7..2
    expect(Array.from(bytesOf(s, 0, 9))).toEqual([0, 0, 0, 1, 2, 3, 4, 5, 0]);
    const f = new Float32Array(2);
    b.download(s, 16, f);
    expect(Array.from(f)).toEqual([1.5, -2.25]);
    expect(Array.from(bytesOf(s, 40, 6))).toEqual([7, 6, 5, 4, 3, 2]);
    // A view into the middle of a larger buffer reads only its own bytes.
    const big = new Uint16Array(8);
    b.download(s, 16, big.subarray(2, 4));
    expect(Array.from(big)).toEqual([0, 0, 0, 16320, 0, 0, 0, 0]);
    s.dispose();
  });

  it("copies bytes between storages and within one storage (overlapping)", () => {
    const a = storageOf(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    const c = b.allocate("cpu", 8);
    b.copyBytes(c, 2, a, 0, 6);
    expect(Array.from(bytesOf(c))).toEqual([0, 0, 1, 2, 3, 4, 5, 6]);
    b.copyBytes(a, 2, a, 0, 6); // memmove semantics
    expect(Array.from(bytesOf(a))).toEqual([1, 2, 1, 2, 3, 4, 5, 6]);
    b.copyBytes(a, 8, a, 0, 0); // empty copy at the very end is fine
    // Large copies go through the thread pool.
    const n = 5 << 20;
    const big = b.allocate("cpu", n);
    const pattern = new Uint8Array(n);
    for (let i = 0; i < n; i++) pattern[i] = (i * 31) & 255;
    b.upload(big, 0, pattern);
    const big2 = b.allocate("cpu", n);
    b.copyBytes(big2, 0, big, 0, n);
    expect(firstMismatch(bytesOf(big2), pattern)).toBe(-1);
    for (const s of [a, c, big, big2]) s.dispose();
  });

  it("dispose() is idempotent, Symbol.dispose works, and every later use throws DisposedError", () => {
    const s = b.allocate("cpu", 32);
    const other = b.allocate("cpu", 32);
    s.dispose();
    s.dispose();
    expect(s.disposed).toBe(true);
    expect(s.byteLength).toBe(32);
    const uses: [string, () => unknown][] = [
      ["upload", () => b.upload(s, 0, new Uint8Array(4))],
      ["download", () => b.download(s, 0, new Uint8Array(4))],
      ["copyBytes dst", () => b.copyBytes(s, 0, other, 0, 4)],
      ["copyBytes src", () => b.copyBytes(other, 0, s, 0, 4)],
      ["fill", () => b.fill(s, 0, id("float32"), 1, 1)],
      ["cast", () => b.cast(other, 0, id("float16"), s, 0, id("float32"), 1)],
      ["copyStrided", () => b.copyStrided(other, 0, [1], s, 0, [1], id("uint8"), [4])],
    ];
    for (const [name, use] of uses) {
      expect(use, name).toThrow(DisposedError);
    }
    expect(() => b.download(s, 0, new Uint8Array(4))).toThrow(
      "Expected a live Storage for src but received a disposed Storage(32 bytes, cpu)",
    );
    const t = b.allocate("cpu", 8);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    other.dispose();
  });

  it("cannot be constructed from JS", () => {
    const Storage = (b as unknown as { Storage: new (...args: unknown[]) => unknown }).Storage;
    expect(() => new Storage()).toThrow(ArgumentError);
    expect(() => new Storage({}, 4)).toThrow(ArgumentError);
    // Its methods and accessors called on foreign objects throw instead of reading random memory.
    const proto = (Storage as unknown as { prototype: object }).prototype;
    const fake = Object.create(proto) as NativeStorage;
    expect(() => fake.byteLength).toThrow();
    expect(() => fake.dispose()).toThrow();
    expect(() => Object.getOwnPropertyDescriptor(proto, "device")!.get!.call({})).toThrow();
    expect(() => b.download(fake, 0, new Uint8Array(1))).toThrow(ArgumentError);
  });

  it("throws OutOfMemoryError with the requested and free bytes, and keeps working", () => {
    let error: unknown;
    try {
      b.allocate("cpu", 2 ** 52);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect((error as OutOfMemoryError).requestedBytes).toBe(2 ** 52);
    expect((error as OutOfMemoryError).freeBytes).toBeGreaterThan(0);
    expect((error as OutOfMemoryError).code).toBe("ERR_OUT_OF_MEMORY");
    const s = b.allocate("cpu", 16);
    expect(s.byteLength).toBe(16);
    s.dispose();
  });
});

describe("memoryStats", () => {
  it("tracks live and peak bytes; mappings count as neither", () => {
    const base = memoryStats("cpu");
    b.resetPeakMemoryStats("cpu");
    expect(memoryStats("cpu").peakBytes).toBe(base.allocatedBytes);
    const a = b.allocate("cpu", 1000);
    const c = b.allocate("cpu", 3 << 20);
    let m = b.memoryStats("cpu");
    expect(m.allocatedBytes).toBe(base.allocatedBytes + 1000 + (3 << 20));
    expect(m.reservedBytes).toBeGreaterThanOrEqual(m.allocatedBytes);
    c.dispose();
    m = b.memoryStats("cpu");
    expect(m.allocatedBytes).toBe(base.allocatedBytes + 1000);
    expect(m.peakBytes).toBe(base.allocatedBytes + 1000 + (3 << 20));
    b.resetPeakMemoryStats("cpu");
    expect(b.memoryStats("cpu").peakBytes).toBe(base.allocatedBytes + 1000);
    const path = join(tmp, "stats.bin");
    writeFileSync(path, new Uint8Array(4096));
    const mapped = b.mapFile(path);
    expect(b.memoryStats("cpu").allocatedBytes).toBe(base.allocatedBytes + 1000);
    mapped.dispose();
    a.dispose();
    expect(memoryStats("cpu").allocatedBytes).toBe(base.allocatedBytes);
    expect(() => memoryStats("tpu")).toThrow(ArgumentError);
  });

  it("frees storages that were never disposed once they are garbage collected", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const base = b.memoryStats("cpu").allocatedBytes;
    (() => {
      for (let i = 0; i < 8; i++) b.allocate("cpu", 1 << 16);
    })();
    expect(b.memoryStats("cpu").allocatedBytes).toBe(base + 8 * (1 << 16));
    for (let i = 0; i < 50 && b.memoryStats("cpu").allocatedBytes !== base; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10)); // finalizers run after the GC, on the event loop
    }
    expect(b.memoryStats("cpu").allocatedBytes).toBe(base);
  });
});

describe("mapFile and readFile", () => {
  const path = join(tmp, "data.bin");
  const content = new Uint8Array(10000).map((_, i) => (i * 7 + 3) & 255);
  writeFileSync(path, content);

  it("maps a file read-only and zero-copy", () => {
    const m = b.mapFile(path);
    expect(m.byteLength).toBe(content.length);
    expect(m.readOnly).toBe(true);
    expect(m.device).toBe("cpu");
    expect(bytesOf(m)).toEqual(content);
    // Zero-copy: a later write to the file shows through the (never written) mapping.
    const fd = openSync(path, "r+");
    writeSync(fd, new Uint8Array([0xab, 0xcd]), 0, 2, 100);
    closeSync(fd);
    expect(Array.from(bytesOf(m, 100, 2))).toEqual([0xab, 0xcd]);
    writeFileSync(path, content);
    m.dispose();
  });

  it("refuses every kernel write into a mapping", () => {
    const m = b.mapFile(path);
    const s = b.allocate("cpu", 64);
    const writes: [string, () => unknown][] = [
      ["upload", () => b.upload(m, 0, new Uint8Array(4))],
      ["copyBytes", () => b.copyBytes(m, 0, s, 0, 4)],
      ["fill", () => b.fill(m, 0, id("uint8"), 4, 1)],
      ["cast", () => b.cast(m, 0, id("float16"), s, 0, id("float32"), 4)],
      ["copyStrided", () => b.copyStrided(m, 0, [1], s, 0, [1], id("uint8"), [4])],
    ];
    for (const [name, write] of writes) expect(write, name).toThrow(ArgumentError);
    expect(() => b.upload(m, 0, new Uint8Array(4))).toThrow("Expected a writable storage for dst but received a read-only file mapping");
    // Reading from a mapping is fine.
    b.copyBytes(s, 0, m, 8, 16);
    expect(bytesOf(s, 0, 16)).toEqual(content.subarray(8, 24));
    m.dispose();
    s.dispose();
  });

  it("maps an empty file and reports missing files and directories as FileError", () => {
    const empty = join(tmp, "empty.bin");
    writeFileSync(empty, new Uint8Array(0));
    const m = b.mapFile(empty);
    expect(m.byteLength).toBe(0);
    m.dispose();
    expect(() => b.mapFile(join(tmp, "missing.bin"))).toThrow(FileError);
    expect(() => b.mapFile(tmp)).toThrow(FileError);
    expect(() => b.mapFile(5 as never)).toThrow(ArgumentError);
  });

  it("reads a byte range into new storage asynchronously", async () => {
    const pending = b.readFile(path, 1000, 5000, "cpu");
    expect(pending).toBeInstanceOf(Promise);
    const s = await pending;
    expect(s.byteLength).toBe(5000);
    expect(s.readOnly).toBe(false);
    expect(bytesOf(s)).toEqual(content.subarray(1000, 6000));
    s.dispose();
    const whole = await b.readFile(path, 0, content.length, "cpu");
    expect(bytesOf(whole)).toEqual(content);
    whole.dispose();
    const none = await b.readFile(path, content.length, 0, "cpu");
    expect(none.byteLength).toBe(0);
    none.dispose();
  });

  it("rejects bad ranges and missing files with FileError, bad arguments synchronously", async () => {
    await expect(b.readFile(path, 9000, 2000, "cpu")).rejects.toBeInstanceOf(FileError);
    await expect(b.readFile(path, 20000, 0, "cpu")).rejects.toThrow(/Expected a byte range inside/);
    await expect(b.readFile(join(tmp, "missing.bin"), 0, 1, "cpu")).rejects.toBeInstanceOf(FileError);
    expect(() => b.readFile(path, -1, 4, "cpu")).toThrow(ArgumentError);
    expect(() => b.readFile(path, 0, 4, "gpu")).toThrow(ArgumentError);
    expect(() => b.readFile(path, 0, 1.5, "cpu")).toThrow(ArgumentError);
  });
});

describe("argument checking", () => {
  it("throws typed errors for wrong types, negative offsets and out-of-range byte ranges", () => {
    const s = b.allocate("cpu", 16);
    const cases: [string, () => unknown, new (...args: never[]) => Error][] = [
      ["allocate negative", () => b.allocate("cpu", -1), ArgumentError],
      ["allocate fraction", () => b.allocate("cpu", 1.5), ArgumentError],
      ["allocate NaN", () => b.allocate("cpu", NaN), ArgumentError],
      ["allocate string", () => b.allocate("cpu", "8" as never), ArgumentError],
      ["allocate unsafe", () => b.allocate("cpu", 2 ** 60), ArgumentError],
      ["upload not a storage", () => b.upload({} as never, 0, new Uint8Array(1)), ArgumentError],
      ["upload null", () => b.upload(null as never, 0, new Uint8Array(1)), ArgumentError],
      ["upload array", () => b.upload(s, 0, [1, 2] as never), ArgumentError],
      ["upload negative offset", () => b.upload(s, -1, new Uint8Array(1)), ArgumentError],
      ["upload offset past end", () => b.upload(s, 17, new Uint8Array(0)), ArgumentError],
      ["upload too long", () => b.upload(s, 8, new Uint8Array(9)), ShapeError],
      ["download too long", () => b.download(s, 0, new Uint8Array(17)), ShapeError],
      ["download missing arg", () => (b.download as (...a: unknown[]) => void)(s, 0), ArgumentError],
      ["copyBytes too long", () => b.copyBytes(s, 0, s, 4, 13), ShapeError],
      ["copyBytes negative", () => b.copyBytes(s, 0, s, 0, -1), ArgumentError],
      ["fill unknown dtype", () => b.fill(s, 0, 99, 1, 0), DTypeError],
      ["fill packed dtype", () => b.fill(s, 0, id("nf4"), 1, 0), DTypeError],
      ["fill too many", () => b.fill(s, 0, id("float32"), 5, 0), ShapeError],
      ["fill int8 300", () => b.fill(s, 0, id("int8"), 1, 300), ArgumentError],
      ["fill int32 1.5", () => b.fill(s, 0, id("int32"), 1, 1.5), ArgumentError],
      ["fill bool 2", () => b.fill(s, 0, id("bool"), 1, 2), ArgumentError],
      ["fill value string", () => b.fill(s, 0, id("float32"), 1, "1" as never), ArgumentError],
      ["cast packed", () => b.cast(s, 0, id("fp4"), s, 0, id("float32"), 1), DTypeError],
      ["cast dtype string", () => b.cast(s, 0, "float16" as never, s, 0, id("float32"), 1), DTypeError],
      ["cast too long", () => b.cast(s, 0, id("float16"), s, 0, id("float32"), 5), ShapeError],
      ["cast overlapping", () => b.cast(s, 2, id("float16"), s, 0, id("float32"), 2), ArgumentError],
      ["cast numel overflow", () => b.cast(s, 0, id("float16"), s, 0, id("float32"), 2 ** 52), ArgumentError],
      ["copyStrided rank mismatch", () => b.copyStrided(s, 0, [1], s, 0, [1, 1], id("uint8"), [2]), ShapeError],
      ["copyStrided negative stride", () => b.copyStrided(s, 0, [1], s, 0, [-1], id("uint8"), [2]), ArgumentError],
      ["copyStrided shape not array", () => b.copyStrided(s, 0, [1], s, 0, [1], id("uint8"), 2 as never), ArgumentError],
      ["copyStrided stride string", () => b.copyStrided(s, 0, ["1"] as never, s, 0, [1], id("uint8"), [2]), ArgumentError],
      ["copyStrided src out of range", () => b.copyStrided(s, 0, [1], s, 8, [2], id("uint8"), [5]), ShapeError],
      ["copyStrided dst out of range", () => b.copyStrided(s, 8, [4], s, 0, [1], id("float32"), [2]), ShapeError],
      ["copyStrided dst broadcast", () => b.copyStrided(s, 0, [0], s, 8, [1], id("uint8"), [2]), ArgumentError],
      ["copyStrided huge stride", () => b.copyStrided(s, 0, [1, 1], s, 0, [2 ** 52, 1], id("uint8"), [3, 1]), ArgumentError],
      ["resetPeak bad device", () => b.resetPeakMemoryStats("gpu"), ArgumentError],
      ["deviceInfo bad device", () => b.deviceInfo(""), ArgumentError],
    ];
    for (const [name, call, cls] of cases) {
      let error: unknown;
      try {
        call();
      } catch (e) {
        error = e;
      }
      expect(error, name).toBeInstanceOf(cls);
    }
    // Messages name the argument, what was expected and what was received.
    expect(() => b.upload(s, -1, new Uint8Array(1))).toThrow("Expected an integer in [0, 16] for dstOffset but received -1 (number)");
    expect(() => b.upload(s, 8, new Uint8Array(9))).toThrow(
      "Expected 9 bytes after the byte offset for dst but received a storage with 8 bytes there",
    );
    expect(() => b.fill(s, 0, 99, 1, 0)).toThrow("Expected a dtype id (integer in [0, 12]) for dtype but received 99 (number)");
    expect(() => b.upload({} as never, 0, new Uint8Array(1))).toThrow("Expected a Storage for dst but received Object (object)");
    s.dispose();
  });

  it("throws DeviceError when storages of the same call live on different devices (cuda only)", () => {
    if (b.cudaDeviceCount() === 0) {
      expect(b.cudaDeviceCount()).toBe(0); // nothing to mix without a GPU; cuda storages cannot exist
      return;
    }
    const c = b.allocate("cpu", 16);
    const g = b.allocate("cuda:0", 16);
    expect(() => b.cast(g, 0, id("float16"), c, 0, id("float32"), 2)).toThrow(DeviceError);
    expect(() => b.copyStrided(c, 0, [1], g, 0, [1], id("float32"), [4])).toThrow(DeviceError);
    // Both on the GPU: runs there (scripts/cuda-core-check.mjs compares every pair with the CPU).
    b.cast(g, 0, id("float16"), g, 8, id("float32"), 2);
    c.dispose();
    g.dispose();
  });
});

describe("fill", () => {
  it("fills every dtype with the converted value", () => {
    const cases: [keyof typeof DTYPES, number, number[]][] = [
      ["float32", 1.5, Array.from(new Uint8Array(new Float32Array([1.5]).buffer))],
      ["float16", 1.5, [0x00, 0x3e]],
      ["bfloat16", 1.5, [0xc0, 0x3f]],
      ["float8_e4m3fn", 1000, [0x7e]],
      ["float8_e5m2", -2, [0xc0]],
      ["int8", -2, [0xfe]],
      ["uint8", 200, [200]],
      ["int16", -2, [0xfe, 0xff]],
      ["int32", 0x01020304, [4, 3, 2, 1]],
      ["int64", -1, [255, 255, 255, 255, 255, 255, 255, 255]],
      ["bool", 1, [1]],
    ];
    for (const [dtype, value, pattern] of cases) {
      const count = 5;
      const s = b.allocate("cpu", count * pattern.length + 3);
      b.fill(s, 1, id(dtype), count, value);
      const expected = [0, ...Array.from({ length: count }, () => pattern).flat(), 0, 0];
      expect(Array.from(bytesOf(s)), dtype).toEqual(expected);
      s.dispose();
    }
    // Large fills use the thread pool; a non-uniform pattern at an odd offset.
    const n = 1 << 20;
    const s = b.allocate("cpu", 4 * n + 1);
    b.fill(s, 1, id("float32"), n, -0.1);
    const got = new Float32Array(n);
    b.download(s, 1, got);
    expect(got.every((x) => x === Math.fround(-0.1))).toBe(true);
    s.dispose();
  });
});

describe("cast", () => {
  const x = floatSamples();
  const n = x.length;

  it("float32 → float16 / bfloat16 / float8 matches @lowbit/dtypes bit for bit, and back", () => {
    const f16 = new Uint16Array(nativeCast(x, "float32", "float16", n).buffer);
    expectSameFloats(f16, float32ToFloat16(x), (h) => float16ToFloat32(new Uint16Array([h]))[0]!, "f32→f16");
    const bf16 = new Uint16Array(nativeCast(x, "float32", "bfloat16", n).buffer);
    expectSameFloats(bf16, float32ToBfloat16(x), (h) => bfloat16ToFloat32(new Uint16Array([h]))[0]!, "f32→bf16");
    const e4 = nativeCast(x, "float32", "float8_e4m3fn", n);
    expectSameFloats(e4, float32ToFloat8E4M3FN(x), (v) => float8E4M3FNToFloat32(new Uint8Array([v]))[0]!, "f32→e4m3fn");
    const e5 = nativeCast(x, "float32", "float8_e5m2", n);
    expectSameFloats(e5, float32ToFloat8E5M2(x), (v) => float8E5M2ToFloat32(new Uint8Array([v]))[0]!, "f32→e5m2");

    // Decoding: every bit pattern of the small formats.
    const all16 = new Uint16Array(65536).map((_, i) => i);
    const all8 = new Uint8Array(256).map((_, i) => i);
    const f32bits = (f: Float32Array) => new Uint32Array(f.buffer);
    const asF32 = (u: number) => new Float32Array(new Uint32Array([u]).buffer)[0]!;
    expectSameFloats(new Uint32Array(nativeCast(all16, "float16", "float32", 65536).buffer), f32bits(float16ToFloat32(all16)), asF32, "f16→f32");
    expectSameFloats(new Uint32Array(nativeCast(all16, "bfloat16", "float32", 65536).buffer), f32bits(bfloat16ToFloat32(all16)), asF32, "bf16→f32");
    expectSameFloats(new Uint32Array(nativeCast(all8, "float8_e4m3fn", "float32", 256).buffer), f32bits(float8E4M3FNToFloat32(all8)), asF32, "e4m3fn→f32");
    expectSameFloats(new Uint32Array(nativeCast(all8, "float8_e5m2", "float32", 256).buffer), f32bits(float8E5M2ToFloat32(all8)), asF32, "e5m2→f32");
  });

  it("float16 ↔ bfloat16 ↔ float8 go through float32 with one rounding", () => {
    const all16 = new Uint16Array(65536).map((_, i) => i);
    const asF32 = float16ToFloat32(all16);
    const toBf16 = new Uint16Array(nativeCast(all16, "float16", "bfloat16", 65536).buffer);
    expectSameFloats(toBf16, float32ToBfloat16(asF32), (h) => bfloat16ToFloat32(new Uint16Array([h]))[0]!, "f16→bf16");
    const toE5 = nativeCast(all16, "float16", "float8_e5m2", 65536);
    expectSameFloats(toE5, float32ToFloat8E5M2(asF32), (v) => float8E5M2ToFloat32(new Uint8Array([v]))[0]!, "f16→e5m2");
  });

  it("converts between floats and integers (truncate, saturate, NaN → 0; ints wrap like torch)", () => {
    const f = new Float32Array([2.7, -2.7, 300, -300, NaN, Infinity, -Infinity, 0.5, -0, 127.9]);
    expect(Array.from(new Int8Array(nativeCast(f, "float32", "int8", f.length).buffer))).toEqual([2, -2, 127, -128, 0, 127, -128, 0, 0, 127]);
    expect(Array.from(nativeCast(f, "float32", "uint8", f.length))).toEqual([2, 0, 255, 0, 0, 255, 0, 0, 0, 127]);
    expect(Array.from(nativeCast(f, "float32", "bool", f.length))).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 0, 1]);
    expect(Array.from(new Int32Array(nativeCast(f, "float32", "int32", f.length).buffer))).toEqual([2, -2, 300, -300, 0, 2147483647, -2147483648, 0, 0, 127]);
    expect(Array.from(new BigInt64Array(nativeCast(new Float32Array([3e18, -1e30, 7.9]), "float32", "int64", 3).buffer))).toEqual([
      BigInt(Math.fround(3e18)),
      -(2n ** 63n),
      7n,
    ]);
    // Integer → integer wraps (two's complement), bool is 0 / 1.
    const ints = new Int32Array([300, -1, 128, 65536 + 5, 0]);
    expect(Array.from(new Int8Array(nativeCast(ints, "int32", "int8", 5).buffer))).toEqual([44, -1, -128, 5, 0]);
    expect(Array.from(nativeCast(ints, "int32", "uint8", 5))).toEqual([44, 255, 128, 5, 0]);
    expect(Array.from(nativeCast(ints, "int32", "bool", 5))).toEqual([1, 1, 1, 1, 0]);
    expect(Array.from(new BigInt64Array(nativeCast(ints, "int32", "int64", 5).buffer))).toEqual([300n, -1n, 128n, 65541n, 0n]);
    expect(Array.from(new Int16Array(nativeCast(new Uint8Array([0, 1, 2, 255]), "bool", "int16", 4).buffer))).toEqual([0, 1, 1, 1]);
    // Integer → float is exact where representable and rounds to nearest even otherwise.
    const big = new Int32Array([16777217, 16777219, -5, 65519, 65520]);
    expect(Array.from(new Float32Array(nativeCast(big, "int32", "float32", 5).buffer))).toEqual([16777216, 16777220, -5, 65519, 65520]);
    expect(Array.from(float16ToFloat32(new Uint16Array(nativeCast(big, "int32", "float16", 5).buffer)))).toEqual([
      Infinity,
      Infinity,
      -5,
      65504,
      Infinity,
    ]);
  });

  it("rounds integers to small floats once (no double rounding through float32)", () => {
    // 2^60 + 2^52 + 1 lies just above the bfloat16 midpoint 2^60 + 2^52: the correct result is
    // 2^60 + 2^53. Rounding to float64 or float32 first lands exactly on the midpoint and then rounds
    // down to 2^60 (torch 2.13 gives 2^60 for this input).
    const v = 2n ** 60n + 2n ** 52n + 1n;
    const got = new Uint16Array(nativeCast(new BigInt64Array([v, -v]), "int64", "bfloat16", 2).buffer);
    const want = float32ToBfloat16(new Float32Array([2 ** 60 + 2 ** 53, -(2 ** 60 + 2 ** 53)]));
    expect(Array.from(got)).toEqual(Array.from(want));
    // int32 -> bfloat16 just above a midpoint that float32 rounding would hit: 2^25 + 2^17 + 1.
    const w = 2 ** 25 + 2 ** 17 + 1;
    const got32 = new Uint16Array(nativeCast(new Int32Array([w]), "int32", "bfloat16", 1).buffer);
    expect(got32[0]).toBe(float32ToBfloat16(new Float32Array([2 ** 25 + 2 ** 18]))[0]);
    // int64 -> float32 directly is one RNE rounding.
    const f = new Float32Array(nativeCast(new BigInt64Array([2n ** 40n + 1n, 9223372036854775807n]), "int64", "float32", 2).buffer);
    expect(Array.from(f)).toEqual([2 ** 40, 2 ** 63]);
  });

  it("same-dtype casts copy bytes, in place works, large casts use the thread pool", () => {
    const s = storageOf(new Float32Array([1, 2, 3, 4]));
    b.cast(s, 0, id("int32"), s, 0, id("float32"), 4); // identical ranges of equal element size
    expect(Array.from(new Int32Array(bytesOf(s).buffer))).toEqual([1, 2, 3, 4]);
    b.cast(s, 0, id("int32"), s, 0, id("int32"), 0);
    s.dispose();
    const m = 3 << 18;
    const big = new Float32Array(m).map((_, i) => Math.sin(i) * 1000);
    const bf = new Uint16Array(nativeCast(big, "float32", "bfloat16", m).buffer);
    expect(firstMismatch(bf, float32ToBfloat16(big))).toBe(-1);
  });
});

describe("copyStrided", () => {
  /** TS reference: dst[idx] = src[idx] for every idx of shape (element strides). */
  function reference(dst: Uint8Array, dstOff: number, dstSt: number[], src: Uint8Array, srcOff: number, srcSt: number[], esize: number, shape: number[]): void {
    const numel = shape.reduce((a, c) => a * c, 1);
    const idx = new Array<number>(shape.length).fill(0);
    for (let e = 0; e < numel; e++) {
      let d = 0;
      let s = 0;
      for (let k = 0; k < shape.length; k++) {
        d += idx[k]! * dstSt[k]!;
        s += idx[k]! * srcSt[k]!;
      }
      dst.set(src.subarray(srcOff + s * esize, srcOff + (s + 1) * esize), dstOff + d * esize);
      for (let k = shape.length - 1; k >= 0; k--) {
        idx[k]!++;
        if (idx[k]! < shape[k]!) break;
        idx[k] = 0;
      }
    }
  }

  function check(esize: 1 | 2 | 4 | 8, srcBytes: number, srcOff: number, srcSt: number[], dstBytes: number, dstOff: number, dstSt: number[], shape: number[]): void {
    const dtype = { 1: "uint8", 2: "int16", 4: "float32", 8: "int64" }[esize] as keyof typeof DTYPES;
    const srcData = new Uint8Array(srcBytes).map((_, i) => (i * 13 + 7) & 255);
    const src = storageOf(srcData);
    const dst = b.allocate("cpu", dstBytes);
    const expected = new Uint8Array(dstBytes);
    b.copyStrided(dst, dstOff * esize, dstSt, src, srcOff * esize, srcSt, id(dtype), shape);
    reference(expected, dstOff * esize, dstSt, srcData, srcOff * esize, srcSt, esize, shape);
    expect(firstMismatch(bytesOf(dst), expected), `${dtype} ${JSON.stringify({ shape, srcSt, dstSt })}`).toBe(-1);
    src.dispose();
    dst.dispose();
  }

  it("transposes (2-D and a 3-D permute) for every element size", () => {
    for (const e of [1, 2, 4, 8] as const) {
      // src (3, 5) row-major read transposed into dst (5, 3).
      check(e, 15 * e, 0, [1, 5], 15 * e, 0, [3, 1], [5, 3]);
      // src (2, 3, 4) → dst permuted (4, 2, 3)
      check(e, 24 * e, 0, [1, 12, 4], 24 * e, 0, [6, 3, 1], [4, 2, 3]);
    }
  });

  it("broadcasts with stride 0 and narrows with offsets", () => {
    check(4, 3 * 4, 0, [0, 1], 12 * 4, 0, [3, 1], [4, 3]); // row (3,) broadcast to (4, 3)
    check(2, 4 * 2, 0, [1, 0], 12 * 2, 0, [3, 1], [4, 3]); // column (4, 1) broadcast
    check(4, 1 * 4, 0, [0, 0, 0], 24 * 4, 0, [12, 4, 1], [2, 3, 4]); // scalar
    check(8, 40 * 8, 12, [8, 1], 12 * 8, 0, [4, 1], [3, 4]); // narrow (5, 8)[1:4, 4:8]
    check(1, 60, 5, [10, 2], 64, 3, [7, 1], [5, 4]); // strided src into a padded dst
    check(4, 4 * 4, 0, [], 4 * 4, 2, [], []); // 0-d: one element
    check(4, 16, 0, [1, 4], 16, 0, [1, 4], [0, 4]); // empty: nothing happens
  });

  it("copies within one storage when the extents overlap (through a temporary)", () => {
    const data = new Uint8Array(16).map((_, i) => i);
    const s = storageOf(data);
    // Shift right by 1: dst [1..9) from src [0..8).
    b.copyStrided(s, 1, [1], s, 0, [1], id("uint8"), [8]);
    expect(Array.from(bytesOf(s, 0, 10))).toEqual([0, 0, 1, 2, 3, 4, 5, 6, 7, 9]);
    // In-place transpose of a 4x4 block is well defined too.
    const m = storageOf(new Uint8Array(16).map((_, i) => i));
    b.copyStrided(m, 0, [4, 1], m, 0, [1, 4], id("uint8"), [4, 4]);
    expect(Array.from(bytesOf(m))).toEqual([0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]);
    s.dispose();
    m.dispose();
  });

  it("splits large copies over the thread pool", () => {
    check(4, 512 * 1024 * 4, 0, [1, 512], 512 * 1024 * 4, 0, [1024, 1], [512, 1024]);
  });
});
