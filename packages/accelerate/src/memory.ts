// max_memory (spec A2): size strings ("10GiB", "10GB", "10Gb" = bits), device keys, accelerate's key
// order, the defaults read from the machine (free memory of each GPU, available host RAM), and the
// device inventory behind them (@lowbit/tensor availableDevices + the addon's deviceInfo, node:os).
import { freemem, totalmem } from "node:os";

import { ArgumentError, describe, expected } from "@lowbit/dtypes";
import { getBinding } from "@lowbit/kernels";
import { availableDevices } from "@lowbit/tensor";

import { logInfo, logWarning, type Logger } from "./log.js";

/** A device of a device map / max_memory: a GPU id (cuda:N), "cpu" or "disk". */
export type DeviceId = number | "cpu" | "disk";

/** Bytes per device in accelerate's order: sorted GPU ids, then "cpu", then "disk". */
export type MaxMemory = Map<DeviceId, number>;

/** What callers pass: { 0: "10GiB", cpu: "30GB" } (keys "N", "cuda:N", "cpu", "disk"), or a Map. */
export type MaxMemoryInput = Readonly<Record<string, number | string>> | ReadonlyMap<DeviceId | string, number | string>;

/** One CUDA device as the addon reports it. */
export interface GpuInfo {
  index: number;
  name?: string;
  /** Free bytes now (accelerate uses mem_get_info's free value, not the total). */
  freeBytes: number;
  totalBytes: number;
  /** Bytes the caching allocator holds but does not use (reserved − allocated); transformers adds them. */
  unusedReservedBytes?: number;
}

/** The machine as the planner sees it. */
export interface DeviceInventory {
  gpus: GpuInfo[];
  /** Host RAM available now (psutil.virtual_memory().available; os.freemem() reads MemAvailable on Linux). */
  cpuAvailableBytes: number;
  cpuTotalBytes?: number;
}

export interface InventoryOptions {
  /** Use this inventory instead of querying the machine (tests, remote planning). */
  inventory?: DeviceInventory | (() => DeviceInventory);
  logger?: Logger;
}

/**
 * Queries the machine: every CUDA device the addon sees (devices whose query fails are skipped, as
 * accelerate does) and the host's available / total RAM.
 * @throws {KernelsLoadError} when the native addon cannot be loaded.
 */
export function detectDeviceInventory(options: { logger?: Logger } = {}): DeviceInventory {
  const binding = getBinding();
  const gpus: GpuInfo[] = [];
  for (const device of availableDevices()) {
    const m = /^cuda:(\d+)$/.exec(device);
    if (m === null) continue;
    const index = Number(m[1]);
    try {
      const info = binding.deviceInfo(device);
      let unusedReservedBytes: number | undefined;
      try {
        const stats = binding.memoryStats(device);
        unusedReservedBytes = Math.max(0, stats.reservedBytes - stats.allocatedBytes);
      } catch {
        unusedReservedBytes = undefined;
      }
      gpus.push({ index, name: info.name, freeBytes: info.freeBytes, totalBytes: info.totalBytes, ...(unusedReservedBytes === undefined ? {} : { unusedReservedBytes }) });
    } catch (err) {
      logInfo(options.logger, `Device ${index} seems unavailable (${(err as Error).message}), proceeding to check subsequent devices.`);
    }
  }
  return { gpus, cpuAvailableBytes: freemem(), cpuTotalBytes: totalmem() };
}

export function resolveInventory(options: InventoryOptions): DeviceInventory {
  const inv = options.inventory;
  if (inv === undefined) return detectDeviceInventory({ logger: options.logger });
  const value = typeof inv === "function" ? inv() : inv;
  if (typeof value !== "object" || value === null || !Array.isArray(value.gpus) || typeof value.cpuAvailableBytes !== "number") {
    throw new ArgumentError(expected("a DeviceInventory ({ gpus, cpuAvailableBytes })", "options.inventory", value));
  }
  return value;
}

const NUMBER_RE = /^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$/;

/**
 * accelerate's convert_file_size_to_int: an integer is bytes; "5GiB" / "5MiB" / "5KiB" are powers of
 * 1024, "5GB" / "5MB" / "5KB" powers of 1000 (suffixes case-insensitive); when the string ends in a
 * lowercase "b" after GB/MB/KB ("10Gb") the value is in bits and is integer-divided by 8. The number is
 * parsed as a float, multiplied, then truncated.
 * @throws {ArgumentError} naming `name` for anything else (negative sizes, no unit, "inf", ...).
 */
export function convertFileSizeToInt(size: number | string, name = "size"): number {
  const bad = (): ArgumentError =>
    new ArgumentError(expected('a non-negative integer of bytes or a string with a unit (like "5.0GB", "10GiB")', name, size));
  if (typeof size === "number") {
    if (!Number.isSafeInteger(size) || size < 0) throw bad();
    return size;
  }
  if (typeof size !== "string") throw bad();
  const upper = size.toUpperCase();
  const units: Array<[string, number, boolean]> = [
    ["GIB", 2 ** 30, false],
    ["MIB", 2 ** 20, false],
    ["KIB", 2 ** 10, false],
    ["GB", 1e9, true],
    ["MB", 1e6, true],
    ["KB", 1e3, true],
  ];
  for (const [suffix, mult, decimal] of units) {
    if (!upper.endsWith(suffix)) continue;
    const num = size.slice(0, size.length - suffix.length);
    if (!NUMBER_RE.test(num)) throw bad();
    const value = Math.trunc(Number(num) * mult);
    if (!Number.isFinite(value)) throw bad();
    const bytes = decimal && size.endsWith("b") ? Math.floor(value / 8) : value;
    if (bytes < 0) throw bad();
    return bytes;
  }
  throw bad();
}

/** Parses one max_memory / device-map key: "N" or N (GPU N), "cuda" (GPU 0), "cuda:N", "cpu", "disk". */
export function parseDeviceKey(key: unknown, name: string): DeviceId {
  if (key === "cpu" || key === "disk") return key;
  if (typeof key === "number" && Number.isSafeInteger(key) && key >= 0) return key;
  if (typeof key === "string") {
    if (/^(0|[1-9]\d*)$/.test(key)) return Number(key);
    if (key === "cuda") return 0;
    const m = /^cuda:(0|[1-9]\d*)$/.exec(key);
    if (m !== null) return Number(m[1]);
  }
  throw new ArgumentError(expected('a GPU id (0, 1, ... or "cuda:N"), "cpu" or "disk"', name, key));
}

/** The lowbit device string of a device-map target: 0 → "cuda:0"; "cpu" and "disk" unchanged. */
export function deviceString(device: DeviceId): string {
  return typeof device === "number" ? `cuda:${device}` : device;
}

/** Sorted GPU ids, then "cpu", then "disk": accelerate's normalised key order. */
export function orderDevices<T>(entries: Iterable<[DeviceId, T]>): Map<DeviceId, T> {
  const list = [...entries];
  const gpus = list.filter(([k]) => typeof k === "number").sort(([a], [b]) => (a as number) - (b as number));
  const out = new Map<DeviceId, T>(gpus);
  for (const key of ["cpu", "disk"] as const) {
    const e = list.find(([k]) => k === key);
    if (e !== undefined) out.set(key, e[1]);
  }
  return out;
}

/**
 * accelerate's get_max_memory.
 * - No maxMemory: the free bytes of every CUDA device, then "cpu" = available host RAM.
 * - Given: size strings are parsed; a missing "cpu" becomes 80% of the available host RAM (accelerate
 *   logs the same); keys are reordered (GPUs sorted, cpu, disk); GPU ids the machine does not have
 *   only warn.
 * @throws {ArgumentError} for an unknown key, a duplicate device ("0" and "cuda:0") or a bad size.
 */
export function getMaxMemory(maxMemory?: MaxMemoryInput | null, options: InventoryOptions = {}): MaxMemory {
  if (maxMemory === undefined || maxMemory === null) {
    const inv = resolveInventory(options);
    const out: MaxMemory = new Map();
    for (const g of [...inv.gpus].sort((a, b) => a.index - b.index)) out.set(g.index, g.freeBytes);
    out.set("cpu", inv.cpuAvailableBytes);
    return out;
  }
  if (typeof maxMemory !== "object") throw new ArgumentError(expected("a Record or Map of device → size", "maxMemory", maxMemory));
  const entries: Array<[unknown, unknown]> = maxMemory instanceof Map ? [...maxMemory.entries()] : Object.entries(maxMemory);
  const parsed = new Map<DeviceId, number>();
  for (const [key, value] of entries) {
    const label = `maxMemory[${JSON.stringify(key)}]`;
    const device = parseDeviceKey(key, `a key of maxMemory (${describe(key)})`);
    if (parsed.has(device)) throw new ArgumentError(`maxMemory names device ${JSON.stringify(device)} twice (as ${JSON.stringify(key)} and another key)`);
    let bytes: number;
    if (typeof value === "string") bytes = convertFileSizeToInt(value, label);
    else if (typeof value === "number" && Number.isFinite(value) && value >= 0) bytes = value;
    else throw new ArgumentError(expected("a non-negative number of bytes or a size string", label, value));
    parsed.set(device, bytes);
  }
  let inventory: DeviceInventory | null = null;
  const inv = (): DeviceInventory | null => {
    if (inventory === null) {
      try {
        inventory = resolveInventory(options);
      } catch (err) {
        if (options.inventory !== undefined) throw err;
        return null;
      }
    }
    return inventory;
  };
  if (!parsed.has("cpu")) {
    const machine = resolveInventory(options);
    inventory = machine;
    parsed.set("cpu", machine.cpuAvailableBytes * 0.8);
    logInfo(options.logger, "We will use 80% of the memory on cpu for storing the model. You can set `maxMemory.cpu` to a higher value to use more memory (at your own risk).");
  }
  const gpuIds = [...parsed.keys()].filter((k): k is number => typeof k === "number");
  if (gpuIds.length > 0) {
    const machine = inv();
    if (machine !== null) {
      const present = new Set(machine.gpus.map((g) => g.index));
      for (const id of gpuIds) {
        if (!present.has(id)) logWarning(options.logger, `Device ${id} is not available, available devices are [${[...present].sort((a, b) => a - b).join(", ")}]`);
      }
    }
  }
  return orderDevices(parsed);
}
