// CPU kernels of the bitsandbytes formats: NF4/FP4 blockwise quantize/dequantize, nested-absmax dequant,
// 8-bit blockwise with a 256-entry code, and the LLM.int8 quantize / dequant steps (spec §3–§12).
// Pure C++ over raw pointers (no N-API): callers validate sizes; every index here is 64-bit.
#pragma once
#include <cstdint>
#include <vector>

#include "../dtype.h"

namespace lowbit::cpu {

enum class QuantType : int32_t { NF4 = 0, FP4 = 1 };

// The 16 dequantization values of each 4-bit type (spec §2), indexed by code. FP4 code 8 is -0.0 (CUDA LUT).
extern const float kNF4Lut[16];
extern const float kFP4Lut[16];
inline const float* lut4(QuantType t) { return t == QuantType::NF4 ? kNF4Lut : kFP4Lut; }

// 4-bit code of a scaled value s = fp32(x * (1/absmax)) by the CUDA rules (§3.2, §3.3); NaN -> 0.
uint8_t quantize4_code(float s, QuantType t);

// Blocksizes the 4-bit kernels accept (§5): 32 .. 4096, powers of two.
bool valid_blocksize4(int64_t bs);
// Blocksizes the 8-bit blockwise kernels accept (§5): 64 .. 4096, powers of two.
bool valid_blocksize8(int64_t bs);

// x (n,) in `dtype` -> packed (ceil(n/2),) uint8, high nibble first, odd n padded with the code of fp32(0 * r);
// absmax (ceil(n/bs),) float32. Byte-identical to @lowbit/dtypes quantize4bit (spec §8).
void quantize4bit(uint8_t* packed, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize, QuantType t);

// out (n,) in out_dtype: out[i] = T(fp32(LUT[code_i] * absmax[i / bs])).
void dequantize4bit(void* out, DType out_dtype, const uint8_t* packed, const float* absmax, int64_t n, int64_t blocksize,
                    QuantType t);

// out (n_blocks,) float32 = fp32(fp32(code[q[i]] * nested[i / nested_bs]) + offset): two roundings (spec §9).
void dequantize_nested_absmax(float* out, const uint8_t* qabsmax, const float* nested_absmax, const float* code, float offset,
                              int64_t n_blocks, int64_t nested_blocksize);

// 8-bit code of a scaled value by the CUDA binary search with even-index ties (§11.2); code (256,) sorted.
// One value at a time (it rebuilds a 128-entry search table per call); quantize_blockwise8 is the bulk path.
uint8_t quantize8_code(float xs, const float* code);

// x (n,) -> codes (n,) uint8, absmax (ceil(n/bs),) float32, with xs = fp32(x * (1/absmax)).
void quantize_blockwise8(uint8_t* codes, float* absmax, const void* x, DType dtype, int64_t n, int64_t blocksize,
                         const float* code);

// out (n,) in out_dtype = T(fp32(code[q] * absmax[i / bs])).
void dequantize_blockwise8(void* out, DType out_dtype, const uint8_t* codes, const float* absmax, const float* code, int64_t n,
                           int64_t blocksize);

// LLM.int8 vectorwise quantization (§12.1) of x (rows, cols): CB (rows, cols) int8, SCB (rows,) float32 row absmax
// over the elements with |x| < threshold (all elements when threshold <= 0; |x| is compared with the double threshold).
// q = round-half-even(fp32(x * fp32(127 / absmax)));
// outlier elements become 0 and, when rows > 1, whole outlier columns are zeroed. Returns the ascending outlier columns.
std::vector<int32_t> int8_vectorwise_quant(int8_t* CB, float* SCB, const void* x, DType dtype, int64_t rows, int64_t cols,
                                           double threshold);

// The CUDA int8 matmul dequant constant fp32(1/127^2) = 0x38820610 (spec P6).
constexpr float kMmDequantScale = 6.200012e-05f;

// out (M, N) in out_dtype from C (M, N) int32 (spec §12.4):
// v = fp16(fmaf((float(C) * row[r]) * col[c], 1/127^2, bias16[c] or 0)); a bias in another dtype is added to the fp16
// result afterwards (fp16(float(v) + bias[c])), as upstream's out.add_(bias); then v is cast to out_dtype.
// bias (N,) in out_dtype or null.
void int8_mm_dequant(void* out, DType out_dtype, const int32_t* C, const float* row_stats, const float* col_stats,
                     const void* bias, int64_t M, int64_t N);

}  // namespace lowbit::cpu
