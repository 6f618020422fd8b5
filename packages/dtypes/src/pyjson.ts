// Python's `json.dumps` byte for byte, for files the Python stack writes and reads (transformers' config.json
// with `indent=2, sort_keys=True`, accelerate's offload index.json with `indent=2`): ensure_ascii escapes,
// "," / ": " separators with one element per line, Python's float repr. JavaScript numbers do not remember
// whether they were floats, so callers mark float fields with PyFloat (written `6.0`, not `6`).

import { ArgumentError } from "./errors.js";
import { pyFloatRepr } from "./pyfloat.js";

/** A number that Python holds as a float (written `6.0`, not `6`). */
export class PyFloat {
  constructor(readonly value: number) {}
}

export type PyJsonValue =
  | null
  | boolean
  | number
  | string
  | PyFloat
  | readonly PyJsonValue[]
  | ReadonlyMap<string, PyJsonValue>
  | { readonly [key: string]: PyJsonValue };

const SHORT_ESCAPES: Readonly<Record<number, string>> = { 0x22: '\\"', 0x5c: "\\\\", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0c: "\\f" };

/** A JSON string literal as Python's ensure_ascii encoder writes it (UTF-16 units as \uXXXX, lowercase hex). */
export function pyJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const short = SHORT_ESCAPES[c];
    if (short !== undefined) out += short;
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += s[i];
  }
  return `${out}"`;
}

/**
 * Formats `value` as Python's `json.dumps(value, indent=indent, sort_keys=sortKeys)` does (defaults: indent 2,
 * sortKeys false, i.e. insertion order; Maps keep their order). Integers print all their digits; other numbers
 * and PyFloat use Python's float repr.
 */
export function pyJsonDumps(value: PyJsonValue, options: { indent?: number; sortKeys?: boolean } = {}): string {
  const indent = options.indent ?? 2;
  const sortKeys = options.sortKeys ?? false;
  const walk = (v: PyJsonValue, level: number, path: string): string => {
    if (v === null) return "null";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "string") return pyJsonString(v);
    if (v instanceof PyFloat) return pyFloatRepr(v.value);
    if (typeof v === "number") {
      // Python ints print all digits; JavaScript switches to exponent form at 1e21.
      if (Number.isInteger(v)) return Math.abs(v) >= 1e21 ? BigInt(v).toString() : String(v);
      return pyFloatRepr(v);
    }
    const pad = " ".repeat(indent * (level + 1));
    const close = " ".repeat(indent * level);
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[\n${v.map((x, i) => pad + walk(x as PyJsonValue, level + 1, `${path}[${i}]`)).join(",\n")}\n${close}]`;
    }
    if (typeof v !== "object") throw new ArgumentError(`pyJsonDumps: ${path} is a ${typeof v}, which JSON cannot hold`);
    const entries: Array<[string, PyJsonValue]> = v instanceof Map ? [...(v as ReadonlyMap<string, PyJsonValue>).entries()] : Object.entries(v);
    if (entries.length === 0) return "{}";
    for (const [k] of entries) if (typeof k !== "string") throw new ArgumentError(`pyJsonDumps: keys must be strings, but ${path} has a ${typeof k} key`);
    if (sortKeys) entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{\n${entries.map(([k, x]) => `${pad}${pyJsonString(k)}: ${walk(x, level + 1, `${path}[${JSON.stringify(k)}]`)}`).join(",\n")}\n${close}}`;
  };
  return walk(value, 0, "value");
}
