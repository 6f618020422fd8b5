"""Turns measure.cu's output into the 16-bit-mantissa correction table of @lowbit/dtypes' cudaReciprocal.

measure.cu (run on an NVIDIA GPU: `nvcc -O3 --use_fast_math -arch=sm_90 measure.cu -o measure && ./measure rcp_diff.bin`)
writes, for every float32 x in [1, 2) where `1.0f / x` compiled with --use_fast_math (rcp.approx.ftz.f32,
what bitsandbytes' CUDA kernels compute) differs from the IEEE quotient, the pair (mantissa, result bits).
This script keeps the mantissas a float16 or bfloat16 value can have (low 13 bits zero) and prints two
1024-bit sets, as hex: where the approximate reciprocal is one ulp above / below the IEEE one.

Usage: python3 extract.py rcp_diff.bin
"""
import sys

import numpy as np

d = np.fromfile(sys.argv[1], dtype=np.uint32).reshape(-1, 2)
idx = d[:, 0].astype(np.int64)
x = (0x3F800000 | idx).astype(np.uint32).view(np.float32)
ieee = (np.float32(1.0) / x).view(np.uint32)
delta = np.zeros(1 << 23, dtype=np.int8)
delta[idx] = d[:, 1].astype(np.int64) - ieee.astype(np.int64)
assert set(np.unique(delta)) <= {-1, 0, 1}
t = delta[np.arange(1024) << 13]
print("UP  ", np.packbits((t == 1).astype(np.uint8)).tobytes().hex())
print("DOWN", np.packbits((t == -1).astype(np.uint8)).tobytes().hex())
print(f"{int((t != 0).sum())} of 1024 float16 mantissas differ", file=sys.stderr)
