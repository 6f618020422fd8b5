// The error classes @lowbit/kernels throws (native code throws them too: index.ts hands them to the
// addon's initialize()). All extend LowbitError from @lowbit/dtypes and carry a stable `code`.
import { LowbitError } from "@lowbit/dtypes";

export { ArgumentError, DTypeError, LowbitError, ShapeError } from "@lowbit/dtypes";

/** A storage (or an object owning one) was used after dispose(). */
export class DisposedError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_DISPOSED", message, options);
  }
}

/** A device is unknown, unavailable, mismatched, or an operation is not implemented on it. */
export class DeviceError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_DEVICE", message, options);
  }
}

/** An allocation failed. The process keeps working; free something and retry. */
export class OutOfMemoryError extends LowbitError {
  /** Bytes the failed allocation asked for. */
  readonly requestedBytes: number;
  /** Bytes the device (or the OS, for cpu) reported free at the time; -1 when unknown. */
  readonly freeBytes: number;
  constructor(message: string, requestedBytes: number, freeBytes: number, options?: { cause?: unknown }) {
    super("ERR_OUT_OF_MEMORY", message, options);
    this.requestedBytes = requestedBytes;
    this.freeBytes = freeBytes;
  }
}

/** A file could not be opened, mapped or read (the message names the file and the OS reason). */
export class FileError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_FILE", message, options);
  }
}

/** The native addon could not be loaded; the message lists every path tried and the command that fixes it. */
export class KernelsLoadError extends LowbitError {
  /** Each candidate that was tried, with the reason it failed. */
  readonly attempts: readonly { readonly candidate: string; readonly error: string }[];
  constructor(message: string, attempts: readonly { candidate: string; error: string }[], options?: { cause?: unknown }) {
    super("ERR_NATIVE", message, options);
    this.attempts = attempts;
  }
}
