// tidy(): scoped, explicit memory management. Every tensor created while a tidy scope is open is
// recorded in that scope; when the scope's function returns, every recorded tensor is disposed except
// the ones it returned (which move to the enclosing scope) and the ones marked with keep().

import { ArgumentError, expected } from "@lowbit/dtypes";

/** What a scope tracks: anything with dispose() that carries the brand below (Tensor does). */
export interface Scoped {
  readonly [SCOPED]: true;
  /** Set by keep(): never disposed by a scope. */
  kept: boolean;
  dispose(): void;
}

export const SCOPED: unique symbol = Symbol("lowbit.scoped");

let stack: Array<Set<Scoped>> = [];

function isScoped(value: unknown): value is Scoped {
  return typeof value === "object" && value !== null && (value as Partial<Scoped>)[SCOPED] === true;
}

/** Records a newly created tensor in the innermost open scope, if any. */
export function track(t: Scoped): void {
  const top = stack[stack.length - 1];
  if (top !== undefined) top.add(t);
}

/** Collects every scoped object reachable through arrays, Maps, Sets and plain objects. */
function collect(value: unknown, out: Set<Scoped>, seen: Set<unknown>): void {
  if (typeof value !== "object" || value === null || seen.has(value)) return;
  seen.add(value);
  if (isScoped(value)) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, seen);
  } else if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, seen);
  } else if (value instanceof Set) {
    for (const v of value) collect(v, out, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collect(v, out, seen);
  }
}

/**
 * Runs `fn` and disposes every tensor created inside it, except those in its result (a tensor, or
 * arrays / Maps / plain objects of them) and those passed to keep(). Returned tensors are handed to
 * the enclosing tidy, if any. `fn` must be synchronous: a tensor created after an await could not be
 * attributed to the right scope.
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== "function") throw new ArgumentError(expected("a function", "tidy's fn", fn));
  const scope = new Set<Scoped>();
  stack.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    stack.pop();
    for (const t of scope) if (!t.kept) t.dispose();
    throw err;
  }
  stack.pop();
  if (result instanceof Promise) {
    for (const t of scope) if (!t.kept) t.dispose();
    throw new ArgumentError("tidy: fn returned a Promise; tidy only accepts synchronous functions (dispose async results explicitly)");
  }
  const survivors = new Set<Scoped>();
  collect(result, survivors, new Set());
  for (const t of scope) if (!t.kept && !survivors.has(t)) t.dispose();
  const parent = stack[stack.length - 1];
  if (parent !== undefined) for (const t of survivors) if (!t.kept) parent.add(t);
  return result;
}

/** Exempts a tensor from every tidy scope (it must then be disposed explicitly). Returns it. */
export function keep<T extends Scoped>(t: T): T {
  t.kept = true;
  for (const scope of stack) scope.delete(t);
  return t;
}

/** Runs `fn` with no scope open, so nothing it creates is tracked (autograd uses this for gradients). */
export function untracked<T>(fn: () => T): T {
  const saved = stack;
  stack = [];
  try {
    return fn();
  } finally {
    stack = saved;
  }
}
