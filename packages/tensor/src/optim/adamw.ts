// AdamW with torch.optim.AdamW semantics (decoupled weight decay p *= 1 - lr·wd applied first, then
// the bias-corrected Adam update), one fused kernel call per parameter. Moments are float32 tensors
// on the parameter's device; parameters are updated in place.

import { ArgumentError, DTypeError, ShapeError, expected } from "@lowbit/dtypes";
import { checkSameDevice, isFloatDType } from "../check.js";
import { dtypeId, native } from "../native.js";
import { keep } from "../scope.js";
import { formatShape, sameShape } from "../shape.js";
import { Tensor, zeros } from "../tensor.js";
import { dense } from "../ops/views.js";

export interface AdamWOptions {
  /** Default 1e-3. */
  lr?: number;
  /** Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay; default 0.01 (torch). */
  weightDecay?: number;
}

export interface ParamGroup extends AdamWOptions {
  params: Tensor[];
}

interface ResolvedGroup {
  params: Tensor[];
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

interface ParamState {
  step: number;
  /** float32, the parameter's shape */
  m: Tensor;
  v: Tensor;
}

function checkHyper(o: AdamWOptions, base: Required<AdamWOptions>, where: string): Required<AdamWOptions> {
  const lr = o.lr ?? base.lr;
  const betas = o.betas ?? base.betas;
  const eps = o.eps ?? base.eps;
  const weightDecay = o.weightDecay ?? base.weightDecay;
  if (typeof lr !== "number" || !(lr >= 0)) throw new ArgumentError(expected("a number >= 0", `${where} lr`, lr));
  if (!Array.isArray(betas) || betas.length !== 2 || !betas.every((b) => typeof b === "number" && b >= 0 && b < 1)) {
    throw new ArgumentError(expected("two numbers in [0, 1)", `${where} betas`, betas));
  }
  if (typeof eps !== "number" || !(eps >= 0)) throw new ArgumentError(expected("a number >= 0", `${where} eps`, eps));
  if (typeof weightDecay !== "number" || !(weightDecay >= 0)) throw new ArgumentError(expected("a number >= 0", `${where} weightDecay`, weightDecay));
  return { lr, betas: [betas[0], betas[1]], eps, weightDecay };
}

export class AdamW {
  readonly paramGroups: ResolvedGroup[];
  readonly #state = new Map<Tensor, ParamState>();

  /** params: tensors (one group with `options`) or groups that override options per group. */
  constructor(params: Iterable<Tensor> | ParamGroup[], options: AdamWOptions = {}) {
    const defaults = checkHyper(options, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 }, "AdamW's");
    if (typeof (params as Partial<Iterable<unknown>> | null)?.[Symbol.iterator] !== "function") {
      throw new ArgumentError(expected("an array of Tensors or of { params } groups", "AdamW's params", params));
    }
    const list = [...(params as Iterable<Tensor | ParamGroup>)];
    if (list.length === 0) throw new ArgumentError("AdamW: params is empty");
    const groups: ParamGroup[] = list.every((p) => p instanceof Tensor) ? [{ params: list as Tensor[] }] : (list as ParamGroup[]);
    const seen = new Set<Tensor>();
    this.paramGroups = groups.map((g, gi) => {
      if (typeof g !== "object" || g === null || !Array.isArray(g.params)) throw new ArgumentError(expected("a Tensor or a { params } group", `AdamW's params[${gi}]`, g));
      const h = checkHyper(g, defaults, `AdamW's group ${gi}`);
      g.params.forEach((p, i) => {
        if (!(p instanceof Tensor)) throw new ArgumentError(expected("a Tensor", `AdamW's group ${gi} params[${i}]`, p));
        p._assertLive("AdamW");
        if (!isFloatDType(p.dtype)) throw new DTypeError(expected("a float parameter", `AdamW's group ${gi} params[${i}]`, p.dtype));
        if (!p.isLeaf) throw new ArgumentError(`AdamW: group ${gi} params[${i}] is not a leaf tensor`);
        if (seen.has(p)) throw new ArgumentError(`AdamW: group ${gi} params[${i}] appears more than once`);
        seen.add(p);
      });
      return { params: [...g.params], ...h };
    });
  }

  /** Learning rate of every group (set it for schedules). */
  get lr(): number {
    return this.paramGroups[0]?.lr ?? 0;
  }

  set lr(value: number) {
    if (typeof value !== "number" || !(value >= 0)) throw new ArgumentError(expected("a number >= 0", "AdamW's lr", value));
    for (const g of this.paramGroups) g.lr = value;
  }

  /** One update of every parameter that has a gradient. */
  step(): void {
    const k = native();
    for (const group of this.paramGroups) {
      for (const p of group.params) {
        const g = p.grad;
        if (g === null) continue;
        p._assertLive("AdamW.step");
        if (!p.isContiguous) throw new ShapeError(`AdamW.step: parameter of shape ${formatShape(p.shape)} is not contiguous; it is updated in place`);
        if (!sameShape(g.shape, p.shape)) throw new ShapeError(`AdamW.step: grad ${formatShape(g.shape)} does not match parameter ${formatShape(p.shape)}`);
        checkSameDevice("AdamW.step", ["param", p], ["grad", g]);
        let st = this.#state.get(p);
        if (st === undefined) {
          st = {
            step: 0,
            m: keep(zeros([...p.shape], { dtype: "float32", device: p.device })),
            v: keep(zeros([...p.shape], { dtype: "float32", device: p.device })),
          };
          this.#state.set(p, st);
        }
        st.step++;
        const gd = dense(g);
        if (p.numel > 0) {
          k.adamw(
            p.storage, p.byteOffset, gd.storage, gd.byteOffset, st.m.storage, 0, st.v.storage, 0,
            dtypeId(p.dtype), dtypeId(g.dtype), p.numel, group.lr, group.betas[0], group.betas[1], group.eps, group.weightDecay, st.step,
          );
        }
        if (gd !== g) gd.dispose();
      }
    }
  }

  /** Drops every gradient (torch's set_to_none). */
  zeroGrad(): void {
    for (const group of this.paramGroups) {
      for (const p of group.params) {
        p.grad?.dispose();
        p.grad = null;
      }
    }
  }

  /** The step count and moments of a parameter (undefined before its first step). */
  stateOf(p: Tensor): Readonly<ParamState> | undefined {
    return this.#state.get(p);
  }

  /** Frees the moment tensors. */
  dispose(): void {
    for (const st of this.#state.values()) {
      st.m.dispose();
      st.v.dispose();
    }
    this.#state.clear();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
