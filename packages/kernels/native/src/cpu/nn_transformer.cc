// CPU transformer-block and training kernels: HF LlamaRMSNorm (forward, backward; modeling_llama.py's rounding
// order), HF rotary embedding (rotate_half, forward and inverse), embedding gather / scatter-add, cross-entropy
// (forward, backward) and torch.optim.AdamW's update.
#include <algorithm>
#include <cmath>
#include <vector>

#include "nn.h"
#include "nn_internal.h"
#include "parallel.h"

namespace lowbit::cpu {

using nn::load_run;
using nn::round_to;
using nn::store_run;

void rms_norm(void* out, const void* x, const void* w, DType dt, DType w_dt, int64_t rows, int64_t cols, float eps) {
  if (cols == 0) return;
  std::vector<float> wf(static_cast<size_t>(cols));  // (cols,) weight in float32
  load_run(w, w_dt, 0, cols, wf.data());
  parallel_for(rows, std::max<int64_t>(1, 16384 / cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    float* h = row.data();
    for (int64_t r = r0; r < r1; ++r) {
      load_run(x, dt, r * cols, cols, h);
      // variance = mean(h^2); h = h * rsqrt(variance + eps), all float32.
      float var = nn::dot_floats(h, h, cols) / static_cast<float>(cols);
      float inv = 1.0f / std::sqrt(var + eps);
      if (dt == DType::Float32) {
        for (int64_t i = 0; i < cols; ++i) h[i] = wf[i] * (h[i] * inv);
      } else {
        // HF: weight * hidden_states.to(input_dtype) -- h is rounded to dt before the weight multiply.
        for (int64_t i = 0; i < cols; ++i) h[i] = wf[i] * round_to(dt, h[i] * inv);
      }
      store_run(out, dt, r * cols, cols, h);
    }
  });
}

void rms_norm_backward(void* gx, float* gw, const void* gy, const void* x, const void* w, DType dt, DType w_dt,
                       int64_t rows, int64_t cols, float eps) {
  if (cols == 0 || rows == 0) return;
  std::vector<float> wf(static_cast<size_t>(cols));
  load_run(w, w_dt, 0, cols, wf.data());
  // gw partials per fixed block of rows (independent of the thread count, so gw is deterministic), then summed
  // in block order.
  const int64_t blocks = std::min<int64_t>(rows, 64);
  const int64_t per = (rows + blocks - 1) / blocks;
  const int64_t nb = (rows + per - 1) / per;
  std::vector<float> partial(static_cast<size_t>(nb * cols), 0.0f);  // (nb, cols)
  parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> scratch(static_cast<size_t>(cols) * 3);
    float* h = scratch.data();     // (cols,) x, then normalised x
    float* g = h + cols;           // (cols,) gy, then gy * w
    float* o = g + cols;           // (cols,) gx
    for (int64_t blk = b0; blk < b1; ++blk) {
      float* pw = &partial[static_cast<size_t>(blk * cols)];
      for (int64_t r = blk * per; r < std::min(rows, (blk + 1) * per); ++r) {
        load_run(x, dt, r * cols, cols, h);
        load_run(gy, dt, r * cols, cols, g);
        float var = nn::dot_floats(h, h, cols) / static_cast<float>(cols);
        float inv = 1.0f / std::sqrt(var + eps);
        for (int64_t i = 0; i < cols; ++i) h[i] *= inv;
        // d weight: gy * round_dt(h) (the operand the forward multiplied by).
        if (dt == DType::Float32) {
          for (int64_t i = 0; i < cols; ++i) pw[i] += g[i] * h[i];
        } else {
          for (int64_t i = 0; i < cols; ++i) pw[i] += g[i] * round_to(dt, h[i]);
        }
        // d h = gy * w; d x = inv * (dh - h * mean(dh * h)) (the rounding is a straight-through identity).
        for (int64_t i = 0; i < cols; ++i) g[i] *= wf[i];
        float c = nn::dot_floats(g, h, cols) / static_cast<float>(cols);
        for (int64_t i = 0; i < cols; ++i) o[i] = inv * (g[i] - h[i] * c);
        store_run(gx, dt, r * cols, cols, o);
      }
    }
  });
  parallel_for(cols, 4096, [&](int64_t c0, int64_t c1) {
    for (int64_t blk = 0; blk < nb; ++blk) {
      const float* pw = &partial[static_cast<size_t>(blk * cols)];
      for (int64_t i = c0; i < c1; ++i) gw[i] += pw[i];
    }
  });
}

void rope(void* out, const void* x, DType dt, const void* positions, DType pos_dt, const float* inv_freq, int64_t B,
          int64_t H, int64_t T, int64_t D, float scaling, bool inverse) {
  const int64_t half = D / 2;
  if (half == 0 || B * T * H == 0) return;
  // One task per (b, t): cos/sin are computed once and applied to every head.
  parallel_for(B * T, std::max<int64_t>(1, 4096 / (H * D)), [&](int64_t i0, int64_t i1) {
    std::vector<float> scratch(static_cast<size_t>(half) * 2 + static_cast<size_t>(D) * 2);
    float* cs = scratch.data();  // (D/2,) cos
    float* sn = cs + half;       // (D/2,) sin (negated for the inverse)
    float* xr = sn + half;       // (D,) one input row
    float* yr = xr + D;          // (D,) one output row
    for (int64_t bt = i0; bt < i1; ++bt) {
      int64_t b = bt / T, t = bt % T;
      int64_t pos = pos_dt == DType::Int64 ? static_cast<const int64_t*>(positions)[bt]
                                           : static_cast<const int32_t*>(positions)[bt];
      float pf = static_cast<float>(pos);  // HF: position_ids.float()
      for (int64_t i = 0; i < half; ++i) {
        float ang = inv_freq[i] * pf;
        cs[i] = round_to(dt, std::cos(ang) * scaling);
        float s = round_to(dt, std::sin(ang) * scaling);
        sn[i] = inverse ? -s : s;
      }
      for (int64_t h = 0; h < H; ++h) {
        int64_t off = ((b * H + h) * T + t) * D;
        load_run(x, dt, off, D, xr);
        // x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1).
        for (int64_t i = 0; i < half; ++i) {
          float x1 = xr[i], x2 = xr[i + half];
          yr[i] = x1 * cs[i] - x2 * sn[i];
          yr[i + half] = x2 * cs[i] + x1 * sn[i];
        }
        store_run(out, dt, off, D, yr);
      }
    }
  });
}

namespace {

// Reads ids (int32 or int64) and finds the first outside [0, limit); -1 when all are valid.
int64_t first_bad_index(const void* ids, DType ids_dt, int64_t n, int64_t limit, int64_t* bad, bool allow,
                        int64_t allowed) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = ids_dt == DType::Int64 ? static_cast<const int64_t*>(ids)[i] : static_cast<const int32_t*>(ids)[i];
    if ((id < 0 || id >= limit) && !(allow && id == allowed)) {
      *bad = id;
      return i;
    }
  }
  return -1;
}

inline int64_t read_index(const void* ids, DType ids_dt, int64_t i) {
  return ids_dt == DType::Int64 ? static_cast<const int64_t*>(ids)[i] : static_cast<const int32_t*>(ids)[i];
}

}  // namespace

int64_t embedding(void* out, const void* weight, DType w_dt, const void* ids, DType ids_dt, int64_t n, int64_t dim,
                  int64_t vocab, int64_t* bad_id) {
  int64_t bad = first_bad_index(ids, ids_dt, n, vocab, bad_id, false, 0);
  if (bad >= 0) return bad;
  const size_t row_bytes = static_cast<size_t>(dim * dtype_size(w_dt));
  parallel_for(n, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, static_cast<int64_t>(row_bytes))), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t id = read_index(ids, ids_dt, i);
      std::memcpy(static_cast<uint8_t*>(out) + i * row_bytes, static_cast<const uint8_t*>(weight) + id * row_bytes,
                  row_bytes);
    }
  });
  return -1;
}

int64_t embedding_backward(float* gw, const void* gy, DType gy_dt, const void* ids, DType ids_dt, int64_t n,
                           int64_t dim, int64_t vocab, int64_t* bad_id) {
  int64_t bad = first_bad_index(ids, ids_dt, n, vocab, bad_id, false, 0);
  if (bad >= 0) return bad;
  // Tasks own column ranges and walk positions in order: no write conflicts, the same sums on any thread count.
  constexpr int64_t kCols = 256;
  const int64_t chunks = (dim + kCols - 1) / kCols;
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    float buf[kCols];
    for (int64_t c = c0; c < c1; ++c) {
      int64_t j0 = c * kCols, w = std::min(kCols, dim - j0);
      for (int64_t i = 0; i < n; ++i) {
        int64_t id = read_index(ids, ids_dt, i);
        const float* g = nn::view_run(gy, gy_dt, i * dim + j0, w, buf);
        float* dst = gw + id * dim + j0;
        for (int64_t j = 0; j < w; ++j) dst[j] += g[j];
      }
    }
  });
  return -1;
}

// ---- losses and optimizer -------------------------------------------------------------------------

int64_t cross_entropy(float* losses, const void* logits, DType dt, const void* targets, DType t_dt, int64_t rows,
                      int64_t cols, int64_t ignore_index, int64_t* bad_target) {
  int64_t bad = first_bad_index(targets, t_dt, rows, cols, bad_target, true, ignore_index);
  if (bad >= 0) return -1 - bad;
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) count += read_index(targets, t_dt, r) != ignore_index;
  parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, cols)), [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(static_cast<size_t>(cols) * 2);
    float* h = scratch.data();
    float* e = h + cols;
    for (int64_t r = r0; r < r1; ++r) {
      int64_t t = read_index(targets, t_dt, r);
      if (t == ignore_index) {
        losses[r] = 0.0f;
        continue;
      }
      load_run(logits, dt, r * cols, cols, h);
      float m = h[0];
      for (int64_t i = 0; i < cols; ++i) m = h[i] > m ? h[i] : m;
      for (int64_t i = 0; i < cols; ++i) e[i] = std::exp(h[i] - m);
      // -log_softmax[t] = -((x_t - max) - log(sum)), torch's order.
      losses[r] = -((h[t] - m) - std::log(nn::sum_floats(e, cols)));
    }
  });
  return count;
}

int64_t cross_entropy_backward(void* glogits, const void* logits, DType dt, const void* targets, DType t_dt,
                               int64_t rows, int64_t cols, int64_t ignore_index, float scale, int64_t* bad_target) {
  int64_t bad = first_bad_index(targets, t_dt, rows, cols, bad_target, true, ignore_index);
  if (bad >= 0) return -1 - bad;
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) count += read_index(targets, t_dt, r) != ignore_index;
  parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, cols)), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    float* h = row.data();
    for (int64_t r = r0; r < r1; ++r) {
      int64_t t = read_index(targets, t_dt, r);
      if (t == ignore_index) {
        std::fill(h, h + cols, 0.0f);
      } else {
        load_run(logits, dt, r * cols, cols, h);
        float m = h[0];
        for (int64_t i = 0; i < cols; ++i) m = h[i] > m ? h[i] : m;
        for (int64_t i = 0; i < cols; ++i) h[i] = std::exp(h[i] - m);
        float s = nn::sum_floats(h, cols);
        for (int64_t i = 0; i < cols; ++i) h[i] = scale * (h[i] / s);
        h[t] -= scale;
      }
      store_run(glogits, dt, r * cols, cols, h);
    }
  });
  return count;
}

void adamw(void* param, DType p_dt, const void* grad, DType g_dt, float* m, float* v, int64_t n, const AdamWParams& hp) {
  // Scalars as torch's _single_tensor_adamw computes them (Python floats, i.e. double), used as float32.
  const float decay = static_cast<float>(1.0 - hp.lr * hp.weight_decay);
  const float w1 = static_cast<float>(1.0 - hp.beta1);  // lerp weight of exp_avg toward grad
  const float b2 = static_cast<float>(hp.beta2);
  const float w2 = static_cast<float>(1.0 - hp.beta2);
  const double bc1 = 1.0 - std::pow(hp.beta1, static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(hp.beta2, static_cast<double>(hp.step));
  const float neg_step = static_cast<float>(-(hp.lr / bc1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float eps = static_cast<float>(hp.eps);
  constexpr int64_t kBlock = 1024;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, 16, [&](int64_t b0, int64_t b1) {
    float p[kBlock], g[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      int64_t i0 = b * kBlock, len = std::min(kBlock, n - i0);
      load_run(param, p_dt, i0, len, p);
      load_run(grad, g_dt, i0, len, g);
      float* mb = m + i0;
      float* vb = v + i0;
      for (int64_t i = 0; i < len; ++i) {
        float pi = p[i] * decay;                                   // param.mul_(1 - lr * wd)
        float gi = g[i];
        float mi = w1 < 0.5f ? mb[i] + w1 * (gi - mb[i])           // exp_avg.lerp_(grad, 1 - beta1)
                             : gi - (gi - mb[i]) * (1.0f - w1);
        float vi = vb[i] * b2 + w2 * gi * gi;                      // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
        float denom = std::sqrt(vi) / bc2_sqrt + eps;              // (v.sqrt() / sqrt(bc2)).add_(eps)
        p[i] = pi + neg_step * (mi / denom);                       // param.addcdiv_(m, denom, -lr / bc1)
        mb[i] = mi;
        vb[i] = vi;
      }
      store_run(param, p_dt, i0, len, p);
    }
  });
}

}  // namespace lowbit::cpu
