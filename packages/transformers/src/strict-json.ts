// A strict RFC 8259 JSON parser for untrusted headers (safetensors): rejects duplicate keys (JSON.parse keeps the
// last one silently), keeps each number's source text so integers can be told apart from `2.0` / `1e3`, and limits
// nesting depth so hostile input cannot overflow the stack. It throws StrictJsonError with the byte position.

export type StrictJsonValue = null | boolean | string | StrictJsonNumber | StrictJsonValue[] | StrictJsonObject;

/** A JSON number with its source text (`raw`), so callers can demand an integer literal. */
export class StrictJsonNumber {
  constructor(
    readonly raw: string,
    readonly value: number,
  ) {}
  /** True when the literal is a non-negative integer without fraction or exponent (`0`, `42`; not `-1`, `2.0`, `1e3`). */
  isUnsignedIntegerLiteral(): boolean {
    return /^(0|[1-9][0-9]*)$/.test(this.raw);
  }
}

/** A JSON object as an ordered Map (insertion order = file order). */
export type StrictJsonObject = Map<string, StrictJsonValue>;

export class StrictJsonError extends Error {
  constructor(
    message: string,
    readonly position: number,
    /** For a duplicate key: the key and the nesting depth of its object (1 = the root object). */
    readonly duplicate?: { readonly key: string; readonly depth: number },
  ) {
    super(`${message} at position ${position}`);
  }
}

const MAX_DEPTH = 64;

/** Parses `text` as exactly one JSON value surrounded by optional whitespace. */
export function parseStrictJson(text: string): StrictJsonValue {
  let pos = 0;

  const fail = (message: string): never => {
    throw new StrictJsonError(message, pos);
  };
  const skipWs = () => {
    while (pos < text.length) {
      const c = text.charCodeAt(pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) pos++;
      else break;
    }
  };

  const parseString = (): string => {
    // Caller checked text[pos] === '"'.
    pos++;
    let out = "";
    let chunkStart = pos;
    for (;;) {
      if (pos >= text.length) fail("unterminated string");
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        out += text.slice(chunkStart, pos);
        pos++;
        return out;
      }
      if (c < 0x20) fail("control character in string");
      if (c === 0x5c) {
        out += text.slice(chunkStart, pos);
        pos++;
        const e = text[pos];
        switch (e) {
          case '"':
            out += '"';
            break;
          case "\\":
            out += "\\";
            break;
          case "/":
            out += "/";
            break;
          case "b":
            out += "\b";
            break;
          case "f":
            out += "\f";
            break;
          case "n":
            out += "\n";
            break;
          case "r":
            out += "\r";
            break;
          case "t":
            out += "\t";
            break;
          case "u": {
            const hex = text.slice(pos + 1, pos + 5);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
            const unit = parseInt(hex, 16);
            pos += 4;
            // Like serde_json: a \u escape must not leave a lone UTF-16 surrogate.
            if (unit >= 0xdc00 && unit <= 0xdfff) fail("lone low surrogate in \\u escape");
            if (unit >= 0xd800 && unit <= 0xdbff) {
              const low = /^\\u([dD][c-fC-F][0-9a-fA-F]{2})/.exec(text.slice(pos + 1, pos + 7));
              if (low === null) fail("lone high surrogate in \\u escape");
              out += String.fromCharCode(unit, parseInt((low as RegExpExecArray)[1] as string, 16));
              pos += 6;
              break;
            }
            out += String.fromCharCode(unit);
            break;
          }
          default:
            fail("bad escape");
        }
        pos++;
        chunkStart = pos;
        continue;
      }
      pos++;
    }
  };

  const parseNumber = (): StrictJsonNumber => {
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(pos, pos + 400));
    if (m === null) return fail("bad number");
    const raw = m[0];
    if (raw.length === 400) fail("number literal too long");
    pos += raw.length;
    return new StrictJsonNumber(raw, Number(raw));
  };

  const parseValue = (depth: number): StrictJsonValue => {
    if (depth > MAX_DEPTH) fail(`nesting deeper than ${MAX_DEPTH}`);
    skipWs();
    if (pos >= text.length) fail("unexpected end of input");
    const c = text[pos];
    if (c === "{") {
      pos++;
      const obj: StrictJsonObject = new Map();
      skipWs();
      if (text[pos] === "}") {
        pos++;
        return obj;
      }
      for (;;) {
        skipWs();
        if (text[pos] !== '"') fail("expected a string key");
        const keyPos = pos;
        const key = parseString();
        if (obj.has(key)) throw new StrictJsonError(`duplicate key ${JSON.stringify(key)}`, keyPos, { key, depth: depth + 1 });
        skipWs();
        if (text[pos] !== ":") fail("expected ':'");
        pos++;
        obj.set(key, parseValue(depth + 1));
        skipWs();
        if (text[pos] === ",") {
          pos++;
          continue;
        }
        if (text[pos] === "}") {
          pos++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      pos++;
      const arr: StrictJsonValue[] = [];
      skipWs();
      if (text[pos] === "]") {
        pos++;
        return arr;
      }
      for (;;) {
        arr.push(parseValue(depth + 1));
        skipWs();
        if (text[pos] === ",") {
          pos++;
          continue;
        }
        if (text[pos] === "]") {
          pos++;
          return arr;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return parseString();
    if (text.startsWith("true", pos)) {
      pos += 4;
      return true;
    }
    if (text.startsWith("false", pos)) {
      pos += 5;
      return false;
    }
    if (text.startsWith("null", pos)) {
      pos += 4;
      return null;
    }
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return parseNumber();
    return fail(`unexpected character ${JSON.stringify(c)}`);
  };

  const value = parseValue(0);
  skipWs();
  if (pos !== text.length) fail("trailing characters after the JSON value");
  return value;
}

export function isStrictJsonObject(v: StrictJsonValue | undefined): v is StrictJsonObject {
  return v instanceof Map;
}

/** Describes a parsed value for error messages: `"abc" (string)`, `[2, 3] (array)`, `2.5 (number)`. */
export function describeStrictJson(v: StrictJsonValue | undefined): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (typeof v === "boolean") return `${v} (boolean)`;
  if (typeof v === "string") return `${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)} (string)`;
  if (v instanceof StrictJsonNumber) return `${v.raw} (number)`;
  if (Array.isArray(v)) {
    const items = v.slice(0, 8).map((x) => (x instanceof StrictJsonNumber ? x.raw : describeStrictJson(x)));
    return `[${items.join(", ")}${v.length > 8 ? ", …" : ""}] (array)`;
  }
  return "an object";
}
