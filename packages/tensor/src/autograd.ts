// Reverse-mode autograd. Each differentiable op that sees an input requiring grad records a Node: its
// input edges (to producer nodes or to leaves), the tensors its backward needs (held as private
// aliases so that disposing or tidying the originals is safe) and a backward function. The nodes form
// the tape; backward() replays it in reverse topological order, summing gradients that meet at a node
// and accumulating (+=) into each leaf's `.grad`.
//
// Memory: a node is kept alive by the tensors it produced and by the nodes that consume them. When
// neither remains, or when backward has run through it (without retainGraph), its saved tensors are
// released. Gradients flow in tensors created outside every tidy scope and are disposed as soon as they
// have been consumed; leaf gradients are owned by their leaf.

import { ArgumentError, DTypeError, ShapeError } from "@lowbit/dtypes";
import { DisposedError } from "@lowbit/kernels";
import { isFloatDType } from "./check.js";
import { tidy, untracked } from "./scope.js";
import { formatShape, sameShape, type Shape } from "./shape.js";
import { Tensor, onesLike } from "./tensor.js";
import * as E from "./ops/elementwise.js";
import * as V from "./ops/views.js";
import type { DType } from "@lowbit/dtypes";

/**
 * Computes the gradients of a node's inputs from the gradient of its output. `saved` are the tensors
 * the op asked to keep; `needs[i]` says whether input i wants a gradient (return null otherwise).
 * Returned tensors must have the input's shape; the engine owns them.
 */
export type BackwardFn = (grad: Tensor, saved: readonly Tensor[], needs: readonly boolean[]) => ReadonlyArray<Tensor | null>;

type Edge = { node: Node; leaf: null } | { node: null; leaf: Tensor };

let gradEnabled = true;
let nextSeq = 0;

export class Node {
  /** Creation order: a later node never feeds an earlier one. */
  readonly seq = nextSeq++;
  readonly op: string;
  edges: Array<Edge | null>;
  readonly inputMeta: ReadonlyArray<{ shape: Shape; dtype: DType } | null>;
  saved: Tensor[];
  backwardFn: BackwardFn | null;
  /** Set once backward has run through the node and released its saved tensors. */
  freed = false;
  #refs = 0;

  constructor(op: string, edges: Array<Edge | null>, inputMeta: Array<{ shape: Shape; dtype: DType } | null>, saved: Tensor[], fn: BackwardFn) {
    this.op = op;
    this.edges = edges;
    this.inputMeta = inputMeta;
    this.saved = saved;
    this.backwardFn = fn;
    for (const e of edges) e?.node?.ref();
  }

  ref(): void {
    this.#refs++;
  }

  /** Drops one reference; the last one releases the saved tensors and the input nodes. */
  unref(): void {
    if (--this.#refs > 0) return;
    this.releaseSaved();
    const edges = this.edges;
    this.edges = [];
    this.backwardFn = null;
    for (const e of edges) e?.node?.unref();
  }

  releaseSaved(): void {
    for (const t of this.saved) t.dispose();
    this.saved = [];
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording anything for autograd (inference, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs `fn` with recording on, even inside noGrad (checkpoint's recomputation). */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** @internal Whether any of the inputs would make an op record a node. */
export function needsGrad(...inputs: Array<Tensor | null | undefined>): boolean {
  return gradEnabled && inputs.some((t) => t !== null && t !== undefined && t.requiresGrad);
}

/**
 * @internal Records `out` as produced by `op` from `inputs` (nulls for non-tensor inputs) when grad
 * mode is on and some input requires grad; `save` are tensors the backward reads (aliased here, so
 * the caller may dispose its own handles). Returns `out`.
 */
export function record(op: string, out: Tensor, inputs: ReadonlyArray<Tensor | null | undefined>, backward: BackwardFn, save: readonly Tensor[] = [], force = false): Tensor {
  if (!gradEnabled) return out;
  const edges: Array<Edge | null> = inputs.map((t) => {
    if (t === null || t === undefined || !t.requiresGrad) return null;
    return t._node !== null ? { node: t._node, leaf: null } : { node: null, leaf: t };
  });
  if (!force && edges.every((e) => e === null)) return out;
  const meta = inputs.map((t) => (t === null || t === undefined ? null : { shape: t.shape, dtype: t.dtype }));
  const saved = untracked(() => save.map((t) => t._alias()));
  for (const s of saved) s.kept = true;
  const node = new Node(op, edges, meta, saved, backward);
  if (out._node !== null) out._node.unref();
  out._node = node;
  node.ref();
  return out;
}

/** Adds `g` (owned by the caller of this function afterwards: it is consumed) into `leaf.grad`. */
function accumulate(leaf: Tensor, g: Tensor): void {
  if (leaf.disposed) {
    g.dispose();
    throw new DisposedError(`backward: a leaf tensor that needs a gradient (shape ${formatShape(leaf.shape)}) was disposed before backward`);
  }
  let own = g;
  if (own.dtype !== leaf.dtype) {
    const c = V.cast(own, leaf.dtype);
    own.dispose();
    own = c;
  }
  if (own.device !== leaf.device) {
    const c = V.toDevice(own, leaf.device);
    own.dispose();
    own = c;
  }
  if (!own.isContiguous) {
    const c = V.contiguous(own);
    own.dispose();
    own = c;
  }
  const prev = leaf.grad;
  if (prev === null) {
    leaf.grad = own;
  } else {
    const sum = E.add(prev, own);
    own.dispose();
    leaf.grad = sum;
    prev.dispose();
  }
}

/** @internal The backward engine behind Tensor.backward. */
export function runBackward(root: Tensor, grad: Tensor | undefined, retainGraph: boolean): void {
  if (!root.requiresGrad) {
    throw new ArgumentError("backward: the tensor does not require grad (no input of the ops that made it had requiresGrad, or it was computed under noGrad)");
  }
  untracked(() =>
    noGrad(() => {
      let seed: Tensor;
      if (grad === undefined) {
        if (root.numel !== 1) throw new ShapeError(`backward: a gradient is needed for a non-scalar output of shape ${formatShape(root.shape)}`);
        seed = onesLike(root);
      } else {
        if (!(grad instanceof Tensor)) throw new ArgumentError(`backward: expected a Tensor for grad but received ${typeof grad}`);
        grad._assertLive("backward's grad");
        if (!sameShape(grad.shape, root.shape)) throw new ShapeError(`backward: expected grad of shape ${formatShape(root.shape)} but received ${formatShape(grad.shape)}`);
        if (grad.dtype !== root.dtype) throw new DTypeError(`backward: expected grad of dtype ${root.dtype} but received ${grad.dtype}`);
        if (grad.device !== root.device) throw new DTypeError(`backward: expected grad on ${root.device} but it is on ${grad.device}`);
        seed = grad._alias();
      }
      const rootNode = root._node;
      if (rootNode === null) {
        accumulate(root, seed);
        return;
      }
      propagate(rootNode, seed, retainGraph);
    }),
  );
}

function propagate(rootNode: Node, seed: Tensor, retainGraph: boolean): void {
  // Count, for every node reachable from the root, how many edges lead into it.
  const deps = new Map<Node, number>([[rootNode, 0]]);
  const stack = [rootNode];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (n.freed || n.backwardFn === null) {
      seed.dispose();
      throw new ArgumentError(
        `backward: the graph through "${n.op}" was already freed by an earlier backward (pass { retainGraph: true } to backward more than once)`,
      );
    }
    for (const e of n.edges) {
      if (e === null || e.node === null) continue;
      const seen = deps.has(e.node);
      deps.set(e.node, (deps.get(e.node) ?? 0) + 1);
      if (!seen) stack.push(e.node);
    }
  }
  const pending = new Map<Node, Tensor>([[rootNode, seed]]);
  // Ready nodes, processed latest-first (keeps few gradients alive at once).
  const ready: Node[] = [rootNode];
  try {
    while (ready.length > 0) {
      let best = 0;
      for (let i = 1; i < ready.length; i++) if (ready[i]!.seq > ready[best]!.seq) best = i;
      const node = ready.splice(best, 1)[0]!;
      const gOut = pending.get(node);
      pending.delete(node);
      const edges = node.edges;
      let grads: ReadonlyArray<Tensor | null> = [];
      if (gOut !== undefined) {
        const needs = edges.map((e) => e !== null);
        const fn = node.backwardFn!;
        grads = tidy(() => fn(gOut, node.saved, needs));
        if (grads.length !== edges.length) throw new Error(`autograd: backward of "${node.op}" returned ${grads.length} gradients for ${edges.length} inputs`);
        // Returned tensors may repeat each other or be gOut itself: give each edge its own handle.
        const used = new Set<Tensor>([gOut]);
        grads = grads.map((g) => {
          if (g === null) return null;
          if (used.has(g)) return g._alias();
          used.add(g);
          return g;
        });
        if (!grads.includes(gOut)) gOut.dispose();
      }
      for (let i = 0; i < edges.length; i++) {
        const e = edges[i]!;
        const g = grads[i] ?? null;
        if (e === null) {
          g?.dispose();
          continue;
        }
        if (g !== null) {
          const meta = node.inputMeta[i]!;
          if (!sameShape(g.shape, meta.shape)) {
            g.dispose();
            throw new ShapeError(`autograd: backward of "${node.op}" gave input ${i} a gradient of shape ${formatShape(g.shape)} for shape ${formatShape(meta.shape)}`);
          }
          if (e.leaf !== null) {
            accumulate(e.leaf, g);
          } else {
            const prev = pending.get(e.node);
            if (prev === undefined) pending.set(e.node, g);
            else {
              pending.set(e.node, addGrads(prev, g));
            }
          }
        }
        if (e.node !== null) {
          const d = deps.get(e.node)! - 1;
          deps.set(e.node, d);
          if (d === 0) ready.push(e.node);
        }
      }
      if (!retainGraph) {
        node.releaseSaved();
        node.freed = true;
      }
    }
  } finally {
    for (const g of pending.values()) g.dispose();
  }
}

/** prev + g, consuming both; float16/bfloat16 gradients are summed in their own dtype. */
function addGrads(prev: Tensor, g: Tensor): Tensor {
  if (!isFloatDType(prev.dtype)) throw new DTypeError(`autograd: cannot sum gradients of dtype ${prev.dtype}`);
  const same = g.dtype === prev.dtype ? g : V.cast(g, prev.dtype);
  const s = E.add(prev, same);
  if (same !== g) same.dispose();
  prev.dispose();
  g.dispose();
  return s;
}
