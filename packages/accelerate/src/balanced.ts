// get_balanced_memory and the four device_map strings (spec A6): "auto" and "balanced" (identical),
// "balanced_low_0" (keep the first GPU as empty as possible, for generate) and "sequential" (fill
// GPU 0, then GPU 1, ...). resolveDeviceMap is the one call a model loader makes for `deviceMap`.
import { ArgumentError, expected } from "@lowbit/dtypes";

import {
  checkDeviceMap,
  inferAutoDeviceMap,
  normalizeDeviceMap,
  type DeviceMap,
  type DeviceMapInput,
  type InferAutoDeviceMapOptions,
} from "./device-map.js";
import { logInfo } from "./log.js";
import { getMaxMemory, parseDeviceKey, resolveInventory, type DeviceId, type InventoryOptions, type MaxMemory, type MaxMemoryInput } from "./memory.js";
import { buildModelTree, type ModelInput } from "./model.js";
import { checkNoSplit, moduleLeaves, sizeContext, treeSizes, type SizeOptions } from "./sizes.js";

/**
 * How get_balanced_memory sizes the per-GPU slack it adds to total / n:
 * - "accelerate" (default; spec A8's numbers): the first module of each no-split class, and the mean of
 *   the final modules; buffer = int(1.25 × max of the two).
 * - "transformers" (transformers 5): every instance of the no-split classes, and the biggest module
 *   that directly owns tensors — large-vocabulary embeddings then fit on the first GPU.
 */
export type BalancedBuffer = "accelerate" | "transformers";

export interface BalancedMemoryOptions extends SizeOptions, InventoryOptions {
  maxMemory?: MaxMemoryInput | MaxMemory | null;
  noSplitModuleClasses?: string | readonly string[];
  /** Minimise what goes on the first GPU (device_map "balanced_low_0"). */
  lowZero?: boolean;
  buffer?: BalancedBuffer;
  tiedParameters?: ReadonlyArray<ReadonlyArray<string>>;
}

/**
 * accelerate's get_balanced_memory: a max_memory that spreads the model over the GPUs. With n GPUs that
 * have budget, every GPU but the last gets min(total // n + buffer, its budget) (total // (n − 1) with
 * lowZero); the last keeps its full budget as slack. One GPU and no user maxMemory: 90% of it (PR #1798).
 * With lowZero the first GPU gets min(max(0, total − Σ other GPUs), its budget); lowbit sums the actual
 * other GPU ids (upstream sums ids 1..n−1, which fails for non-contiguous ids: accelerate #4297).
 */
export function getBalancedMemory(model: ModelInput, options: BalancedMemoryOptions = {}): MaxMemory {
  if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", "getBalancedMemory's options", options));
  const userNotSet = options.maxMemory === undefined || options.maxMemory === null;
  const maxMemory = getMaxMemory(options.maxMemory, options);
  const gpuIds = [...maxMemory].filter(([k, v]) => typeof k === "number" && v > 0).map(([k]) => k as number);
  const n = gpuIds.length;
  if (n === 0) return maxMemory;
  let lowZero = options.lowZero ?? false;
  if (typeof lowZero !== "boolean") throw new ArgumentError(expected("a boolean", "options.lowZero", lowZero));
  if (n === 1) {
    lowZero = false;
    if (userNotSet) {
      const first = [...maxMemory.keys()].find((k) => typeof k === "number");
      if (first !== undefined) {
        maxMemory.set(first, maxMemory.get(first)! * 0.9);
        logInfo(options.logger, `We will use 90% of the memory on device ${first} for storing the model, and 10% for the buffer to avoid OOM.`);
      }
    }
  }
  const buffer = options.buffer ?? "accelerate";
  if (buffer !== "accelerate" && buffer !== "transformers") throw new ArgumentError(expected('"accelerate" or "transformers"', "options.buffer", buffer));
  const tree = buildModelTree(model, options.tiedParameters === undefined ? {} : { tiedParameters: options.tiedParameters });
  const ctx = sizeContext(options);
  const noSplit = checkNoSplit(options.noSplitModuleClasses, "options.noSplitModuleClasses");
  const sizes = treeSizes(tree.root, ctx);
  const total = sizes.get("") ?? 0;
  let perGpu = Math.floor(total / (lowZero ? n - 1 : n));

  let blockSize = 0;
  let leafSize = 0;
  if (buffer === "accelerate") {
    // The first module of each no-split class in size-key order.
    const firstOfClass = new Map<string, number>();
    for (const [name, size] of sizes) {
      if (name === "") continue;
      const node = tree.nodes.get(name);
      const cls = node?.kind === "module" ? node.className : null;
      if (cls !== null && noSplit.has(cls) && !firstOfClass.has(cls)) firstOfClass.set(cls, size);
      if (firstOfClass.size === noSplit.size) break;
    }
    blockSize = Math.max(0, ...firstOfClass.values());
    // Final modules: drop the tensor keys (the first leaves), then take the leaves again.
    const firstLeaves = new Set(moduleLeaves(sizes));
    const modulesOnly = new Map([...sizes].filter(([k]) => !firstLeaves.has(k)));
    const leaves = moduleLeaves(modulesOnly);
    const sum = leaves.reduce((a, k) => a + modulesOnly.get(k)!, 0);
    leafSize = Math.trunc(sum / Math.max(leaves.length, 1));
  } else {
    for (const node of tree.nodes.values()) {
      if (node.kind !== "module") continue;
      if (noSplit.has(node.className)) blockSize = Math.max(blockSize, sizes.get(node.name) ?? 0);
      // Bytes the module owns directly (a "leaf module" in transformers 5's sense).
      const own = [...node.params, ...node.buffers].filter((t) => !t.duplicate).reduce((a, t) => a + (sizes.get(t.name) ?? 0), 0);
      if (node.name !== "") leafSize = Math.max(leafSize, own);
    }
  }
  perGpu += Math.trunc(1.25 * Math.max(blockSize, leafSize));

  const low = gpuIds[0]!;
  for (const id of gpuIds.slice(0, -1)) {
    maxMemory.set(id, Math.min(lowZero && id === low ? maxMemory.get(low)! : perGpu, maxMemory.get(id)!));
  }
  if (lowZero) {
    const others = gpuIds.filter((id) => id !== low).reduce((a, id) => a + maxMemory.get(id)!, 0);
    maxMemory.set(low, Math.min(Math.max(0, total - others), maxMemory.get(low)!));
  }
  return maxMemory;
}

/** The device_map strings accelerate and transformers accept. */
export type DeviceMapStrategy = "auto" | "balanced" | "balanced_low_0" | "sequential";

export const DEVICE_MAP_STRATEGIES: readonly DeviceMapStrategy[] = ["auto", "balanced", "balanced_low_0", "sequential"];

export interface ResolveDeviceMapOptions extends InferAutoDeviceMapOptions {
  buffer?: BalancedBuffer;
  /**
   * Applied to max_memory after balancing and before placement: transformers' quantizers use it
   * (bitsandbytes: bnbAdjustMaxMemory, every entry × 0.9 for buffers created during quantization).
   */
  adjustMaxMemory?: (maxMemory: MaxMemory) => MaxMemory;
  /**
   * transformers' extra: add each GPU's unused reserved bytes (caching allocator reserved − allocated,
   * from the inventory) and clamp to the user's maxMemory. Default false.
   */
  addUnusedReserved?: boolean;
}

/** bitsandbytes quantizers' adjust_max_memory: every budget × 0.90. Returns a new map. */
export function bnbAdjustMaxMemory(maxMemory: MaxMemory): MaxMemory {
  return new Map([...maxMemory].map(([k, v]) => [k, v * 0.9] as [DeviceId, number]));
}

/**
 * What a model loader calls for its `deviceMap` argument:
 * - "auto" / "balanced" / "balanced_low_0": getBalancedMemory (lowZero for the last), then
 *   inferAutoDeviceMap with the result; "sequential": inferAutoDeviceMap with getMaxMemory;
 * - a device (0, "cuda:1", "cpu", "disk"): { "": device };
 * - a map: checked against the model (checkDeviceMap, no-split classes enforced) and returned.
 * @throws {ArgumentError} for an unknown string; {DeviceMapError} for a map that leaves keys uncovered.
 */
export function resolveDeviceMap(model: ModelInput, deviceMap: DeviceMapStrategy | DeviceId | string | DeviceMapInput | DeviceMap, options: ResolveDeviceMapOptions = {}): DeviceMap {
  if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", "resolveDeviceMap's options", options));
  if (typeof deviceMap === "string" && (DEVICE_MAP_STRATEGIES as readonly string[]).includes(deviceMap)) {
    const tree = buildModelTree(model, options.tiedParameters === undefined ? {} : { tiedParameters: options.tiedParameters });
    let maxMemory =
      deviceMap === "sequential"
        ? getMaxMemory(options.maxMemory, options)
        : getBalancedMemory(tree, { ...options, lowZero: deviceMap === "balanced_low_0" });
    if (options.adjustMaxMemory !== undefined) maxMemory = options.adjustMaxMemory(maxMemory);
    if (options.addUnusedReserved ?? false) {
      const inv = resolveInventory(options);
      const user = options.maxMemory === undefined || options.maxMemory === null ? null : getMaxMemory(options.maxMemory, { ...options, inventory: inv });
      for (const [k, v] of maxMemory) {
        if (typeof k !== "number") continue;
        const extra = inv.gpus.find((g) => g.index === k)?.unusedReservedBytes ?? 0;
        const cap = user?.get(k);
        maxMemory.set(k, cap === undefined ? v + extra : Math.min(v + extra, cap));
      }
    }
    return inferAutoDeviceMap(tree, { ...options, maxMemory });
  }
  if (typeof deviceMap === "number" || typeof deviceMap === "string") {
    let device: DeviceId;
    try {
      device = parseDeviceKey(deviceMap, "deviceMap");
    } catch {
      throw new ArgumentError(expected(`one of ${DEVICE_MAP_STRATEGIES.map((s) => `"${s}"`).join(", ")}, a device (0, "cuda:N", "cpu", "disk") or a map`, "deviceMap", deviceMap));
    }
    return new Map([["", device]]);
  }
  const map = normalizeDeviceMap(deviceMap);
  return checkDeviceMap(model, map, options.noSplitModuleClasses === undefined ? { logger: options.logger } : { noSplitModuleClasses: options.noSplitModuleClasses, logger: options.logger });
}
