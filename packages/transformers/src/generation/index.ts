// Text generation for causal LMs: generate() / generateStream(), transformers' logits processors, stopping criteria
// and streamers, the CausalLM contract a model implements, and ToyCausalLM (a tiny deterministic model for tests).

export * from "./types.js";
export * from "./logits-process.js";
export * from "./stopping-criteria.js";
export * from "./streamers.js";
export * from "./generate.js";
export * from "./stream.js";
export { ToyCausalLM, type ToyCausalLMOptions, type ToyForwardInputs } from "./toy-model.js";
