// Typed errors shared by every lowbit package: each has a stable `code` and a message that names the
// argument, what was expected and what was received.

export type LowbitErrorCode =
  | "ERR_ARGUMENT"
  | "ERR_DTYPE"
  | "ERR_SHAPE"
  | "ERR_QUANT_STATE"
  | "ERR_DISPOSED"
  | "ERR_DEVICE"
  | "ERR_OUT_OF_MEMORY"
  | "ERR_FILE"
  | "ERR_NATIVE";

/** Base class of every error lowbit throws on purpose. */
export class LowbitError extends Error {
  readonly code: LowbitErrorCode;
  constructor(code: LowbitErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    Object.defineProperty(this, "name", { value: new.target.name, enumerable: false, configurable: true });
  }
}

/** A function argument has the wrong type, value or range. */
export class ArgumentError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_ARGUMENT", message, options);
  }
}

/** A dtype is unknown or not supported where it was used. */
export class DTypeError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_DTYPE", message, options);
  }
}

/** Shapes or lengths disagree. */
export class ShapeError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_SHAPE", message, options);
  }
}

/** A serialized quantization state is malformed or inconsistent. */
export class QuantStateError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_QUANT_STATE", message, options);
  }
}

/** Describes a received value for an error message: `128 (number)`, `Int8Array(64)`, `"nf5" (string)`. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (ArrayBuffer.isView(value)) {
    const name = value.constructor.name;
    const len = "length" in value ? (value as { length: number }).length : value.byteLength;
    return `${name}(${len})`;
  }
  if (Array.isArray(value)) return `Array(${value.length})`;
  if (typeof value === "string") return `${JSON.stringify(value)} (string)`;
  if (typeof value === "object") return `${value.constructor?.name ?? "Object"} (object)`;
  return `${String(value)} (${typeof value})`;
}

/** The one message shape: "Expected <what> for <name> but received <value>". */
export function expected(what: string, name: string, value: unknown): string {
  return `Expected ${what} for ${name} but received ${describe(value)}`;
}
