// Device maps: accelerate's infer_auto_device_map (spec A5), clean_device_map, check_device_map (A7),
// the tied-parameter check (A4) and lookups a loader needs (which device holds a tensor).
//
// A device map is an ordered Map from module (or tensor) name to a device: a GPU id (0 = "cuda:0"),
// "cpu" or "disk"; "" maps the whole model. Key order is accelerate's, including the order
// clean_device_map leaves behind, so maps compare equal to upstream's OrderedDicts entry by entry.
import { ArgumentError, expected } from "@lowbit/dtypes";

import { DeviceMapError } from "./errors.js";
import { logInfo, logWarning, type Logger } from "./log.js";
import { getMaxMemory, parseDeviceKey, type DeviceId, type InventoryOptions, type MaxMemory, type MaxMemoryInput } from "./memory.js";
import { buildModelTree, directEntries, type ModelInput, type ModelTree, type ModuleNode, type TreeNode } from "./model.js";
import {
  checkNoSplit,
  getModuleSizeWithTies,
  maxLayerOf,
  moduleBufferBytes,
  sizeContext,
  treeSizes,
  type ModuleSizes,
  type SizeOptions,
} from "./sizes.js";

/** Module (or tensor) name → device, in accelerate's order. */
export type DeviceMap = Map<string, DeviceId>;

/** What callers pass as a device map: { "model.layers.0": 0, lm_head: "cpu" } or a Map; "cuda:N" is accepted for N. */
export type DeviceMapInput = Readonly<Record<string, DeviceId | string>> | ReadonlyMap<string, DeviceId | string>;

export interface InferAutoDeviceMapOptions extends SizeOptions, InventoryOptions {
  /** Bytes per device (see getMaxMemory); default: what the machine has free now. */
  maxMemory?: MaxMemoryInput | MaxMemory | null;
  /** Class names never split across devices (transformers' `_no_split_modules`, e.g. "LlamaDecoderLayer"). */
  noSplitModuleClasses?: string | readonly string[];
  /** Explicit tied groups (default: the model's own). */
  tiedParameters?: ReadonlyArray<ReadonlyArray<string>>;
  /** Logs every placement decision through logger.info (accelerate's verbose=True prints). */
  verbose?: boolean;
  /** Merge keys under a prefix that share one device (default true). */
  cleanResult?: boolean;
  /** Offloaded layers move their buffers too; otherwise a warning is logged when cpu/disk buffers fit no GPU. */
  offloadBuffers?: boolean;
  /** When a device would stay empty, first try to put any later module that fits there (breadth-first). */
  fallbackAllocation?: boolean;
}

/** accelerate's inside test for tied groups: `(name + ".") in (member + ".")` (a substring test, as upstream). */
function inside(name: string, member: string): boolean {
  return `${member}.`.includes(`${name}.`);
}

function relevantTiedParams(name: string, tied: readonly (readonly string[])[]): string[] {
  const groups = tied.filter((g) => g.some((k) => inside(name, k)) && !g.every((k) => inside(name, k)));
  return groups.flatMap((g) => g.filter((p) => !inside(name, p)));
}

/**
 * The entries a split module is replaced by: its own parameters, its children, then its own buffers.
 * (accelerate queues parameters and children only, so the own buffers of a split module that also has
 * children are never mapped; lowbit keeps them, after the children. Outputs are identical whenever
 * split modules own no buffers, as in every transformers decoder.)
 */
function splitEntries(m: ModuleNode): TreeNode[] {
  return directEntries(m);
}

function isSplittable(node: TreeNode, noSplit: ReadonlySet<string>): node is ModuleNode {
  return node.kind === "module" && node.children.length > 0 && !noSplit.has(node.className);
}

/** accelerate's fallback_allocate: the first entry (splitting as needed) whose size with ties fits `limit`. */
function fallbackAllocate(
  modules: readonly TreeNode[],
  sizes: ModuleSizes,
  limit: number,
  noSplit: ReadonlySet<string>,
  tied: readonly (readonly string[])[],
): { node: TreeNode; remaining: TreeNode[] } | null {
  // Upstream converts the limit with convert_file_size_to_int, which rejects negative sizes.
  if (!(limit >= 0)) return null;
  let search = [...modules];
  let found: TreeNode | null = null;
  while (search.length > 0) {
    const node = search.shift()!;
    const { size } = getModuleSizeWithTies(relevantTiedParams(node.name, tied), sizes.get(node.name) ?? 0, sizes, search.map((n) => n.name));
    if (size <= limit) {
      found = node;
      break;
    }
    if (!isSplittable(node, noSplit)) continue;
    search = [...splitEntries(node), ...search];
  }
  if (found === null) return null;
  // Replace each ancestor present in the list by its entries, so that the found entry is listed directly.
  let list = [...modules];
  const name = found.name;
  for (let i = 0; i < name.length; i++) {
    if (name[i] !== ".") continue;
    const parent = name.slice(0, i);
    const idx = list.findIndex((n) => n.name === parent);
    const p = list[idx];
    if (p === undefined || p.kind !== "module") continue;
    list = [...list.slice(0, idx), ...splitEntries(p), ...list.slice(idx + 1)];
  }
  const target = list.findIndex((n) => n.name === name);
  if (target < 0) return null;
  const [node] = list.splice(target, 1);
  return { node: node!, remaining: list };
}

function fmtDevice(d: DeviceId): string {
  return typeof d === "number" ? String(d) : d;
}

/**
 * accelerate's infer_auto_device_map: fills GPU 0, GPU 1, ..., then "cpu", then "disk", in module
 * order, never returning to an earlier device. On the first GPU and on "cpu" the largest remaining
 * unsplittable layer is kept free (so an offloaded layer can be brought in); a module that does not fit
 * is split into its children unless its class is no-split; tied parameters go with the module that
 * holds them. The fit test is `<=`.
 * @throws {ArgumentError} / {ModelDescriptionError} / {DTypeError} for bad inputs.
 */
export function inferAutoDeviceMap(model: ModelInput, options: InferAutoDeviceMapOptions = {}): DeviceMap {
  if (typeof options !== "object" || options === null) throw new ArgumentError(expected("an options object", "inferAutoDeviceMap's options", options));
  const tree = buildModelTree(model, options.tiedParameters === undefined ? {} : { tiedParameters: options.tiedParameters });
  const ctx = sizeContext(options);
  const noSplit = checkNoSplit(options.noSplitModuleClasses, "options.noSplitModuleClasses");
  const logger = options.logger;
  const verbose = options.verbose ?? false;
  const say = (msg: string): void => {
    if (verbose) logInfo(logger, msg);
  };
  const maxMemory = getMaxMemory(options.maxMemory, options);
  const devices: DeviceId[] = [...maxMemory.keys()];
  if (!devices.includes("disk")) devices.push("disk");
  const gpus = devices.filter((d) => d !== "cpu" && d !== "disk");
  const mainDevices: DeviceId[] = gpus.length > 0 ? [gpus[0]!, "cpu"] : ["cpu"];

  const sizes = treeSizes(tree.root, ctx);
  const tied = tree.tiedParameters;
  let queue: TreeNode[] = directEntries(tree.root);
  const modulesInQueue = (): TreeNode[] => queue.filter((n) => n.kind === "module");
  let { size: maxLayerSize, names: maxLayerNames } = maxLayerOf(queue, sizes, noSplit);

  const deviceMap: DeviceMap = new Map();
  let current = 0;
  const used = new Map<DeviceId, number>(devices.map((d) => [d, 0]));
  const bufferSizes = new Map<DeviceId, number>();
  const minimumAssignment = new Map<DeviceId, number>();

  while (queue.length > 0) {
    const node = queue.shift()!;
    const name = node.name;
    say(`Treating module ${name}.`);
    // The largest remaining layer may have been this one (or inside it).
    maxLayerNames = maxLayerNames.filter((n) => n !== name && !n.startsWith(`${name}.`));
    if (maxLayerNames.length === 0) ({ size: maxLayerSize, names: maxLayerNames } = maxLayerOf(modulesInQueue(), sizes, noSplit));
    const moduleSize = sizes.get(name) ?? 0;
    const tiedParams = relevantTiedParams(name, tied);
    if (tiedParams.length > 0) say(`  So those parameters need to be taken into account ${JSON.stringify(tiedParams)}`);

    const device = devices[current]!;
    let cap: number | null = device === "disk" ? null : maxMemory.get(device)!;
    let reserved = 0;
    if (cap !== null && mainDevices.includes(device)) {
      cap -= maxLayerSize;
      reserved = maxLayerSize;
    }
    const deviceUsed = used.get(device)!;
    const { size: withTies, tiedModuleNames } = getModuleSizeWithTies(tiedParams, moduleSize, sizes, queue.map((n) => n.name));

    // 1. The module and its tied modules fit.
    if (cap === null || deviceUsed + withTies <= cap) {
      say(
        `Putting ${name}${tiedModuleNames.length > 0 ? ` and ${JSON.stringify(tiedModuleNames)}` : ` (size=${moduleSize})`}` +
          `${cap === null ? "" : ` (available=${cap - deviceUsed})`} on ${fmtDevice(device)}.`,
      );
      used.set(device, deviceUsed + withTies);
      deviceMap.set(name, device);
      for (const t of tiedModuleNames) {
        const idx = queue.findIndex((n) => n.name === t);
        if (idx >= 0) queue.splice(idx, 1);
        deviceMap.set(t, device);
      }
      if (!(options.offloadBuffers ?? false) && node.kind === "module") {
        bufferSizes.set(device, (bufferSizes.get(device) ?? 0) + moduleBufferBytes(node, ctx));
      }
      continue;
    }

    // 2. The module fits alone: split the first splittable tied module instead.
    if (tiedParams.length > 0 && deviceUsed + moduleSize <= cap) {
      say(`Not enough space on ${fmtDevice(device)} to put ${name} and ${JSON.stringify(tiedModuleNames)} (space available ${cap - deviceUsed}, needed size ${withTies}).`);
      let splitHappened = false;
      for (const t of tiedModuleNames) {
        const idx = queue.findIndex((n) => n.name === t);
        const tiedNode = queue[idx];
        // A tied entry that is a tensor cannot be split (upstream fails with AttributeError here).
        if (tiedNode === undefined || !isSplittable(tiedNode, noSplit)) continue;
        say(`Splitting ${t}.`);
        queue = [node, ...queue.slice(0, idx), ...splitEntries(tiedNode), ...queue.slice(idx + 1)];
        ({ size: maxLayerSize, names: maxLayerNames } = maxLayerOf(modulesInQueue(), sizes, noSplit));
        splitHappened = true;
        break;
      }
      if (splitHappened) continue;
      say("None of the tied module can be split, going to the next device.");
    }

    // 3. The module does not fit: split it, unless it is a tensor, a leaf or a no-split class.
    if (deviceUsed + moduleSize >= cap) {
      say(`Not enough space on ${fmtDevice(device)} to put ${name} (space available ${cap - deviceUsed}, module size ${moduleSize}).`);
      if (isSplittable(node, noSplit)) {
        say(`Splitting ${name}.`);
        queue = [...splitEntries(node), ...queue];
        ({ size: maxLayerSize, names: maxLayerNames } = maxLayerOf(modulesInQueue(), sizes, noSplit));
        continue;
      }
      say("This module cannot be split, going to the next device.");
    }

    // 4. Optionally fill a device that would stay empty with a later module that fits.
    if (deviceUsed === 0 && (options.fallbackAllocation ?? false)) {
      const limit = maxMemory.get(device)! - Math.max(maxLayerSize, withTies);
      const found = fallbackAllocate(queue, sizes, limit - deviceUsed, noSplit, tied);
      if (found !== null) {
        queue = [found.node, node, ...found.remaining];
        continue;
      }
    }

    // 5. Move to the next device for good.
    if (deviceUsed === 0) minimumAssignment.set(device, withTies + reserved);
    used.set(device, deviceUsed + reserved);
    current += 1;
    queue.unshift(node);
  }

  if (options.cleanResult ?? true) cleanDeviceMap(deviceMap);

  const nonGpuBuffers = (bufferSizes.get("cpu") ?? 0) + (bufferSizes.get("disk") ?? 0);
  if (nonGpuBuffers > 0 && !(options.offloadBuffers ?? false) && gpus.length > 0) {
    const fits = gpus.some((g) => maxMemory.get(g)! >= nonGpuBuffers + (used.get(g) ?? 0));
    if (!fits) {
      logWarning(
        logger,
        `Current model requires ${nonGpuBuffers} bytes of buffer for offloaded layers, which seems does not fit any GPU's remaining memory. ` +
          "If you are experiencing a OOM later, please consider using offloadBuffers: true.",
      );
    }
  }
  if (minimumAssignment.size > 0) {
    const lines = [...minimumAssignment].map(([d, m]) => `  - ${fmtDevice(d)}: ${m} bytes required`).join("\n");
    logInfo(
      logger,
      `Based on the current allocation process, no modules could be assigned to the following devices due to insufficient memory:\n${lines}\n` +
        "These minimum requirements are specific to this allocation attempt and may vary. Consider increasing the available memory for these devices to at least the specified minimum, or adjusting the model config.",
    );
  }
  return deviceMap;
}

/**
 * accelerate's clean_device_map: recursively replaces all keys under a prefix by the prefix when they
 * share one device ({"": d} when the whole model is on d). Merged keys move to the end, as in Python's
 * dict; children are visited in the order they first appear (upstream iterates a set, whose order can
 * differ between runs). Mutates and returns `deviceMap`.
 */
export function cleanDeviceMap(deviceMap: DeviceMap, moduleName = ""): DeviceMap {
  const prefix = moduleName === "" ? "" : `${moduleName}.`;
  const values = [...deviceMap].filter(([k]) => k.startsWith(prefix)).map(([, v]) => v);
  if (values.length > 1 && new Set(values).size === 1) {
    for (const k of [...deviceMap.keys()]) if (k.startsWith(prefix)) deviceMap.delete(k);
    deviceMap.set(moduleName, values[0]!);
  }
  const depth = moduleName.length > 0 ? moduleName.split(".").length + 1 : 1;
  const children: string[] = [];
  for (const k of deviceMap.keys()) {
    if (!k.startsWith(prefix) || k.length <= moduleName.length) continue;
    const child = k.split(".").slice(0, depth).join(".");
    if (!children.includes(child)) children.push(child);
  }
  for (const child of children) cleanDeviceMap(deviceMap, child);
  return deviceMap;
}

/**
 * Validates and normalises a caller's device map (values: GPU id, "cuda:N", "cpu" or "disk").
 * @throws {DeviceMapError} naming the key with a bad device.
 */
export function normalizeDeviceMap(deviceMap: DeviceMapInput | DeviceMap): DeviceMap {
  if (typeof deviceMap !== "object" || deviceMap === null) throw new ArgumentError(expected("a Record or Map of module name → device", "deviceMap", deviceMap));
  const entries: Array<[unknown, unknown]> = deviceMap instanceof Map ? [...deviceMap.entries()] : Object.entries(deviceMap);
  const out: DeviceMap = new Map();
  for (const [k, v] of entries) {
    if (typeof k !== "string") throw new DeviceMapError(expected("a module name (string)", "a deviceMap key", k), { keys: [] });
    try {
      out.set(k, parseDeviceKey(v, `deviceMap[${JSON.stringify(k)}]`));
    } catch (err) {
      throw new DeviceMapError((err as Error).message, { moduleName: k, keys: [k] }, { cause: err });
    }
  }
  return out;
}

/** The device of the longest device-map key that is `name` or a dotted prefix of it ("" covers all). */
export function deviceForName(deviceMap: ReadonlyMap<string, DeviceId>, name: string): DeviceId | undefined {
  let best: string | null = null;
  for (const k of deviceMap.keys()) {
    if (k === "" || k === name || name.startsWith(`${k}.`)) {
      if (best === null || k.length > best.length) best = k;
    }
  }
  return best === null ? undefined : deviceMap.get(best);
}

/** Every name in `names` with its device (transformers' expand_device_map); names no key covers are left out. */
export function expandDeviceMap(deviceMap: ReadonlyMap<string, DeviceId>, names: readonly string[]): Map<string, DeviceId> {
  const out = new Map<string, DeviceId>();
  for (const n of names) {
    const d = deviceForName(deviceMap, n);
    if (d !== undefined) out.set(n, d);
  }
  return out;
}

export interface CheckDeviceMapOptions {
  /** Also refuse maps that put parts of one module of these classes on different devices. */
  noSplitModuleClasses?: string | readonly string[];
  logger?: Logger;
}

/**
 * accelerate's check_device_map: every state-dict key (parameters, tied names included, and persistent
 * buffers) must be covered by a key of the map or by "". Keys that name nothing in the model only warn.
 * With noSplitModuleClasses, a module of those classes whose tensors land on more than one device is
 * refused as well (the "Expected all tensors to be on the same device" failure of spec A14).
 * Returns the normalised map.
 * @throws {DeviceMapError} listing the uncovered keys, or naming the split module / the bad entry.
 */
export function checkDeviceMap(model: ModelInput, deviceMap: DeviceMapInput | DeviceMap, options: CheckDeviceMapOptions = {}): DeviceMap {
  const tree: ModelTree = buildModelTree(model);
  const map = normalizeDeviceMap(deviceMap);
  for (const k of map.keys()) {
    if (k !== "" && !tree.nodes.has(k)) logWarning(options.logger, `The device map key "${k}" names no module or tensor of the model; it is ignored.`);
  }
  if (!map.has("")) {
    const keys = [...map.keys()];
    const uncovered = tree.stateKeys.filter((t) => !keys.some((k) => t === k || t.startsWith(`${k}.`)));
    if (uncovered.length > 0) {
      throw new DeviceMapError(`The device map provided does not give any device for the following parameters: ${uncovered.join(", ")}`, {
        moduleName: null,
        keys: uncovered,
      });
    }
  }
  const noSplit = checkNoSplit(options.noSplitModuleClasses, "options.noSplitModuleClasses");
  if (noSplit.size > 0) {
    for (const node of tree.nodes.values()) {
      if (node.kind !== "module" || !noSplit.has(node.className)) continue;
      const devicesUsed = new Set<DeviceId>();
      const walk = (m: ModuleNode): void => {
        for (const t of [...m.params, ...m.buffers]) {
          const d = deviceForName(map, t.name);
          if (d !== undefined) devicesUsed.add(d);
        }
        m.children.forEach(walk);
      };
      walk(node);
      if (devicesUsed.size > 1) {
        const inner = [...map.keys()].filter((k) => k === node.name || k.startsWith(`${node.name}.`));
        throw new DeviceMapError(
          `The device map splits module "${node.name}" (${node.className}, a no-split class) across devices ${[...devicesUsed].map(fmtDevice).join(", ")}; ` +
            `map it as one key (keys involved: ${inner.join(", ")})`,
          { moduleName: node.name, keys: inner },
        );
      }
    }
  }
  return map;
}

/**
 * accelerate's check_tied_parameters_on_same_device: warns when a map puts the members of a tied group
 * on different devices.
 * @throws {DeviceMapError} when a tied parameter is not covered by the map at all.
 */
export function checkTiedParametersOnSameDevice(tiedParameters: ReadonlyArray<ReadonlyArray<string>>, deviceMap: DeviceMapInput | DeviceMap, options: { logger?: Logger } = {}): void {
  const map = normalizeDeviceMap(deviceMap);
  for (const group of tiedParameters) {
    const devices = new Map<string, DeviceId>();
    for (const p of group) {
      const d = deviceForName(map, p);
      if (d === undefined) throw new DeviceMapError(`The device map does not contain the module of tied parameter "${p}".`, { moduleName: p, keys: [p] });
      devices.set(p, d);
    }
    if (new Set(devices.values()).size > 1) {
      const list = [...devices].map(([p, d]) => `'${p}': ${typeof d === "number" ? d : `'${d}'`}`).join(", ");
      logWarning(options.logger, `Tied parameters are on different devices: {${list}}. Please modify your custom device map or set deviceMap: "auto".`);
    }
  }
}

/** A device map as a plain object (JSON, printing). Integer-like keys would be reordered by JavaScript. */
export function deviceMapToObject(deviceMap: ReadonlyMap<string, DeviceId>): Record<string, DeviceId> {
  return Object.fromEntries(deviceMap);
}

/** A helper for messages: the map as Python prints it ({'model.embed_tokens': 0, 'lm_head': 'cpu'}). */
export function formatDeviceMap(deviceMap: ReadonlyMap<string, DeviceId>): string {
  return `{${[...deviceMap].map(([k, v]) => `'${k}': ${typeof v === "number" ? v : `'${v}'`}`).join(", ")}}`;
}

