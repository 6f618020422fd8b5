// max_memory (spec A2): size strings as accelerate's convert_file_size_to_int parses them (expected
// values recorded from accelerate 1.15.0), key parsing and order, defaults from the device inventory,
// the 80% cpu default, unknown-GPU warnings, and typed errors for bad input.
import { describe, expect, it } from "vitest";

import { ArgumentError } from "@lowbit/dtypes";

import { bnbAdjustMaxMemory, convertFileSizeToInt, detectDeviceInventory, deviceString, getMaxMemory, parseDeviceKey, resolveDeviceMap } from "../src/index.js";
import { inventory, recorder, tinyLlama } from "./fixtures.js";

describe("convertFileSizeToInt", () => {
  it.each([
    ["10GiB", 10_737_418_240],
    ["10GB", 10_000_000_000],
    ["10Gb", 1_250_000_000], // a lowercase trailing b means bits
    ["10gb", 1_250_000_000],
    ["500MB", 500_000_000],
    ["1.5KiB", 1536],
    ["0.3GB", 300_000_000],
    ["7kb", 875],
    ["1e3MB", 1_000_000_000],
    [" 2 GB", 2_000_000_000],
    ["2.75MiB", 2_883_584],
    ["10gib", 10_737_418_240], // GiB is never bits
  ])("%s → %d (as accelerate 1.15.0)", (s, bytes) => {
    expect(convertFileSizeToInt(s)).toBe(bytes);
  });

  it("takes integers as bytes", () => {
    expect(convertFileSizeToInt(1234)).toBe(1234);
  });

  it.each(["-1GB", "10", "10TB", "GB", "inf GB", "1_0GB", "10 bytes"])("rejects %j with an ArgumentError naming the argument", (s) => {
    expect(() => convertFileSizeToInt(s, 'maxMemory["cpu"]')).toThrow(ArgumentError);
    expect(() => convertFileSizeToInt(s, 'maxMemory["cpu"]')).toThrow(`for maxMemory["cpu"] but received ${JSON.stringify(s)} (string)`);
  });

  it("rejects negative, fractional and non-number sizes", () => {
    expect(() => convertFileSizeToInt(-1)).toThrow(ArgumentError);
    expect(() => convertFileSizeToInt(1.5)).toThrow(ArgumentError);
    expect(() => convertFileSizeToInt({} as unknown as string)).toThrow(ArgumentError);
  });
});

describe("getMaxMemory", () => {
  it("defaults to every GPU's free memory, then the available host RAM", () => {
    const inv = { gpus: [{ index: 1, freeBytes: 7, totalBytes: 100 }, { index: 0, freeBytes: 5, totalBytes: 100 }], cpuAvailableBytes: 11 };
    expect([...getMaxMemory(undefined, { inventory: inv })]).toEqual([
      [0, 5],
      [1, 7],
      ["cpu", 11],
    ]);
  });

  it("parses strings, normalises keys and orders GPUs, cpu, disk", () => {
    const mm = getMaxMemory({ disk: "1GB", cpu: "2GiB", "cuda:1": 100, 0: "1MB" }, { inventory: inventory([1, 1]) });
    expect([...mm]).toEqual([
      [0, 1_000_000],
      [1, 100],
      ["cpu", 2 ** 31],
      ["disk", 1e9],
    ]);
  });

  it("accepts a Map with numeric keys (what getBalancedMemory returns) and fractional budgets", () => {
    expect([...getMaxMemory(new Map<number | string, number>([["cpu", 10], [0, 0.5 * 9]]), { inventory: inventory([1]) })]).toEqual([
      [0, 4.5],
      ["cpu", 10],
    ]);
  });

  it("adds cpu = 80% of the available RAM when the user gave none", () => {
    const log = recorder();
    expect([...getMaxMemory({ 0: 10 }, { inventory: inventory([100], 1000), logger: log })]).toEqual([
      [0, 10],
      ["cpu", 800],
    ]);
    expect(log.infos[0]).toMatch(/^We will use 80% of the memory on cpu/);
  });

  it("only warns for a GPU id the machine does not have", () => {
    const log = recorder();
    const mm = getMaxMemory({ 3: 10, cpu: 1 }, { inventory: inventory([100, 100]), logger: log });
    expect(mm.get(3)).toBe(10);
    expect(log.warnings).toEqual(["Device 3 is not available, available devices are [0, 1]"]);
  });

  it("rejects unknown keys, duplicate devices and bad values with ArgumentError", () => {
    const inv = { inventory: inventory([1]) };
    expect(() => getMaxMemory({ gpu0: 1, cpu: 1 }, inv)).toThrow(ArgumentError);
    expect(() => getMaxMemory({ gpu0: 1, cpu: 1 }, inv)).toThrow('Expected a GPU id (0, 1, ... or "cuda:N"), "cpu" or "disk" for a key of maxMemory ("gpu0" (string)) but received "gpu0" (string)');
    expect(() => getMaxMemory({ mps: 1 }, inv)).toThrow(ArgumentError);
    expect(() => getMaxMemory({ 0: 1, "cuda:0": 2, cpu: 1 }, inv)).toThrow("maxMemory names device 0 twice");
    expect(() => getMaxMemory({ 0: -5, cpu: 1 }, inv)).toThrow("Expected a non-negative number of bytes or a size string for maxMemory[\"0\"] but received -5 (number)");
    expect(() => getMaxMemory({ 0: "lots", cpu: 1 }, inv)).toThrow(ArgumentError);
    expect(() => getMaxMemory(42 as unknown as Record<string, number>, inv)).toThrow(ArgumentError);
  });

  it("parses device keys and prints devices as lowbit strings", () => {
    expect(parseDeviceKey("cuda", "k")).toBe(0);
    expect(parseDeviceKey("cuda:12", "k")).toBe(12);
    expect(parseDeviceKey(3, "k")).toBe(3);
    expect(() => parseDeviceKey(-1, "k")).toThrow(ArgumentError);
    expect(() => parseDeviceKey("01", "k")).toThrow(ArgumentError);
    expect(deviceString(2)).toBe("cuda:2");
    expect(deviceString("disk")).toBe("disk");
  });
});

describe("device inventory", () => {
  it("reads the machine: host RAM from node:os and every CUDA device the addon reports", () => {
    const inv = detectDeviceInventory();
    expect(inv.cpuAvailableBytes).toBeGreaterThan(0);
    expect(inv.cpuTotalBytes).toBeGreaterThanOrEqual(inv.cpuAvailableBytes);
    for (const g of inv.gpus) {
      expect(g.freeBytes).toBeLessThanOrEqual(g.totalBytes);
      expect(g.name).toBeTypeOf("string");
    }
    // The live default: cpu is always there; GPUs follow what the addon sees.
    const mm = getMaxMemory();
    expect(mm.get("cpu")).toBeGreaterThan(0);
    expect([...mm.keys()].filter((k) => typeof k === "number")).toEqual(inv.gpus.map((g) => g.index));
  });
});

describe("transformers' extra reserves through resolveDeviceMap", () => {
  const model = tinyLlama();

  it("bnbAdjustMaxMemory multiplies every budget by 0.9", () => {
    expect([...bnbAdjustMaxMemory(new Map<0 | "cpu", number>([[0, 1000], ["cpu", 2000]]))]).toEqual([
      [0, 900],
      ["cpu", 1800],
    ]);
  });

  it("adjustMaxMemory is applied before placement, unused reserved bytes are added and clamped to the user's budget", () => {
    const seen: Array<Array<[unknown, number]>> = [];
    const inv = { gpus: [{ index: 0, freeBytes: 1e9, totalBytes: 1e9, unusedReservedBytes: 50_000 }], cpuAvailableBytes: 1e9 };
    resolveDeviceMap(model, "sequential", {
      maxMemory: { 0: 200_000, cpu: 1e6 },
      dtype: "float16",
      noSplitModuleClasses: ["LlamaDecoderLayer"],
      inventory: inv,
      logger: recorder(),
      addUnusedReserved: true,
      adjustMaxMemory: (mm) => {
        const out = bnbAdjustMaxMemory(mm);
        seen.push([...out]);
        return out;
      },
    });
    expect(seen).toEqual([
      [
        [0, 180_000],
        ["cpu", 900_000],
      ],
    ]);
    // 180,000 + 50,000 unused reserved = 230,000, clamped to the user's 200,000. The verbose log shows the
    // budget placement used: 200,000 − 73,984 (largest-layer reserve) = 126,016 available for embed_tokens.
    const log = recorder();
    resolveDeviceMap(model, "sequential", {
      maxMemory: { 0: 200_000, cpu: 1e6 },
      dtype: "float16",
      noSplitModuleClasses: ["LlamaDecoderLayer"],
      inventory: inv,
      logger: log,
      verbose: true,
      addUnusedReserved: true,
      adjustMaxMemory: bnbAdjustMaxMemory,
    });
    expect(log.infos).toContain("Putting model.embed_tokens (size=16384) (available=126016) on 0.");
    // Without a user budget for GPU 0 nothing clamps: 0.9 × 1e9 free + 50,000 − 73,984.
    const free = recorder();
    resolveDeviceMap(model, "sequential", { dtype: "float16", noSplitModuleClasses: ["LlamaDecoderLayer"], inventory: inv, logger: free, verbose: true, addUnusedReserved: true, adjustMaxMemory: bnbAdjustMaxMemory });
    expect(free.infos).toContain(`Putting model (size=312480) (available=${0.9 * 1e9 + 50_000 - 16_384}) on 0.`);
  });
});
