// Python `json.dumps` output for config files transformers writes (`indent=2, sort_keys=True`): Python's float
// repr for values marked as floats (6.0, 1e-05), `ensure_ascii` escapes, and Python's separators and layout.
// JavaScript numbers do not remember whether they were floats, so callers wrap float fields in PyFloat.

import { pyFloatRepr } from "@lowbit/dtypes";

/** A number that Python holds as a float (written `6.0`, not `6`). */
export class PyFloat {
  constructor(readonly value: number) {}
}

export type PyJsonValue = null | boolean | number | string | PyFloat | readonly PyJsonValue[] | { readonly [key: string]: PyJsonValue };

/** `json.dumps(s)` with `ensure_ascii=True`: non-ASCII as \uXXXX (UTF-16 units, lowercase hex). */
function pyString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += "\\\\";
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c === 0x09) out += "\\t";
    else if (c === 0x08) out += "\\b";
    else if (c === 0x0c) out += "\\f";
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += s[i];
  }
  return `${out}"`;
}

/** Formats `value` as Python's `json.dumps(value, indent=indent, sort_keys=sortKeys)` does. */
export function pyJsonDumps(value: PyJsonValue, options: { indent?: number; sortKeys?: boolean } = {}): string {
  const indent = options.indent ?? 2;
  const sortKeys = options.sortKeys ?? true;
  const walk = (v: PyJsonValue, level: number): string => {
    if (v === null) return "null";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "string") return pyString(v);
    if (v instanceof PyFloat) return pyFloatRepr(v.value);
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return pyFloatRepr(v);
      // Python ints print all digits; JavaScript switches to exponent form at 1e21.
      if (Number.isInteger(v)) return Math.abs(v) >= 1e21 ? BigInt(v).toString() : String(v);
      return pyFloatRepr(v);
    }
    const pad = " ".repeat(indent * (level + 1));
    const close = " ".repeat(indent * level);
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[\n${v.map((x) => pad + walk(x, level + 1)).join(",\n")}\n${close}]`;
    }
    const obj = v as { readonly [key: string]: PyJsonValue };
    const keys = Object.keys(obj);
    if (keys.length === 0) return "{}";
    if (sortKeys) keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return `{\n${keys.map((k) => `${pad}${pyString(k)}: ${walk(obj[k] as PyJsonValue, level + 1)}`).join(",\n")}\n${close}}`;
  };
  return walk(value, 0);
}
