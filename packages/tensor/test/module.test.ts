// nn.Module: registration and dotted names, state dicts (strict errors naming missing / unexpected
// keys and shape mismatches, dtype conversion, assign), train/eval, apply, dispose; the float layers.

import { describe, expect, it } from "vitest";
import * as lb from "../src/index.js";
import { Dropout, Embedding, Generator, Linear, Module, RMSNorm, StateDictError, tidy, type Tensor } from "../src/index.js";
import { forEachDevice } from "./devices.js";
import * as ref from "./reference.js";
import { expectClose, expectNoLeak, f64 } from "./util.js";

class Block extends Module {
  readonly norm: RMSNorm;
  readonly proj: Linear;
  readonly drop: Dropout;
  constructor(device: string) {
    super();
    this.norm = this.registerModule("norm", new RMSNorm(4, { device }));
    this.proj = this.registerModule("proj", new Linear(4, 3, { device, generator: new Generator(1) }));
    this.drop = this.registerModule("drop", new Dropout(0.5));
    this.registerBuffer("scale", lb.full([1], 2, { device }));
    this.registerBuffer("cache", lb.zeros([2], { device }), { persistent: false });
  }
  forward(x: Tensor): Tensor {
    return this.drop.forward(this.proj.forward(this.norm.forward(x))).mul(this.buffer("scale"));
  }
}

class Net extends Module {
  readonly emb: Embedding;
  readonly layers: Block[];
  constructor(device: string) {
    super();
    this.emb = this.registerModule("emb", new Embedding(10, 4, { device, generator: new Generator(2) }));
    const list = this.registerModule("layers", new Module());
    this.layers = [0, 1].map((i) => list.registerModule(String(i), new Block(device)));
  }
}

forEachDevice((device) => {
  describe("Module", () => {
    it("names parameters and buffers with dotted paths, in registration order", () => {
      const net = new Net(device);
      try {
        expect(net.namedParameters().map(([n]) => n)).toEqual([
          "emb.weight",
          "layers.0.norm.weight",
          "layers.0.proj.weight",
          "layers.0.proj.bias",
          "layers.1.norm.weight",
          "layers.1.proj.weight",
          "layers.1.proj.bias",
        ]);
        expect(net.namedBuffers().map(([n]) => n)).toEqual(["layers.0.scale", "layers.0.cache", "layers.1.scale", "layers.1.cache"]);
        // torch order: a module's own entries, then its children's.
        expect(Object.keys(net.stateDict())).toEqual([
          "emb.weight",
          "layers.0.scale",
          "layers.0.norm.weight",
          "layers.0.proj.weight",
          "layers.0.proj.bias",
          "layers.1.scale",
          "layers.1.norm.weight",
          "layers.1.proj.weight",
          "layers.1.proj.bias",
        ]);
        expect(net.parameters().every((p) => p.requiresGrad && p.isLeaf)).toBe(true);
        expect(() => net.registerParameter("a.b", lb.zeros([1], { device }))).toThrow(lb.ArgumentError);
        expect(() => net.registerModule("emb", new Module())).not.toThrow(); // replacing a submodule is allowed
      } finally {
        net.dispose();
      }
    });

    it("loadStateDict copies (with dtype conversion), and strict mode names missing / unexpected keys", () => {
      const a = new Net(device);
      const b = new Net(device);
      try {
        tidy(() => {
          const sd = a.stateDict();
          const converted: Record<string, Tensor> = {};
          for (const [k, v] of Object.entries(sd)) converted[k] = v.to("bfloat16");
          b.loadStateDict(converted);
          expectClose(f64(b.emb.weight), f64(a.emb.weight.to("bfloat16")), { atol: 0 });
          expect(b.emb.weight.dtype).toBe("float32");

          const partial = { ...sd, extra: lb.zeros([1], { device }) } as Record<string, Tensor>;
          delete partial["layers.1.proj.bias"];
          let err: unknown;
          try {
            b.loadStateDict(partial);
          } catch (e) {
            err = e;
          }
          expect(err).toBeInstanceOf(StateDictError);
          expect((err as Error).message).toBe('loadStateDict: missing keys: "layers.1.proj.bias"; unexpected keys: "extra"');
          expect((err as StateDictError).missingKeys).toEqual(["layers.1.proj.bias"]);
          const res = b.loadStateDict(partial, { strict: false });
          expect(res).toEqual({ missingKeys: ["layers.1.proj.bias"], unexpectedKeys: ["extra"] });

          const wrong = { ...sd, "layers.0.proj.weight": lb.zeros([4, 3], { device }) };
          expect(() => b.loadStateDict(wrong)).toThrow('loadStateDict: "layers.0.proj.weight" has shape [4, 3] in the state dict but [3, 4] in the module');
          const badType = { ...sd, "emb.weight": lb.zeros([10, 4], { device, dtype: "int32" }) };
          expect(() => b.loadStateDict(badType)).toThrow(/only float dtypes convert/);
        });
      } finally {
        a.dispose();
        b.dispose();
      }
    });

    it("assign adopts the given tensors (zero-copy)", () => {
      const net = new Net(device);
      try {
        tidy(() => {
          const w = lb.randn([10, 4], { device, generator: new Generator(3) });
          net.loadStateDict({ "emb.weight": w }, { strict: false, assign: true });
          expect(net.emb.weight.storage).toBe(w.storage);
          expect(net.emb.weight.requiresGrad).toBe(true);
        });
        expect(net.emb.weight.disposed).toBe(false);
      } finally {
        net.dispose();
      }
    });

    it("train / eval / apply / dispose", () => {
      expectNoLeak(device, () => {
        const net = new Net(device);
        net.eval();
        expect(net.layers[0]!.drop.training).toBe(false);
        tidy(() => {
          const x = lb.randn([2, 4], { device, generator: new Generator(4) });
          // Dropout is the identity in eval mode: two calls agree.
          expectClose(f64(net.layers[0]!.forward(x)), f64(net.layers[0]!.forward(x)), { atol: 0 });
        });
        net.train();
        expect(net.layers[1]!.drop.training).toBe(true);
        const seen: string[] = [];
        net.apply((m) => seen.push(m.constructor.name));
        expect(seen).toEqual(["Embedding", "RMSNorm", "Linear", "Dropout", "Block", "RMSNorm", "Linear", "Dropout", "Block", "Module", "Net"]);
        net.dispose();
        expect(net.emb.weight.disposed).toBe(true);
      });
    });

    it("Linear / Embedding / RMSNorm forward as their ops", () => {
      tidy(() => {
        const lin = new Linear(4, 2, { device, generator: new Generator(5) });
        const x = lb.randn([3, 4], { device, generator: new Generator(6) });
        const want = ref.linear(ref.arr([3, 4], f64(x)), ref.arr([2, 4], f64(lin.weight)), ref.arr([2], f64(lin.bias!)));
        expectClose(f64(lin.forward(x)), want.data, { atol: 1e-5 });
        const bound = 1 / Math.sqrt(4);
        expect(Array.from(f64(lin.weight)).every((v) => Math.abs(v) <= bound)).toBe(true);
        expect(new Linear(4, 2, { bias: false, device }).bias).toBeNull();
        lin.dispose();
      });
    });
  });
});
