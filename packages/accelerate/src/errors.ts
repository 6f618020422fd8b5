// The typed errors @lowbit/accelerate throws. They extend the shared classes of @lowbit/dtypes /
// @lowbit/kernels (so `code` stays one of lowbit's stable codes) and add the names a caller needs:
// the module or tensors a device map leaves uncovered, the path of a bad model description, the
// offload folder and tensor a file error is about.
import { ArgumentError } from "@lowbit/dtypes";
import { FileError } from "@lowbit/kernels";

/**
 * A device map is unusable for a model: it leaves state-dict keys without a device, splits a module
 * whose class is marked no-split, or names an invalid device. `code` is "ERR_ARGUMENT".
 */
export class DeviceMapError extends ArgumentError {
  /** The module the problem is about ("" for the root), or null when the problem is a set of tensors. */
  readonly moduleName: string | null;
  /** The state-dict keys (or device-map keys) the message lists. */
  readonly keys: readonly string[];
  constructor(message: string, details: { moduleName?: string | null; keys?: readonly string[] } = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.moduleName = details.moduleName ?? null;
    this.keys = details.keys ?? [];
  }
}

/** A model description (or a Module being described) is malformed at `path`. `code` is "ERR_ARGUMENT". */
export class ModelDescriptionError extends ArgumentError {
  /** Where in the description: e.g. `children["model"].parameters["weight"].shape`. */
  readonly path: string;
  constructor(message: string, path: string, options?: { cause?: unknown }) {
    super(message, options);
    this.path = path;
  }
}

/**
 * Reading or writing an offload folder failed, or its content contradicts index.json (wrong size,
 * unknown dtype, malformed entry). `code` is "ERR_FILE".
 */
export class OffloadError extends FileError {
  /** The offload folder (or file) involved. */
  readonly path: string;
  /** The tensor the error is about, when there is one. */
  readonly tensorName: string | null;
  constructor(message: string, path: string, tensorName: string | null = null, options?: { cause?: unknown }) {
    super(message, options);
    this.path = path;
    this.tensorName = tensorName;
  }
}
