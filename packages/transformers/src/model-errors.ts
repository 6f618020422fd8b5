// Typed errors of model loading: a checkpoint whose tensors disagree with the architecture (missing or unexpected
// keys, a wrong shape or dtype, a broken quantization state) or a load option that cannot be honoured. File-level
// corruption (truncated files, bad headers, bad shard indexes) is a SafetensorsError from ./safetensors.ts, and a
// bad config.json (unknown model_type or quant_method) is a ConfigError; all three extend LowbitError.

import { LowbitError } from "@lowbit/dtypes";

/** A checkpoint does not fit the model it is loaded into; names the file and, when there is one, the tensor. */
export class ModelLoadError extends LowbitError {
  /** The checkpoint file (or folder) the error is about. */
  readonly file: string;
  /** The tensor the error is about, when there is one. */
  readonly tensor: string | undefined;
  /** Keys the architecture needs that no checkpoint file holds (empty unless this is a key-set error). */
  readonly missingKeys: readonly string[];
  /** Keys the checkpoint holds that the architecture does not use (empty unless this is a key-set error). */
  readonly unexpectedKeys: readonly string[];

  constructor(
    file: string,
    message: string,
    options?: { tensor?: string; missingKeys?: readonly string[]; unexpectedKeys?: readonly string[]; cause?: unknown },
  ) {
    const where = options?.tensor === undefined ? file : `${file}, tensor ${JSON.stringify(options.tensor)}`;
    super("ERR_FILE", `${where}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.file = file;
    this.tensor = options?.tensor;
    this.missingKeys = Object.freeze([...(options?.missingKeys ?? [])]);
    this.unexpectedKeys = Object.freeze([...(options?.unexpectedKeys ?? [])]);
  }
}
