# Makes packages/dtypes/test/fixtures/float-torch.json: torch's float32 -> float16 / bfloat16 /
# float8_e4m3fn / float8_e5m2 results for hand-picked edge cases and seeded random float32 bit patterns,
# plus torch's float32 decoding of float8 / float16 bit patterns, for packages/dtypes/test/float.test.ts.
# Run from the repository root: python3 tooling/scripts/gen-float-fixtures.py  (needs torch and numpy).
#
# torch is pinned to its baseline (non-AVX) CPU kernels with ATEN_CPU_CAPABILITY=default so the output
# does not depend on the machine: the only difference between those and the AVX2 / AVX-512 kernels is the
# bfloat16 of a NaN (0x7fc0 for every NaN from the baseline kernel, 0xffff from the AVX ones). Arrays are
# padded so every element goes through torch's vector loop (see `padded`).

import os

os.environ["ATEN_CPU_CAPABILITY"] = "default"

import json  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "packages", "dtypes", "test", "fixtures", "float-torch.json")
rng = np.random.default_rng(20240611)


def f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def around(v_bits):
    """A float32 bit pattern and its neighbours one float32 ulp either side (same sign)."""
    return [v_bits - 1, v_bits, v_bits + 1]


def format_cases(decode, codes):
    """For each positive finite code: its value, the midpoint to the next code, each +-1 float32 ulp."""
    out = []
    for c in codes:
        lo, hi = decode(c), decode(c + 1)
        out += around(bits(lo)) if lo != 0 else [0, 1]
        if np.isfinite(hi):
            out += around(bits((lo + hi) / 2))  # midpoints of adjacent formats' values are exact in float32
    return out


def dec_f16(c):
    return float(np.array([c], dtype=np.uint16).view(np.float16)[0])


def dec_bf16(c):
    return f32(c << 16)


def dec_f8(dt):
    def d(c):
        return torch.tensor([c], dtype=torch.uint8).view(dt).float().item()

    return d


# Specials: zeros, infinities, NaNs (quiet, signalling, with payloads), float32 extremes and subnormals.
specials = [
    0x00000000, 0x80000000, 0x7F800000, 0xFF800000,
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FA00000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F812345, 0x7FC02000, 0xFFD55555,
    0x7F7FFFFF, 0xFF7FFFFF, 0x00800000, 0x80800000, 0x00000001, 0x80000001, 0x007FFFFF, 0x3F800000, 0xBF800000,
]
positive = []
# Every positive finite code of each float8 format, a spread of float16 / bfloat16 codes.
positive += format_cases(dec_f8(torch.float8_e4m3fn), range(0, 0x7E + 1))
positive += format_cases(dec_f8(torch.float8_e5m2), range(0, 0x7B + 1))
f16_codes = sorted(set(list(range(0, 12)) + list(range(0x3F0, 0x410)) + list(range(0x7BF0, 0x7C00)) + rng.integers(0, 0x7C00, 40).tolist()))
positive += format_cases(dec_f16, f16_codes)
bf16_codes = sorted(set(list(range(0, 12)) + list(range(0x7F, 0x84)) + list(range(0x7F70, 0x7F80)) + rng.integers(0, 0x7F80, 40).tolist()))
positive += format_cases(dec_bf16, bf16_codes)
# Overflow thresholds: 448 / 464 / 480 (e4m3fn), 57344 / 61440 / 65536 (e5m2), 65504 / 65520 (float16).
for v in [448.0, 456.0, 464.0, 472.0, 480.0, 512.0, 57344.0, 61440.0, 65504.0, 65520.0, 65536.0, 1e30]:
    positive += around(bits(v))
# Random: uniform bit patterns, and log-uniform magnitudes over the float8 / float16 ranges, both signs.
uniform = rng.integers(0, 1 << 32, 600, dtype=np.uint64).tolist()
mag = np.exp2(rng.uniform(-28, 19, 1000)).astype(np.float32)
sign = (rng.integers(0, 2, 1000) * 2 - 1).astype(np.float32)
logu = (mag * sign).view(np.uint32).tolist()

inputs = specials + positive + [x ^ 0x80000000 for x in positive] + uniform + logu
seen = set()
inputs = [x for x in (int(v) for v in inputs) if not (x in seen or seen.add(x))]

u = np.array(inputs, dtype=np.uint32)


def padded(a):
    """`a` zero-padded to a multiple of 64 elements, so that torch converts every element in its vector
    loop: its scalar tail loop decodes every float16 NaN to 0x7fffffff, the vector loop to
    sign | 0x7fc00000 | mantissa << 13 (encoding does not depend on the loop)."""
    return np.concatenate([a, np.zeros(-len(a) % 64, dtype=a.dtype)])


def enc(dt):
    width = torch.uint16 if dt in (torch.float16, torch.bfloat16) else torch.uint8
    t = torch.from_numpy(padded(u).view(np.float32))
    return t.to(dt).view(width).numpy()[: len(u)].astype(np.int64).tolist()


def dec_bits(dt, codes):
    wide = dt in (torch.float16, torch.bfloat16)
    a = padded(np.array(codes, dtype=np.uint16 if wide else np.uint8))
    a = torch.from_numpy(a.view(np.int16) if wide else a).view(dt)
    return a.float().numpy().view(np.uint32)[: len(codes)].astype(np.int64).tolist()


f16_dec_codes = sorted(set(list(range(0, 0x400, 3)) + list(range(0x7C00, 0x8000, 5)) + [0x7C01, 0x7D00, 0x7E00, 0x7FFF, 0x8001, 0x83FF, 0xFC00, 0xFC01, 0xFE00, 0xFFFF] + rng.integers(0, 0x10000, 300).tolist()))
bf16_dec_codes = sorted(set([0, 1, 0x7F, 0x80, 0x7F7F, 0x7F80, 0x7F81, 0x7FC0, 0x7FFF, 0x8000, 0x8001, 0xFF80, 0xFFC0, 0xFFFF] + rng.integers(0, 0x10000, 100).tolist()))

fixture = {
    "about": "torch float32 -> float16/bfloat16/float8 results (encode) and float32 bits of decoded codes (decode). "
    "Generated by tooling/scripts/gen-float-fixtures.py with torch " + torch.__version__ + ", ATEN_CPU_CAPABILITY=default. "
    "All values are unsigned integers: float32 bit patterns and target bit patterns.",
    "torch": torch.__version__,
    "encode": {
        "input": u.astype(np.int64).tolist(),
        "float16": enc(torch.float16),
        "bfloat16": enc(torch.bfloat16),
        "float8_e4m3fn": enc(torch.float8_e4m3fn),
        "float8_e5m2": enc(torch.float8_e5m2),
    },
    "decode": {
        "float16": {"code": f16_dec_codes, "bits": dec_bits(torch.float16, f16_dec_codes)},
        "bfloat16": {"code": bf16_dec_codes, "bits": dec_bits(torch.bfloat16, bf16_dec_codes)},
        "float8_e4m3fn": {"code": list(range(256)), "bits": dec_bits(torch.float8_e4m3fn, list(range(256)))},
        "float8_e5m2": {"code": list(range(256)), "bits": dec_bits(torch.float8_e5m2, list(range(256)))},
    },
}

with open(OUT, "w") as fh:
    json.dump(fixture, fh, separators=(",", ":"))
    fh.write("\n")
print(f"wrote {os.path.normpath(OUT)}: {len(inputs)} encode cases, {os.path.getsize(OUT)} bytes")
