// pyJsonDumps: Python's json.dumps layout, escapes and float forms, byte for byte.

import { describe, expect, it } from "vitest";
import { ArgumentError, PyFloat, pyJsonDumps } from "../src/index.js";

describe("pyJsonDumps", () => {
  it("writes json.dumps(indent=2, sort_keys=True) layout and float forms (transformers' config.json)", () => {
    const text = pyJsonDumps({ b: [1, "é"], a: new PyFloat(1e-5), c: {}, d: [], e: new PyFloat(10000), f: 0.02, g: 2 ** 70 }, { sortKeys: true });
    expect(text).toBe('{\n  "a": 1e-05,\n  "b": [\n    1,\n    "\\u00e9"\n  ],\n  "c": {},\n  "d": [],\n  "e": 10000.0,\n  "f": 0.02,\n  "g": 1180591620717411303424\n}');
  });

  it("keeps insertion order by default, Maps included, and escapes like ensure_ascii (accelerate's index.json)", () => {
    expect(pyJsonDumps({ "t\u00e9\u{1F600}\u007f\n": [1, 2.5, 1e-5, true, null, {}] })).toBe(
      '{\n  "t\\u00e9\\ud83d\\ude00\\u007f\\n": [\n    1,\n    2.5,\n    1e-05,\n    true,\n    null,\n    {}\n  ]\n}',
    );
    expect(pyJsonDumps(new Map([["10", 1], ["2", 2]]))).toBe('{\n  "10": 1,\n  "2": 2\n}');
  });

  it("rejects values JSON cannot hold", () => {
    expect(() => pyJsonDumps({ f: (() => 1) as unknown as number })).toThrowError(ArgumentError);
  });
});
