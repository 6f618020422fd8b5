// Typed errors of @lowbit/transformers. Every one extends @lowbit/dtypes' LowbitError (stable `code`), and the
// file errors name the file (and the tensor or key) they are about.

import { LowbitError } from "@lowbit/dtypes";

/** A safetensors file (or shard index) is malformed, truncated or inconsistent. */
export class SafetensorsError extends LowbitError {
  /** The file the error is about. */
  readonly file: string;
  /** The tensor the error is about, when there is one. */
  readonly tensor: string | undefined;
  constructor(file: string, message: string, options?: { tensor?: string; cause?: unknown }) {
    const where = options?.tensor === undefined ? file : `${file}, tensor ${JSON.stringify(options.tensor)}`;
    super("ERR_FILE", `${where}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.file = file;
    this.tensor = options?.tensor;
  }
}

/**
 * A file of a model folder (config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
 * chat_template.jinja, ...) is missing, is not valid JSON, or holds a value of the wrong type or range.
 */
export class ConfigError extends LowbitError {
  readonly file: string;
  /** The offending key, dotted for nested keys (`rope_parameters.factor`). */
  readonly key: string | undefined;
  constructor(file: string, message: string, options?: { key?: string; cause?: unknown }) {
    const where = options?.key === undefined ? file : `${file}, ${options.key}`;
    super("ERR_FILE", `${where}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.file = file;
    this.key = options?.key;
  }
}

/** A chat template failed to render (bad template, or the template itself called `raise_exception`). */
export class ChatTemplateError extends LowbitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_ARGUMENT", message, options);
  }
}
