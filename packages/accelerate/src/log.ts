// Where the planner's warnings and info messages go: a caller-supplied logger, or by default
// process.emitWarning for warnings (code LOWBIT_ACCELERATE) and nowhere for info.

/** Receives the messages accelerate logs (warnings: a map that may OOM, unknown keys; info: why a device stayed empty). */
export interface Logger {
  warn?(message: string): void;
  info?(message: string): void;
}

export function logWarning(logger: Logger | undefined, message: string): void {
  if (logger?.warn !== undefined) logger.warn(message);
  else process.emitWarning(message, { type: "LowbitAccelerateWarning", code: "LOWBIT_ACCELERATE" });
}

export function logInfo(logger: Logger | undefined, message: string): void {
  logger?.info?.(message);
}
