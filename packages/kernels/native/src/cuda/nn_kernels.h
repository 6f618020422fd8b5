// Launchers of the CUDA neural-network kernels (nn_*.cu) as plain C++ (no CUDA headers), called by bind_nn.cc
// after it has checked every argument. Same semantics as cpu/nn.h: float math in float32 over float32 / float16 /
// bfloat16 storage, rounded once on store. Every launcher takes raw device pointers of `device` and queues its
// kernels on cuda::stream(device) without waiting, except where a result must reach the host (the index checks of
// embedding / embeddingBackward / crossEntropy*: one small device→host copy; embedding can defer its check). Launch failures throw DeviceError.
#pragma once
#include <cstdint>

#include "../cpu/nn.h"  // UnaryOp, BinaryOp, ReduceOp, AttentionShape, AdamWParams (plain C++)
#include "../dtype.h"

namespace lowbit::cuda::nn {

// ---- elementwise (nn_elementwise.cu) ----------------------------------------------------------------
// out[i] = op(x[i]) for i < n; out may alias x.
void unary(int device, cpu::UnaryOp op, void* out, const void* x, DType dt, int64_t n, float alpha);
// gx[i] = gy[i] * op'(x[i]); gx may alias gy or x.
void unary_backward(int device, cpu::UnaryOp op, void* gx, const void* gy, const void* x, DType dt, int64_t n, float alpha);
// out (shape, contiguous) = a op b, a / b read with element strides (0 broadcasts), ndim <= 16.
void binary(int device, cpu::BinaryOp op, void* out, const void* a, const int64_t* a_strides, const void* b,
            const int64_t* b_strides, DType dt, const int64_t* shape, int ndim);

// ---- reductions and normalisation (nn_reduce.cu) ------------------------------------------------------
// x (outer, n, inner) -> out (outer, inner); sum of n = 0 is 0, mean NaN; max needs n >= 1 and propagates NaN.
void reduce(int device, cpu::ReduceOp op, void* out, const void* x, DType dt, int64_t outer, int64_t n, int64_t inner);
// out (rows,) int32 = first index of the maximum of each row (a NaN counts as the maximum); cols >= 1.
void argmax(int device, int32_t* out, const void* x, DType dt, int64_t rows, int64_t cols);
void softmax(int device, void* out, const void* x, DType dt, int64_t rows, int64_t cols, bool log);
void softmax_backward(int device, void* gx, const void* gy, const void* y, DType dt, int64_t rows, int64_t cols, bool log);

// ---- transformer blocks and training (nn_transformer.cu) ----------------------------------------------
void rms_norm(int device, void* out, const void* x, const void* w, DType dt, DType w_dt, int64_t rows, int64_t cols,
              float eps);
// gw (cols,) float32 += sum over rows (per-block partials summed in a fixed order: deterministic).
void rms_norm_backward(int device, void* gx, float* gw, const void* gy, const void* x, const void* w, DType dt,
                       DType w_dt, int64_t rows, int64_t cols, float eps);
void rope(int device, void* out, const void* x, DType dt, const void* positions, DType pos_dt, const float* inv_freq,
          int64_t B, int64_t H, int64_t T, int64_t D, float scaling, bool inverse);
// Returns -1, or the first position whose id is outside [0, vocab) (*bad_id gets the id; `out` is untouched).
// With defer_check nothing waits: rows of bad ids are written as zeros and the first bad id is reported by the
// next synchronisation of the device (deferred_check.h), so the call returns -1.
int64_t embedding(int device, void* out, const void* weight, DType w_dt, const void* ids, DType ids_dt, int64_t n,
                  int64_t dim, int64_t vocab, bool defer_check, int64_t* bad_id);
// gw (vocab, dim) float32 += scatter of gy (n, dim), each row summed in position order (sorted by id, stable):
// the same sums as the CPU. ids are checked before gw is touched (same return convention as embedding).
// n and vocab must be below 2^31.
int64_t embedding_backward(int device, float* gw, const void* gy, DType gy_dt, const void* ids, DType ids_dt, int64_t n,
                           int64_t dim, int64_t vocab, int64_t* bad_id);
// Returns the number of rows not ignored, or -1 - row for the first row whose target is outside [0, cols) and not
// ignore_index (*bad_target gets it; the losses are then not valid).
int64_t cross_entropy(int device, float* losses, const void* logits, DType dt, const void* targets, DType t_dt,
                      int64_t rows, int64_t cols, int64_t ignore_index, int64_t* bad_target);
int64_t cross_entropy_backward(int device, void* glogits, const void* logits, DType dt, const void* targets, DType t_dt,
                               int64_t rows, int64_t cols, int64_t ignore_index, float scale, int64_t* bad_target);
void adamw(int device, void* param, DType p_dt, const void* grad, DType g_dt, float* m, float* v, int64_t n,
           const cpu::AdamWParams& hp);

// ---- attention (nn_attention.cu) -----------------------------------------------------------------------
// Largest head dim the CUDA attention kernels support (bind_nn.cc refuses larger ones with a ShapeError).
constexpr int64_t kMaxAttentionHeadDim = 256;
// Forward: decode-shaped calls (few query rows per kv head) split the keys over blocks and combine the partial
// softmax states (flash-decoding; K/V read once); others run a tiled online-softmax kernel.
void attention(int device, void* out, const void* q, const void* k, const void* v, DType dt, const cpu::AttentionShape& s,
               const uint8_t* mask, float* lse);
// Backward: dq per query tile, dk / dv per key tile (each over the whole GQA group): one writer per element.
void attention_backward(int device, void* dq, void* dk, void* dv, const void* g_out, const void* q, const void* k,
                        const void* v, const void* out, const float* lse, DType dt, const cpu::AttentionShape& s,
                        const uint8_t* mask);

}  // namespace lowbit::cuda::nn
