// Shared start of the cuda-*.mjs check scripts: loads a built addon with nothing but Node (no vitest, no
// node_modules), hands it stand-ins for @lowbit/kernels' error classes, and provides assert / throwsClass.
// (Named outside the cuda-*.mjs pattern so run-gpu-tests.sh does not run it as a check.)
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// Stand-ins for the classes of @lowbit/kernels' errors.ts: only the class identity matters here.
export class ArgumentError extends Error {}
export class DTypeError extends Error {}
export class ShapeError extends Error {}
export class DisposedError extends Error {}
export class DeviceError extends Error {}
export class FileError extends Error {}
export class OutOfMemoryError extends Error {
  constructor(message, requestedBytes, freeBytes) {
    super(message);
    this.requestedBytes = requestedBytes;
    this.freeBytes = freeBytes;
  }
}

/** The package folder (packages/kernels). */
export const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The addon to check: `path` (a command-line argument), else $LOWBIT_KERNELS_PATH, else the package's build. */
export function addonPathFrom(path) {
  return resolve(path ?? process.env.LOWBIT_KERNELS_PATH ?? join(packageDir, "build", "Release", "lowbit_kernels.node"));
}

/** Loads the addon at `addonPath` and initializes it with the stand-in error classes. */
export function loadAddon(addonPath) {
  const b = createRequire(import.meta.url)(addonPath);
  b.initialize({ ArgumentError, DTypeError, ShapeError, DisposedError, DeviceError, OutOfMemoryError, FileError });
  return b;
}

export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** Runs fn, expects it to throw an instance of cls (with a message matching pattern), returns the error. */
export function throwsClass(fn, cls, pattern) {
  try {
    fn();
  } catch (error) {
    assert(error instanceof cls, `expected ${cls.name} but got ${error?.constructor?.name}: ${error?.message}`);
    if (pattern) assert(pattern.test(error.message), `message "${error.message}" does not match ${pattern}`);
    return error;
  }
  throw new Error(`expected ${cls.name} but nothing was thrown`);
}

/** Seconds per call of fn by the host clock: calls queued back to back, `device` synchronized before and after. */
export function hostTimeIt(b, device, fn, iters) {
  fn();
  b.synchronize(device);
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) fn();
  b.synchronize(device);
  return (performance.now() - t0) / 1e3 / iters;
}

/**
 * Seconds of device time per call of fn on a CUDA device: the calls are queued behind a deviceSleep long enough for
 * the host to queue all of them and timed with events (deviceElapsed), so the host's per-call cost does not count.
 */
export function deviceTimeIt(b, device, fn, iters) {
  const wall = hostTimeIt(b, device, fn, Math.min(iters, 50));
  b.deviceSleep(device, Math.min(10_000_000, Math.ceil(wall * 1e6 * iters * 1.5) + 2000));
  const ms = b.deviceElapsed(device, () => {
    for (let i = 0; i < iters; i++) fn();
  });
  return ms / 1e3 / iters;
}
