// Bad input never crashes: wrong argument types, shapes, dtypes, devices, out-of-range indices and
// disposed tensors all throw typed JS errors whose messages name the op and the argument.

import { describe, expect, it } from "vitest";
import type { NativeStorage } from "@lowbit/kernels";
import * as lb from "../src/index.js";
import { Linear, Tensor, tidy } from "../src/index.js";
import { forEachDevice } from "./devices.js";

/** A storage that claims to live on another device; device checks fire before any native call. */
function foreignStorage(device: string): NativeStorage {
  return { byteLength: 64, device, readOnly: false, disposed: false, dispose() {}, [Symbol.dispose]() {} } as NativeStorage;
}

describe("argument types", () => {
  it("creation functions", () => {
    expect(() => lb.zeros("3" as unknown as number[])).toThrow('Expected an array of non-negative integers for shape but received "3" (string)');
    expect(() => lb.zeros([2.5])).toThrow(lb.ArgumentError);
    expect(() => lb.zeros([2], { dtype: "float64" as never })).toThrow(lb.DTypeError);
    expect(() => lb.zeros([2], { dtype: "nf4" })).toThrow(/packed 4-bit/);
    expect(() => lb.zeros([2], { device: "gpu" })).toThrow('Expected "cpu" or "cuda:N" for device but received "gpu" (string)');
    expect(() => lb.fromTypedArray(new Float32Array(5), [2, 2])).toThrow("fromTypedArray: shape [2, 2] holds 4 elements but data has 5");
    expect(() => lb.fromTypedArray(new Uint16Array(2))).toThrow(/pass \{ dtype \}/);
    expect(() => lb.tensor([[1, 2], [3]])).toThrow(lb.ShapeError);
    expect(() => lb.tensor([1.5], { dtype: "int32" })).toThrow(lb.ArgumentError);
    expect(() => lb.tensor([300], { dtype: "int8" })).toThrow(/int8 range/);
    expect(() => lb.full([2], "1" as unknown as number)).toThrow(lb.ArgumentError);
    expect(() => lb.arange(0, 5, 0)).toThrow(lb.ArgumentError);
  });

  it("ops given non-tensors", () => {
    expect(() => lb.add("x" as unknown as Tensor, 1)).toThrow('Expected a Tensor for add\'s a but received "x" (string)');
    expect(() => lb.matmul({} as Tensor, {} as Tensor)).toThrow(lb.ArgumentError);
    expect(() => lb.add(1, 2 as unknown as Tensor)).toThrow(/at least one operand must be a Tensor/);
    expect(() => lb.tidy(42 as unknown as () => void)).toThrow(lb.ArgumentError);
    expect(() => lb.cat([])).toThrow(lb.ArgumentError);
    expect(() => lb.zeros([2], null as never)).toThrow("Expected an options object for zeros's options but received null");
    expect(() => lb.ones([2]).to("float64" as never)).toThrow('Expected a dtype name or a device ("cpu", "cuda:N") for to\'s target but received "float64" (string)');
    expect(() => new lb.AdamW(5 as never)).toThrow(lb.ArgumentError);
    expect(() => new lb.AdamW([])).toThrow(lb.ArgumentError);
  });
});

forEachDevice((device) => {
  describe("shapes, dtypes, indices", () => {
    it("throws typed errors naming the op", () => {
      tidy(() => {
        const a = lb.zeros([2, 3], { device });
        expect(() => lb.add(a, lb.zeros([4], { device }))).toThrow("add: shapes [2, 3] and [4] cannot be broadcast (dim 1: 3 vs 4)");
        expect(() => lb.add(a, lb.zeros([2, 3], { device, dtype: "bfloat16" }))).toThrow(
          "add: expected a and b to have one dtype but a is float32 and b is bfloat16; cast one with .to(dtype)",
        );
        expect(() => lb.exp(lb.zeros([2], { device, dtype: "int32" }))).toThrow("Expected a float32, float16 or bfloat16 tensor for exp's x but received \"int32\" (string)");
        expect(() => a.reshape(4, 2)).toThrow(lb.ShapeError);
        expect(() => a.permute(0, 0)).toThrow(lb.ArgumentError);
        expect(() => a.transpose(0, 2)).toThrow("Expected an integer in [-2, 1] for transpose's dim1 but received 2 (number)");
        expect(() => a.narrow(1, 2, 2)).toThrow(lb.ArgumentError);
        expect(() => a.sum(5)).toThrow(lb.ArgumentError);
        expect(() => a.item()).toThrow(lb.ShapeError);
        expect(() => lb.softmax(lb.zeros([], { device }))).toThrow(lb.ShapeError);
        expect(() => lb.rmsNorm(a, lb.ones([4], { device }))).toThrow(/rmsNorm: expected x of shape \(\.\.\., 4\)/);
        expect(() => new Linear(3, 2, { device }).forward(lb.zeros([2, 4], { device }))).toThrow(lb.ShapeError);
      });
    });

    it("out-of-range indices are caught (native checks included)", () => {
      tidy(() => {
        const w = lb.zeros([4, 2], { device });
        expect(() => lb.embedding(w, lb.tensor([0, 4], { dtype: "int32", device }))).toThrow(lb.LowbitError);
        expect(() => lb.embedding(w, lb.tensor([-1], { dtype: "int64", device }))).toThrow(lb.LowbitError);
        expect(() => lb.embedding(w, lb.tensor([0.0], { device }))).toThrow(lb.DTypeError);
        expect(() => lb.crossEntropy(lb.zeros([2, 3], { device }), lb.tensor([0, 3], { dtype: "int32", device }))).toThrow(lb.LowbitError);
        const pos = lb.tensor([[0, 1]], { dtype: "int32", device });
        expect(() => lb.rope(lb.zeros([1, 1, 3, 4], { device }), pos, lb.ropeInvFreq(4, 10000, { device }))).toThrow(lb.ShapeError);
      });
    });

    it("autograd misuse", () => {
      tidy(() => {
        const x = lb.ones([2], { device, requiresGrad: true });
        const y = x.mul(2);
        expect(() => {
          y.requiresGrad = false;
        }).toThrow(/leaf tensors/);
        expect(() => {
          lb.ones([2], { device, dtype: "int32" }).requiresGrad = true;
        }).toThrow(lb.DTypeError);
        expect(() => y.backward(lb.ones([2], { device, dtype: "float16" }))).toThrow(lb.DTypeError);
        expect(() => {
          x.grad = lb.ones([3], { device });
        }).toThrow(lb.ShapeError);
        x.dispose();
      });
    });
  });

  describe("devices", () => {
    it("mixing devices is a DeviceError naming the op and both devices, never a copy", () => {
      const other = device === "cpu" ? "cuda:0" : "cpu";
      tidy(() => {
        const here = lb.ones([4], { device });
        // A tensor on the other device (a stand-in storage: the device check runs before any kernel).
        const there = Tensor.fromStorage(foreignStorage(other), 0, [4], "float32", { external: true });
        expect(() => lb.add(here, there)).toThrow(
          `add: expected all tensors on one device but a is on ${device} and b is on ${other}; move one with .to(device)`,
        );
        expect(() => lb.matmul(here.reshape(2, 2), there.reshape(2, 2))).toThrow(lb.DeviceError);
        expect(() => lb.cat([here, there])).toThrow(lb.DeviceError);
        expect(() => lb.embedding(lb.ones([4, 2], { device }), Tensor.fromStorage(foreignStorage(other), 0, [2], "int32", { external: true }))).toThrow(lb.DeviceError);
      });
    });

    it("a device that does not exist is a typed error", () => {
      expect(() => lb.zeros([2], { device: "cuda:63" })).toThrow(lb.LowbitError);
    });
  });
});
