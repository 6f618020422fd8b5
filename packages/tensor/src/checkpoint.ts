// Gradient checkpointing: run a block forward without keeping its intermediates, and recompute it
// during backward (torch.utils.checkpoint, reentrant flavour). Parameters used inside the block get
// their gradients from the recomputation's own backward; the block's inputs get theirs returned to
// the outer graph. The default generator's state is replayed so that dropout masks match.

import { ArgumentError, expected } from "@lowbit/dtypes";
import { enableGrad, isGradEnabled, noGrad, record } from "./autograd.js";
import { defaultGenerator } from "./random.js";
import { tidy } from "./scope.js";
import { Tensor } from "./tensor.js";

/**
 * Returns fn(...inputs). With grad enabled, the forward runs under noGrad (no intermediates are kept,
 * only the inputs), and backward reruns fn to get the gradients. fn must return one Tensor and must be
 * deterministic apart from the default generator.
 */
export function checkpoint(fn: (...inputs: Tensor[]) => Tensor, ...inputs: Tensor[]): Tensor {
  if (typeof fn !== "function") throw new ArgumentError(expected("a function", "checkpoint's fn", fn));
  inputs.forEach((t, i) => {
    if (!(t instanceof Tensor)) throw new ArgumentError(expected("a Tensor", `checkpoint's inputs[${i}]`, t));
    t._assertLive(`checkpoint's inputs[${i}]`);
  });
  if (!isGradEnabled()) return fn(...inputs);
  const rngState = defaultGenerator.getState();
  const out = noGrad(() => fn(...inputs));
  if (!(out instanceof Tensor)) throw new ArgumentError(expected("a Tensor", "checkpoint's fn result", out));
  const requires = inputs.map((t) => t.requiresGrad);
  return record(
    "checkpoint",
    out,
    inputs,
    (g, saved, needs) => {
      const after = defaultGenerator.getState();
      defaultGenerator.setState(rngState);
      try {
        return tidy(() =>
          enableGrad(() => {
            // Fresh leaves standing in for the inputs, so their gradients can be read back.
            const leaves = saved.map((s, i) => {
              const leaf = s._alias();
              if (requires[i]) leaf.requiresGrad = true;
              return leaf;
            });
            const y = fn(...leaves);
            if (!(y instanceof Tensor)) throw new ArgumentError(expected("a Tensor", "checkpoint's fn result (recomputed)", y));
            if (y.requiresGrad) y.backward(g);
            return leaves.map((leaf, i) => {
              const gi = needs[i] ? leaf.grad : null;
              if (gi !== null) {
                gi.kept = false;
                leaf.grad = null;
              }
              return gi;
            });
          }),
        );
      } finally {
        defaultGenerator.setState(after);
      }
    },
    inputs,
    true,
  );
}
