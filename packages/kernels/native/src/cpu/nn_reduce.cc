// CPU reductions over one axis: sum / mean / max of (outer, n, inner), argmax and (log-)softmax over the
// last axis, and the softmax backward. float32 accumulation with cascade sums.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "nn.h"
#include "nn_internal.h"
#include "parallel.h"

namespace lowbit::cpu {
namespace {

using nn::Cascade;
using nn::load_run;
using nn::store_run;
using nn::view_run;

constexpr int64_t kRowBlock = 64;    // rows summed directly before entering the cascade
constexpr int64_t kColChunk = 256;   // inner columns handled by one task

// Max of a run; NaN wins (torch.max propagates NaN).
float max_run(const float* p, int64_t n) {
  float m = p[0];
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    m = p[i] > m ? p[i] : m;
    nan |= p[i] != p[i];
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

}  // namespace

void reduce(ReduceOp op, void* out, const void* x, DType dt, int64_t outer, int64_t n, int64_t inner) {
  if (outer == 0 || inner == 0) return;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (n == 0) {  // empty reduction: sum 0, mean NaN (torch); max is rejected by the binding
    parallel_for(outer * inner, 65536, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) store_f(out, dt, i, op == ReduceOp::Sum ? 0.0f : nan);
    });
    return;
  }
  if (inner == 1) {
    // Each output reduces one contiguous row of n.
    parallel_for(outer, std::max<int64_t>(1, 65536 / n), [&](int64_t o0, int64_t o1) {
      float buf[kColChunk];
      for (int64_t o = o0; o < o1; ++o) {
        float r;
        if (op == ReduceOp::Max) {
          float m = 0.0f;
          for (int64_t i = 0; i < n; i += kColChunk) {
            int64_t len = std::min(kColChunk, n - i);
            float c = max_run(view_run(x, dt, o * n + i, len, buf), len);
            m = i == 0 ? c : (c != c || m != m ? nan : std::max(m, c));
          }
          r = m;
        } else {
          r = nn::sum_run(x, dt, o * n, n);
          if (op == ReduceOp::Mean) r /= static_cast<float>(n);
        }
        store_f(out, dt, o, r);
      }
    });
    return;
  }
  // General case: for each (outer, column chunk) walk the n rows, accumulating whole column vectors.
  const int64_t chunks = (inner + kColChunk - 1) / kColChunk;
  parallel_for(outer * chunks, std::max<int64_t>(1, 16384 / (n * std::min(inner, kColChunk))), [&](int64_t t0, int64_t t1) {
    float buf[kColChunk], acc[kColChunk], res[kColChunk];
    bool nan_col[kColChunk];
    for (int64_t t = t0; t < t1; ++t) {
      int64_t o = t / chunks, c0 = (t % chunks) * kColChunk, w = std::min(kColChunk, inner - c0);
      const int64_t base = o * n * inner + c0;
      if (op == ReduceOp::Max) {
        const float* p0 = view_run(x, dt, base, w, buf);
        for (int64_t i = 0; i < w; ++i) {
          res[i] = p0[i];
          nan_col[i] = p0[i] != p0[i];
        }
        for (int64_t j = 1; j < n; ++j) {
          const float* p = view_run(x, dt, base + j * inner, w, buf);
          for (int64_t i = 0; i < w; ++i) {
            res[i] = p[i] > res[i] ? p[i] : res[i];
            nan_col[i] |= p[i] != p[i];
          }
        }
        for (int64_t i = 0; i < w; ++i)
          if (nan_col[i]) res[i] = nan;
      } else {
        Cascade cascade(w);
        for (int64_t j0 = 0; j0 < n; j0 += kRowBlock) {
          int64_t j1 = std::min(n, j0 + kRowBlock);
          for (int64_t i = 0; i < w; ++i) acc[i] = 0.0f;
          for (int64_t j = j0; j < j1; ++j) {
            const float* p = view_run(x, dt, base + j * inner, w, buf);
            for (int64_t i = 0; i < w; ++i) acc[i] += p[i];
          }
          cascade.push(acc);
        }
        cascade.total(res);
        if (op == ReduceOp::Mean)
          for (int64_t i = 0; i < w; ++i) res[i] /= static_cast<float>(n);
      }
      store_run(out, dt, o * inner + c0, w, res);
    }
  });
}

void argmax(int32_t* out, const void* x, DType dt, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;  // (the binding requires cols >= 1 when rows > 0)
  parallel_for(rows, std::max<int64_t>(1, 65536 / cols), [&](int64_t r0, int64_t r1) {
    float buf[kColChunk];
    for (int64_t r = r0; r < r1; ++r) {
      float best = 0.0f;
      int64_t bi = -1;
      for (int64_t c0 = 0; c0 < cols; c0 += kColChunk) {
        int64_t w = std::min(kColChunk, cols - c0);
        const float* p = view_run(x, dt, r * cols + c0, w, buf);
        for (int64_t i = 0; i < w; ++i) {
          float v = p[i];
          if (bi < 0) {
            best = v;
            bi = c0 + i;
          } else if (best != best) {
            break;  // the first NaN is the answer
          } else if (v > best || v != v) {
            best = v;
            bi = c0 + i;
          }
        }
        if (best != best) break;
      }
      out[r] = static_cast<int32_t>(bi);
    }
  });
}

void softmax(void* out, const void* x, DType dt, int64_t rows, int64_t cols, bool log) {
  if (cols == 0) return;
  parallel_for(rows, std::max<int64_t>(1, 8192 / cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(static_cast<size_t>(cols) * 2);
    float* h = scratch.data();  // (cols,) the row
    float* e = h + cols;        // (cols,) exp(row - max)
    for (int64_t r = r0; r < r1; ++r) {
      load_run(x, dt, r * cols, cols, h);
      // All -inf rows give NaN (exp(-inf - -inf)), as torch does.
      float m = max_run(h, cols);
      for (int64_t i = 0; i < cols; ++i) e[i] = std::exp(h[i] - m);
      float s = nn::sum_floats(e, cols);
      if (log) {
        float ls = std::log(s);  // torch: (x - max) - log(sum)
        for (int64_t i = 0; i < cols; ++i) h[i] = (h[i] - m) - ls;
        store_run(out, dt, r * cols, cols, h);
      } else {
        for (int64_t i = 0; i < cols; ++i) e[i] /= s;
        store_run(out, dt, r * cols, cols, e);
      }
    }
  });
}

void softmax_backward(void* gx, const void* gy, const void* y, DType dt, int64_t rows, int64_t cols, bool log) {
  if (cols == 0) return;
  parallel_for(rows, std::max<int64_t>(1, 8192 / cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(static_cast<size_t>(cols) * 2);
    float* g = scratch.data();
    float* p = g + cols;
    for (int64_t r = r0; r < r1; ++r) {
      load_run(gy, dt, r * cols, cols, g);
      load_run(y, dt, r * cols, cols, p);
      if (log) {
        float s = nn::sum_floats(g, cols);
        for (int64_t i = 0; i < cols; ++i) g[i] -= std::exp(p[i]) * s;
      } else {
        float s = nn::dot_floats(g, p, cols);
        for (int64_t i = 0; i < cols; ++i) g[i] = p[i] * (g[i] - s);
      }
      store_run(gx, dt, r * cols, cols, g);
    }
  });
}

}  // namespace lowbit::cpu
