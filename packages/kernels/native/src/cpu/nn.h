// CPU neural-network kernels (elementwise, reductions, normalisation, rotary embedding, attention,
// embedding, cross-entropy, AdamW), forward and backward. Pure C++: no N-API here; bind_nn.cc checks
// every argument (dtypes, extents, devices) before calling these, so they trust their sizes.
//
// Conventions:
// - Tensors are raw pointers to contiguous row-major data unless strides are given (in elements).
// - Float math is float32 whatever the storage dtype (Float32 / Float16 / BFloat16); results are rounded
//   to the storage dtype once, round to nearest even (dtype.h store_f).
// - "Accumulated" outputs (gw of rmsNorm, gw of embedding) are float32 and receive `+=`; every other
//   output is overwritten.
// - Kernels that index with data (ids, targets) validate all of it before writing anything and report the
//   first bad position instead of throwing, so the binding can build the error message.
// - Work is split over lowbit::cpu::parallel_for; results do not depend on the number of threads.
#pragma once
#include <cstdint>

#include "../dtype.h"

namespace lowbit::cpu {

// Mirrors binding.ts UnaryOp / BinaryOp / ReduceOp (ids are a contract with the TS side).
enum class UnaryOp : int32_t {
  Neg = 0, Exp = 1, Log = 2, Sqrt = 3, Rsqrt = 4, Abs = 5, Silu = 6, Gelu = 7, GeluTanh = 8,
  Relu = 9, Sigmoid = 10, Tanh = 11, Scale = 12, AddScalar = 13, PowScalar = 14, Square = 15,
};
constexpr int32_t kUnaryOpCount = 16;
enum class BinaryOp : int32_t { Add = 0, Sub = 1, Mul = 2, Div = 3, Maximum = 4, Minimum = 5 };
constexpr int32_t kBinaryOpCount = 6;
enum class ReduceOp : int32_t { Sum = 0, Mean = 1, Max = 2 };
constexpr int32_t kReduceOpCount = 3;

// ---- elementwise ----------------------------------------------------------------------------------

// out[i] = op(x[i]) for i < n; out may alias x.
void unary(UnaryOp op, void* out, const void* x, DType dt, int64_t n, float alpha);
// gx[i] = gy[i] * op'(x[i]); gx may alias gy or x.
void unary_backward(UnaryOp op, void* gx, const void* gy, const void* x, DType dt, int64_t n, float alpha);
// out (shape, contiguous) = a op b with a, b read through element strides (0 broadcasts), ndim <= 16.
// maximum / minimum propagate NaN like torch.maximum / torch.minimum.
void binary(BinaryOp op, void* out, const void* a, const int64_t* a_strides, const void* b,
            const int64_t* b_strides, DType dt, const int64_t* shape, int ndim);

// ---- reductions and normalisation -----------------------------------------------------------------

// x (outer, n, inner) -> out (outer, inner). Sums use blocked cascade summation in float32 (error grows
// with log n, not n). mean of n = 0 is NaN, sum is 0; max needs n >= 1 and propagates NaN.
void reduce(ReduceOp op, void* out, const void* x, DType dt, int64_t outer, int64_t n, int64_t inner);
// out (rows,) = first index of the maximum of each row of x (rows, cols); a NaN counts as the maximum
// (torch.argmax). cols >= 1.
void argmax(int32_t* out, const void* x, DType dt, int64_t rows, int64_t cols);
// (log-)softmax over the last axis of x (rows, cols), max-subtracted.
void softmax(void* out, const void* x, DType dt, int64_t rows, int64_t cols, bool log);
// softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy). y is the forward output.
void softmax_backward(void* gx, const void* gy, const void* y, DType dt, int64_t rows, int64_t cols, bool log);
// HF LlamaRMSNorm on x (rows, cols), w (cols,) in w_dt: h = x * rsqrt(mean(x^2) + eps) in float32,
// h rounded to dt (HF's hidden_states.to(input_dtype)), out = round_dt(w * h).
void rms_norm(void* out, const void* x, const void* w, DType dt, DType w_dt, int64_t rows, int64_t cols, float eps);
// gx (rows, cols) in dt; gw (cols,) float32 += sum over rows of gy * round_dt(h).
void rms_norm_backward(void* gx, float* gw, const void* gy, const void* x, const void* w, DType dt, DType w_dt,
                       int64_t rows, int64_t cols, float eps);

// ---- transformer blocks ---------------------------------------------------------------------------

// HF rotary embedding (rotate_half) of x (B, H, T, D) into out (may alias x). positions (B, T) int32 or int64,
// inv_freq (D/2,) float32, D even. angle = float(pos) * inv_freq[i] in float32; cos/sin scaled by
// `scaling` and rounded to dt before use (HF casts cos/sin to x.dtype). inverse rotates by -angle.
void rope(void* out, const void* x, DType dt, const void* positions, DType pos_dt, const float* inv_freq,
          int64_t B, int64_t H, int64_t T, int64_t D, float scaling, bool inverse);

struct AttentionShape {
  int64_t B = 0, Hq = 0, Hkv = 0;  // Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv)
  int64_t Tq = 0;                  // query rows per head
  int64_t Tk = 0;                  // valid keys (the first Tk of the cache)
  int64_t S = 0;                   // cache capacity (k, v row stride per head), S >= Tk
  int64_t D = 0;                   // head dim
  float scale = 1.0f;
  bool causal = false;
  int64_t q_start = 0;             // absolute position of query row 0 (causal: row i sees keys j <= q_start + i)
};
// out (B, Hq, Tq, D) = softmax(q k^T * scale + masks) v with q (B, Hq, Tq, D), k/v (B, Hkv, S, D), all dt.
// mask (B, Tk) uint8 (0 = padding) or null; lse (B, Hq, Tq) float32 or null gets log-sum-exp of the scaled
// visible scores. A row that sees no key gets zeros and lse = -inf.
void attention(void* out, const void* q, const void* k, const void* v, DType dt, const AttentionShape& s,
               const uint8_t* mask, float* lse);
// dq (B, Hq, Tq, D), dk / dv (B, Hkv, S, D) overwritten (rows >= Tk zeroed; dk/dv summed over each GQA group)
// from g_out, q, k, v, the forward out and lse. Recomputes the probabilities from lse.
void attention_backward(void* dq, void* dk, void* dv, const void* g_out, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, DType dt, const AttentionShape& s, const uint8_t* mask);

// out (n, dim) = weight[ids[i]] (weight (vocab, dim) in w_dt, bytes copied). Returns -1, or the first position
// whose id is outside [0, vocab) (nothing written then; *bad_id receives the id).
int64_t embedding(void* out, const void* weight, DType w_dt, const void* ids, DType ids_dt, int64_t n, int64_t dim,
                  int64_t vocab, int64_t* bad_id);
// gw (vocab, dim) float32 += scatter of gy (n, dim); rows summed in position order (deterministic).
// Same id validation as embedding.
int64_t embedding_backward(float* gw, const void* gy, DType gy_dt, const void* ids, DType ids_dt, int64_t n,
                           int64_t dim, int64_t vocab, int64_t* bad_id);

// losses (rows,) float32 = logsumexp(row) - logits[target] (0 where target == ignore_index). Returns the number of
// rows not ignored, or -1 - row for the first row whose target is outside [0, cols) (*bad_target gets it; nothing
// written then).
int64_t cross_entropy(float* losses, const void* logits, DType dt, const void* targets, DType t_dt, int64_t rows,
                      int64_t cols, int64_t ignore_index, int64_t* bad_target);
// glogits (rows, cols) in dt = scale * (softmax(logits) - onehot(target)); ignored rows get 0. Same return value
// convention as cross_entropy.
int64_t cross_entropy_backward(void* glogits, const void* logits, DType dt, const void* targets, DType t_dt,
                               int64_t rows, int64_t cols, int64_t ignore_index, float scale, int64_t* bad_target);

struct AdamWParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
  int64_t step = 1;  // 1-based step count after this update (torch's state["step"])
};
// One torch.optim.AdamW step on n elements: param (p_dt) and grad (g_dt) in float32/float16/bfloat16, m / v float32.
void adamw(void* param, DType p_dt, const void* grad, DType g_dt, float* m, float* v, int64_t n, const AdamWParams& hp);

}  // namespace lowbit::cpu
