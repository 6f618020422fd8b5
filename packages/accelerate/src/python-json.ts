// Python's `json.dump(obj, f, indent=2)` byte for byte: ensure_ascii escapes (every character outside
// space..tilde as \uXXXX, lowercase hex, surrogate pairs for astral characters), "," / ": " separators,
// one element per line, no trailing newline, insertion order. accelerate writes the offload index.json
// this way; writing the same bytes lets either side rewrite the other's folder without diffs.
import { ArgumentError, pyFloatRepr } from "@lowbit/dtypes";

const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\b": "\\b",
  "\f": "\\f",
};

/** A JSON string literal as Python's ensure_ascii encoder writes it. */
export function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) {
      out += short;
      continue;
    }
    // UTF-16 code units: an astral character is already a surrogate pair, which is what Python writes.
    const code = s.charCodeAt(i);
    out += code < 0x20 || code > 0x7e ? `\\u${code.toString(16).padStart(4, "0")}` : ch;
  }
  return `${out}"`;
}

function encode(value: unknown, indent: number, level: number, path: string): string {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "number") return Number.isInteger(value) && Math.abs(value) < 2 ** 63 ? String(BigInt(value)) : pyFloatRepr(value);
  if (typeof value === "string") return pythonJsonString(value);
  const inner = `\n${" ".repeat(indent * (level + 1))}`;
  const outer = `\n${" ".repeat(indent * level)}`;
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[${inner}${value.map((v, i) => encode(v, indent, level + 1, `${path}[${i}]`)).join(`,${inner}`)}${outer}]`;
  }
  if (typeof value === "object") {
    const entries: Array<[unknown, unknown]> = value instanceof Map ? [...value.entries()] : Object.entries(value as object);
    if (entries.length === 0) return "{}";
    const parts = entries.map(([k, v]) => {
      if (typeof k !== "string") throw new ArgumentError(`pythonJsonDumps: keys must be strings, but ${path} has a ${typeof k} key`);
      return `${pythonJsonString(k)}: ${encode(v, indent, level + 1, `${path}[${JSON.stringify(k)}]`)}`;
    });
    return `{${inner}${parts.join(`,${inner}`)}${outer}}`;
  }
  throw new ArgumentError(`pythonJsonDumps: ${path} is a ${typeof value}, which JSON cannot hold`);
}

/** `json.dumps(value, indent=indent)` for null, booleans, numbers, strings, arrays, plain objects and Maps. */
export function pythonJsonDumps(value: unknown, indent = 2): string {
  return encode(value, indent, 0, "value");
}
