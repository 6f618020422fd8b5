// Bad inputs fail with typed errors that name what is wrong: malformed model descriptions (with the
// path), device maps that leave tensors uncovered or split a no-split module (naming the module),
// tied groups across devices, unknown dtypes and strategies, and bad options.
import { describe, expect, it } from "vitest";

import { ArgumentError, DTypeError } from "@lowbit/dtypes";

import {
  DeviceMapError,
  ModelDescriptionError,
  checkDeviceMap,
  checkTiedParametersOnSameDevice,
  computeModuleSizes,
  dtypeByteSize,
  expandDeviceMap,
  getMaxLayerSize,
  inferAutoDeviceMap,
  resolveDeviceMap,
  type DeviceId,
  type ModelDescription,
} from "../src/index.js";
import { inventory, recorder, tinyLlama } from "./fixtures.js";

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

describe("dtype sizes (accelerate's dtype_byte_size)", () => {
  it.each([
    ["bool", 1 / 8],
    ["int2", 1 / 4],
    ["int4", 1 / 2],
    ["fp8", 1],
    ["float8_e4m3fnuz", 1],
    ["float8_e8m0fnu", 1],
    ["torch.float16", 2],
    ["bfloat16", 2],
    ["float32", 4],
    ["int64", 8],
    ["float64", 8],
    ["complex64", 8],
    ["nf4", 1 / 2],
  ])("%s → %d bytes", (d, size) => {
    expect(dtypeByteSize(d)).toBe(size);
  });

  it("rejects names without a size", () => {
    expect(() => dtypeByteSize("float")).toThrow(DTypeError);
    expect(() => computeModuleSizes(tinyLlama(), { dtype: "half" })).toThrow('for options.dtype but received "half" (string)');
  });
});

describe("model descriptions", () => {
  const bad = (desc: unknown): ModelDescriptionError => {
    const err = thrown(() => computeModuleSizes(desc as ModelDescription));
    expect(err).toBeInstanceOf(ModelDescriptionError);
    expect((err as ModelDescriptionError).code).toBe("ERR_ARGUMENT");
    return err as ModelDescriptionError;
  };

  it("names the path of a bad shape", () => {
    const err = bad({ className: "M", children: { a: { className: "L", parameters: { weight: { shape: [2, -1], dtype: "float32" } } } } });
    expect(err.path).toBe('model.children["a"].parameters["weight"].shape[1]');
    expect(err.message).toBe('Expected a non-negative integer for model.children["a"].parameters["weight"].shape[1] but received -1 (number)');
  });

  it("rejects unknown dtypes, dotted names, duplicates and missing class names", () => {
    expect(bad({ className: "M", parameters: { w: { shape: [1], dtype: "float" } } }).path).toBe('model.parameters["w"].dtype');
    expect(bad({ className: "M", children: { "a.b": { className: "L" } } }).message).toContain("a non-empty name without dots");
    expect(bad({ className: "M", parameters: { w: { shape: [1], dtype: "int8" } }, children: { w: { className: "L" } } }).message).toContain('declares "w" twice');
    expect(bad({ children: {} }).message).toBe("Expected a non-empty class name for model.className but received undefined");
    expect(bad({ className: "M", parameters: { w: { shape: [1], dtype: "int8", quant: { type: "nf5" } } } }).path).toBe('model.parameters["w"].quant');
    expect(bad(null).message).toContain("Expected a ModelDescription or a Module");
  });

  it("validates tied groups", () => {
    const base = tinyLlama();
    expect(bad({ ...base, tiedParameters: [["lm_head.weight", "model.embed.weight"]] }).message).toBe(
      'tiedParameters[0][1] names "model.embed.weight", which is not a parameter of the model',
    );
    expect(bad({ ...base, tiedParameters: [["lm_head.weight"]] }).message).toContain("at least two parameter names");
    expect(bad({ ...base, tiedParameters: [["lm_head.weight", "model.norm.weight"]] }).message).toContain("Tied parameters must have one shape and dtype");
  });
});

describe("checkDeviceMap", () => {
  const model = tinyLlama();

  it("lists every state-dict key the map does not cover", () => {
    const err = thrown(() => checkDeviceMap(model, { "model.embed_tokens": 0, "model.layers": 0, lm_head: "cpu" })) as DeviceMapError;
    expect(err).toBeInstanceOf(DeviceMapError);
    expect(err.message).toBe("The device map provided does not give any device for the following parameters: model.norm.weight");
    expect(err.keys).toEqual(["model.norm.weight"]);
    // Non-persistent buffers (rotary inv_freq) are not state-dict keys: model.rotary_emb may stay unmapped.
    expect(() => checkDeviceMap(model, { "model.embed_tokens": 0, "model.layers": 0, "model.norm": 0, lm_head: "cpu" })).not.toThrow();
  });

  it('accepts "" for the whole model and "cuda:N" devices', () => {
    expect([...checkDeviceMap(model, { "": "cuda:1" })]).toEqual([["", 1]]);
  });

  it("names the module a map splits when its class is no-split", () => {
    const map = { "model.layers.0.self_attn": 0, "model.layers.0.mlp": 1, "model.layers.0": 0, model: 0, lm_head: 0 };
    const err = thrown(() => checkDeviceMap(model, map, { noSplitModuleClasses: ["LlamaDecoderLayer"] })) as DeviceMapError;
    expect(err).toBeInstanceOf(DeviceMapError);
    expect(err.moduleName).toBe("model.layers.0");
    expect(err.message).toBe(
      'The device map splits module "model.layers.0" (LlamaDecoderLayer, a no-split class) across devices 0, 1; map it as one key ' +
        "(keys involved: model.layers.0.self_attn, model.layers.0.mlp, model.layers.0)",
    );
    // The same layer on one device under two keys is not a split.
    expect(() => checkDeviceMap(model, { "model.layers.0.self_attn": 1, "model.layers.0": 1, model: 0, lm_head: 0 }, { noSplitModuleClasses: "LlamaDecoderLayer" })).not.toThrow();
  });

  it("names the key of an invalid device, and warns about keys that name nothing", () => {
    const err = thrown(() => checkDeviceMap(model, { model: "gpu", lm_head: 0 })) as DeviceMapError;
    expect(err.moduleName).toBe("model");
    expect(err.message).toBe('Expected a GPU id (0, 1, ... or "cuda:N"), "cpu" or "disk" for deviceMap["model"] but received "gpu" (string)');
    const log = recorder();
    checkDeviceMap(model, { "": 0, "model.decoder": 1 }, { logger: log });
    expect(log.warnings).toEqual(['The device map key "model.decoder" names no module or tensor of the model; it is ignored.']);
  });

  it("warns when a map separates a tied group, and fails when a tied parameter is unmapped", () => {
    const tied = [["lm_head.weight", "model.embed_tokens.weight"]];
    const log = recorder();
    checkTiedParametersOnSameDevice(tied, { model: 0, lm_head: "cpu" }, { logger: log });
    expect(log.warnings).toEqual([
      "Tied parameters are on different devices: {'lm_head.weight': 'cpu', 'model.embed_tokens.weight': 0}. Please modify your custom device map or set deviceMap: \"auto\".",
    ]);
    expect(thrown(() => checkTiedParametersOnSameDevice(tied, { model: 0 }))).toBeInstanceOf(DeviceMapError);
  });

  it("expands a map to tensor names by longest prefix", () => {
    expect([...expandDeviceMap(new Map<string, DeviceId>([["", "cpu"], ["model.layers.1", 0]]), ["model.layers.1.mlp.up_proj.weight", "model.layers.10.mlp.up_proj.weight"])]).toEqual([
      ["model.layers.1.mlp.up_proj.weight", 0],
      ["model.layers.10.mlp.up_proj.weight", "cpu"],
    ]);
  });
});

describe("planner options", () => {
  const model = tinyLlama();
  const base = { maxMemory: { 0: 1e6, cpu: 1e6 }, inventory: inventory([1e9]) };

  it("rejects bad option values with ArgumentError naming the option", () => {
    expect(() => inferAutoDeviceMap(model, { ...base, noSplitModuleClasses: [1] as unknown as string[] })).toThrow(
      "Expected a class name or an array of class names for options.noSplitModuleClasses but received Array(1)",
    );
    expect(() => inferAutoDeviceMap(model, { ...base, quantizedSizes: "bnb" as "storage" })).toThrow(ArgumentError);
    expect(() => inferAutoDeviceMap(model, { ...base, specialDtypes: { "lm_head.weight": "float" } })).toThrow(DTypeError);
    expect(() => inferAutoDeviceMap(model, null as never)).toThrow(ArgumentError);
    expect(() => getMaxLayerSize(model, { modules: ["model.nope"] })).toThrow("Expected names of modules or tensors of the model for options.modules[0] but received \"model.nope\" (string)");
  });

  it("resolves strategy strings, devices and maps, and rejects anything else", () => {
    expect([...resolveDeviceMap(model, "cuda:0", base)]).toEqual([["", 0]]);
    expect([...resolveDeviceMap(model, "disk", base)]).toEqual([["", "disk"]]);
    expect([...resolveDeviceMap(model, { "": "cpu" }, base)]).toEqual([["", "cpu"]]);
    expect(() => resolveDeviceMap(model, "fastest", base)).toThrow(
      'Expected one of "auto", "balanced", "balanced_low_0", "sequential", a device (0, "cuda:N", "cpu", "disk") or a map for deviceMap but received "fastest" (string)',
    );
    expect(() => resolveDeviceMap(model, { model: 0 }, base)).toThrow(DeviceMapError);
  });
});
