// CPU scaled-dot-product attention with GQA, causal / padding masks and a KV cache (capacity S, Tk valid):
// a blocked online-softmax forward (flash-attention style, float32 state) and a two-pass backward that
// recomputes probabilities from the forward's log-sum-exp.
//
// Work split: a forward task is (b, kv head, block of query positions) and handles every query head of the
// GQA group at once, so each K/V row is read once per task (decode, Tq = 1, reads the cache exactly once).
// The backward computes dq in tasks over (b, kv head, query block) and dk/dv in tasks over (b, kv head,
// key block); each output element has one writer, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "nn.h"
#include "nn_internal.h"
#include "parallel.h"

namespace lowbit::cpu {
namespace {

using nn::kNegInf;
using nn::load_run;
using nn::store_run;

constexpr int64_t kKeyBlock = 64;    // keys per inner block
constexpr int64_t kRowTarget = 64;   // query rows (group heads x positions) per task

// Keys visible to query position `t` (absolute q_start + t) among [0, Tk): j < limit(t), plus the padding mask.
struct Visibility {
  const AttentionShape& s;
  const uint8_t* mask;  // (B, Tk) or null
  // One past the last key a query at position t may see (ignoring padding).
  int64_t key_end(int64_t t) const {
    if (!s.causal) return s.Tk;
    return std::max<int64_t>(0, std::min<int64_t>(s.Tk, s.q_start + t + 1));
  }
  bool padded(int64_t b, int64_t j) const { return mask != nullptr && mask[b * s.Tk + j] == 0; }
};

// out[0..4) = dots of a (D,) with the 4 consecutive rows of b (4, D): each load of `a` serves 4 keys. The lanes
// and their fold are those of nn::dot_lanes, so a key gets the same score whichever path computes it.
template <class Ln>
LOWBIT_ALWAYS_INLINE void dot4(const float* a, const float* b, int64_t D, float* out) {
  using V = typename Ln::V;
  V acc0 = Ln::zero(), acc1 = Ln::zero(), acc2 = Ln::zero(), acc3 = Ln::zero();
  const float* b0 = b;
  const float* b1 = b + D;
  const float* b2 = b + 2 * D;
  const float* b3 = b + 3 * D;
  int64_t i = 0;
  for (; i + 8 <= D; i += 8) {
    const V av = Ln::load(a + i);
    acc0 += av * Ln::load(b0 + i);
    acc1 += av * Ln::load(b1 + i);
    acc2 += av * Ln::load(b2 + i);
    acc3 += av * Ln::load(b3 + i);
  }
  float t[4][8];
  Ln::store(t[0], acc0);
  Ln::store(t[1], acc1);
  Ln::store(t[2], acc2);
  Ln::store(t[3], acc3);
  for (int l = 0; i < D; ++i, ++l) {
    t[0][l] += a[i] * b0[i];
    t[1][l] += a[i] * b1[i];
    t[2][l] += a[i] * b2[i];
    t[3][l] += a[i] * b3[i];
  }
  for (int k = 0; k < 4; ++k) out[k] = nn::fold8(t[k]);
}

// S (R, KB) = A (R, D) . Bm^T for a key block Bm (nk, D), float32 accumulation over d.
template <class Ln>
LOWBIT_ALWAYS_INLINE void block_dots(const float* A, int64_t R, const float* Bm, int64_t nk, int64_t D, float* S) {
  for (int64_t r = 0; r < R; ++r) {
    const float* a = A + r * D;
    float* sr = S + r * kKeyBlock;
    int64_t j = 0;
    for (; j + 4 <= nk; j += 4) dot4<Ln>(a, Bm + j * D, D, sr + j);
    for (; j < nk; ++j) sr[j] = nn::dot_lanes(a, Bm + j * D, D);
  }
}

// acc (D,) += sum_t w[t] * base[idx[t] * D ..], four source rows per pass over acc.
template <class Ln>
LOWBIT_ALWAYS_INLINE void accumulate_rows(float* acc, const float* base, const int32_t* idx, const float* w, int64_t cnt,
                                          int64_t D) {
  int64_t t = 0;
  for (; t + 4 <= cnt; t += 4) {
    const float w0 = w[t], w1 = w[t + 1], w2 = w[t + 2], w3 = w[t + 3];
    const auto s0 = Ln::splat(w0), s1 = Ln::splat(w1), s2 = Ln::splat(w2), s3 = Ln::splat(w3);
    const float* r0 = base + idx[t] * D;
    const float* r1 = base + idx[t + 1] * D;
    const float* r2 = base + idx[t + 2] * D;
    const float* r3 = base + idx[t + 3] * D;
    int64_t d = 0;
    for (; d + 8 <= D; d += 8)
      Ln::store(acc + d, Ln::load(acc + d) + (((s0 * Ln::load(r0 + d) + s1 * Ln::load(r1 + d)) + s2 * Ln::load(r2 + d)) +
                                            s3 * Ln::load(r3 + d)));
    for (; d < D; ++d) acc[d] += ((w0 * r0[d] + w1 * r1[d]) + w2 * r2[d]) + w3 * r3[d];
  }
  for (; t < cnt; ++t) {
    const float w0 = w[t];
    const float* r0 = base + idx[t] * D;
    for (int64_t d = 0; d < D; ++d) acc[d] += w0 * r0[d];
  }
}

// Rows [j0, j0+nk) of one head of a (.., S, D) cache tensor as float32 (nk, D): the data itself for float32,
// else converted into buf.
const float* view_keys(const void* src, DType dt, int64_t head_off, int64_t j0, int64_t nk, int64_t D, float* buf) {
  return nn::view_run(src, dt, head_off + j0 * D, nk * D, buf);
}

// Everything a task needs; shared read-only by all tasks.
struct Problem {
  const AttentionShape& s;
  Visibility vis;
  DType dt;
  int64_t G;       // query heads per kv head
  int64_t qb_len;  // query positions per (b, kv head, query block) task
  int64_t nqb;     // query blocks
};

// Tasks smaller than this many multiply-adds are grouped so tiny problems (short decode steps) skip the thread
// pool's dispatch cost.
constexpr int64_t kMinTaskWork = 1 << 16;

Problem make_problem(const AttentionShape& s, const uint8_t* mask, DType dt) {
  const int64_t G = s.Hq / s.Hkv;
  const int64_t qb_len = std::max<int64_t>(1, std::min<int64_t>(s.Tq, kRowTarget / G));
  return Problem{s, Visibility{s, mask}, dt, G, qb_len, (s.Tq + qb_len - 1) / qb_len};
}

// Grain for tasks over (b, kv head, query block): each does about rows * Tk * D multiply-adds.
int64_t task_grain(const Problem& pr) {
  const int64_t work = pr.G * pr.qb_len * pr.s.Tk * pr.s.D;
  return std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, work));
}

// Forward tasks [task0, task1): online softmax over key blocks for all rows of one (b, kv head, query block).
template <class Ln>
LOWBIT_ALWAYS_INLINE void forward_tasks_impl(const Problem& pr, void* out, const void* q, const void* k, const void* v, float* lse,
                              int64_t task0, int64_t task1) {
  const AttentionShape& s = pr.s;
  const int64_t G = pr.G, D = s.D, qb_len = pr.qb_len, nqb = pr.nqb;
  const DType dt = pr.dt;
  const int64_t Rmax = G * qb_len;
  std::vector<float> kbuf(static_cast<size_t>(kKeyBlock * D)), vbuf(static_cast<size_t>(kKeyBlock * D));
  std::vector<float> Q(static_cast<size_t>(Rmax * D)), O(static_cast<size_t>(Rmax * D));  // (R, D)
  std::vector<float> S(static_cast<size_t>(Rmax * kKeyBlock));                          // (R, KB)
  std::vector<float> M(static_cast<size_t>(Rmax)), L(static_cast<size_t>(Rmax));        // running max, sum
  std::vector<float> pw(static_cast<size_t>(kKeyBlock));
  std::vector<int32_t> pidx(static_cast<size_t>(kKeyBlock));
  std::vector<uint8_t> pad(static_cast<size_t>(kKeyBlock));
  for (int64_t task = task0; task < task1; ++task) {
    const int64_t qb = task % nqb, bh = task / nqb, b = bh / s.Hkv, kvh = bh % s.Hkv;
    const int64_t t0 = qb * qb_len, nq = std::min(qb_len, s.Tq - t0), R = G * nq;
    // Row r = g * nq + i is query head kvh * G + g at position t0 + i.
    for (int64_t g = 0; g < G; ++g) {
      const int64_t hq = kvh * G + g;
      load_run(q, dt, ((b * s.Hq + hq) * s.Tq + t0) * D, nq * D, Q.data() + g * nq * D);
    }
    std::fill(O.begin(), O.begin() + R * D, 0.0f);
    std::fill(M.begin(), M.begin() + R, kNegInf);
    std::fill(L.begin(), L.begin() + R, 0.0f);
    const int64_t kv_off = (b * s.Hkv + kvh) * s.S * D;
    const int64_t kend = pr.vis.key_end(t0 + nq - 1);
    for (int64_t j0 = 0; j0 < kend; j0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, kend - j0);
      bool any = false;
      for (int64_t j = 0; j < nk; ++j) {
        pad[j] = pr.vis.padded(b, j0 + j);
        any |= !pad[j];
      }
      if (!any) continue;  // the whole block is padding
      const float* kb = view_keys(k, dt, kv_off, j0, nk, D, kbuf.data());
      const float* vb = view_keys(v, dt, kv_off, j0, nk, D, vbuf.data());
      block_dots<Ln>(Q.data(), R, kb, nk, D, S.data());
      for (int64_t r = 0; r < R; ++r) {
        float* sr = S.data() + r * kKeyBlock;
        const int64_t jlim = std::min(nk, pr.vis.key_end(t0 + r % nq) - j0);  // keys [0, jlim) of the block
        float bm = kNegInf;
        for (int64_t j = 0; j < nk; ++j) {
          const float sc = (j < jlim && !pad[j]) ? sr[j] * s.scale : kNegInf;
          sr[j] = sc;
          bm = sc > bm ? sc : bm;
        }
        if (bm == kNegInf) continue;  // nothing visible to this row in the block
        const float mnew = std::max(M[r], bm);
        float* orow = O.data() + r * D;
        if (mnew != M[r]) {
          const float corr = std::exp(M[r] - mnew);  // 0 when M was -inf
          L[r] *= corr;
          for (int64_t d = 0; d < D; ++d) orow[d] *= corr;
          M[r] = mnew;
        }
        float lsum = 0.0f;
        int64_t cnt = 0;
        for (int64_t j = 0; j < nk; ++j) {
          if (sr[j] == kNegInf) continue;
          const float p = std::exp(sr[j] - mnew);
          lsum += p;
          pw[cnt] = p;
          pidx[cnt++] = static_cast<int32_t>(j);
        }
        L[r] += lsum;
        accumulate_rows<Ln>(orow, vb, pidx.data(), pw.data(), cnt, D);
      }
    }
    // Normalise; rows that saw no key give zeros and lse = -inf.
    for (int64_t r = 0; r < R; ++r) {
      float* orow = O.data() + r * D;
      if (L[r] > 0.0f) {
        const float l = L[r];
        for (int64_t d = 0; d < D; ++d) orow[d] /= l;
      } else {
        std::fill(orow, orow + D, 0.0f);
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t hq = kvh * G + g, row0 = (b * s.Hq + hq) * s.Tq + t0;
      store_run(out, dt, row0 * D, nq * D, O.data() + g * nq * D);
      if (lse != nullptr)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t r = g * nq + i;
          lse[row0 + i] = L[r] > 0.0f ? M[r] + std::log(L[r]) : kNegInf;
        }
    }
  }
}

// Turns scores P (nr, KB) and dO.V^T dP (nr, KB) of one key block into probabilities p = exp(s * scale - lse) and
// dS = p (dP - delta) * scale in place (0 where a key is hidden); row i is query position t_of(i) with lse[i] and
// delta[i]. Rows that see nothing get all zeros.
template <typename PosOf>
LOWBIT_ALWAYS_INLINE void probs_and_ds(const Problem& pr, float* P, float* dP, int64_t nr, int64_t nk, int64_t j0, const float* lse,
                         const float* delta, const uint8_t* pad, PosOf t_of) {
  for (int64_t i = 0; i < nr; ++i) {
    float* p = P + i * kKeyBlock;
    float* ds = dP + i * kKeyBlock;
    const float row_lse = lse[i];
    const int64_t jlim = row_lse == kNegInf ? 0 : std::min(nk, pr.vis.key_end(t_of(i)) - j0);
    for (int64_t j = 0; j < nk; ++j) {
      const bool on = j < jlim && !pad[j];
      p[j] = on ? std::exp(p[j] * pr.s.scale - row_lse) : 0.0f;
      ds[j] = on ? p[j] * (ds[j] - delta[i]) * pr.s.scale : 0.0f;
    }
  }
}

// dq tasks [task0, task1) over (b, kv head, query block): dq_r = sum_j dS_rj k_j.
template <class Ln>
LOWBIT_ALWAYS_INLINE void dq_tasks_impl(const Problem& pr, void* dq, const void* g_out, const void* q, const void* k, const void* v,
                         const float* lse, const float* delta, int64_t task0, int64_t task1) {
  const AttentionShape& s = pr.s;
  const int64_t G = pr.G, D = s.D, qb_len = pr.qb_len, nqb = pr.nqb;
  const DType dt = pr.dt;
  const int64_t Rmax = G * qb_len;
  std::vector<float> kbuf(static_cast<size_t>(kKeyBlock * D)), vbuf(static_cast<size_t>(kKeyBlock * D));
  std::vector<float> Q(static_cast<size_t>(Rmax * D)), dO(static_cast<size_t>(Rmax * D)), dQ(static_cast<size_t>(Rmax * D));
  std::vector<float> P(static_cast<size_t>(Rmax * kKeyBlock)), dP(static_cast<size_t>(Rmax * kKeyBlock));
  std::vector<float> rl(static_cast<size_t>(Rmax)), rd(static_cast<size_t>(Rmax));  // lse, delta per row
  std::vector<float> w(static_cast<size_t>(kKeyBlock));
  std::vector<int32_t> idx(static_cast<size_t>(kKeyBlock));
  std::vector<uint8_t> pad(static_cast<size_t>(kKeyBlock));
  for (int64_t task = task0; task < task1; ++task) {
    const int64_t qb = task % nqb, bh = task / nqb, b = bh / s.Hkv, kvh = bh % s.Hkv;
    const int64_t t0 = qb * qb_len, nq = std::min(qb_len, s.Tq - t0), R = G * nq;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t row0 = (b * s.Hq + kvh * G + g) * s.Tq + t0;
      load_run(q, dt, row0 * D, nq * D, Q.data() + g * nq * D);
      load_run(g_out, dt, row0 * D, nq * D, dO.data() + g * nq * D);
      for (int64_t i = 0; i < nq; ++i) {
        rl[g * nq + i] = lse[row0 + i];
        rd[g * nq + i] = delta[row0 + i];
      }
    }
    std::fill(dQ.begin(), dQ.begin() + R * D, 0.0f);
    const int64_t kv_off = (b * s.Hkv + kvh) * s.S * D;
    const int64_t kend = pr.vis.key_end(t0 + nq - 1);
    for (int64_t j0 = 0; j0 < kend; j0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, kend - j0);
      bool any = false;
      for (int64_t j = 0; j < nk; ++j) {
        pad[j] = pr.vis.padded(b, j0 + j);
        any |= !pad[j];
      }
      if (!any) continue;
      const float* kb = view_keys(k, dt, kv_off, j0, nk, D, kbuf.data());
      const float* vb = view_keys(v, dt, kv_off, j0, nk, D, vbuf.data());
      block_dots<Ln>(Q.data(), R, kb, nk, D, P.data());
      block_dots<Ln>(dO.data(), R, vb, nk, D, dP.data());
      probs_and_ds(pr, P.data(), dP.data(), R, nk, j0, rl.data(), rd.data(), pad.data(),
                   [&](int64_t r) { return t0 + r % nq; });
      for (int64_t r = 0; r < R; ++r) {
        const float* dsr = dP.data() + r * kKeyBlock;
        int64_t cnt = 0;
        for (int64_t j = 0; j < nk; ++j) {
          if (P[static_cast<size_t>(r * kKeyBlock + j)] == 0.0f) continue;
          w[cnt] = dsr[j];
          idx[cnt++] = static_cast<int32_t>(j);
        }
        accumulate_rows<Ln>(dQ.data() + r * D, kb, idx.data(), w.data(), cnt, D);
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t row0 = (b * s.Hq + kvh * G + g) * s.Tq + t0;
      store_run(dq, dt, row0 * D, nq * D, dQ.data() + g * nq * D);
    }
  }
}

// dk / dv tasks [task0, task1) over (b, kv head, key block): dv_j = sum_r p_rj dO_r, dk_j = sum_r dS_rj q_r over
// every query row of the GQA group.
template <class Ln>
LOWBIT_ALWAYS_INLINE void dkv_tasks_impl(const Problem& pr, void* dk, void* dv, const void* g_out, const void* q, const void* k,
                          const void* v, const float* lse, const float* delta, int64_t task0, int64_t task1) {
  const AttentionShape& s = pr.s;
  const int64_t G = pr.G, D = s.D;
  const DType dt = pr.dt;
  const int64_t nkb = (s.Tk + kKeyBlock - 1) / kKeyBlock;
  const int64_t rb_len = kRowTarget;  // query positions per row block
  std::vector<float> kbuf(static_cast<size_t>(kKeyBlock * D)), vbuf(static_cast<size_t>(kKeyBlock * D));
  std::vector<float> Q(static_cast<size_t>(rb_len * D)), dO(static_cast<size_t>(rb_len * D));
  std::vector<float> P(static_cast<size_t>(rb_len * kKeyBlock)), dP(static_cast<size_t>(rb_len * kKeyBlock));
  std::vector<float> dK(static_cast<size_t>(kKeyBlock * D)), dV(static_cast<size_t>(kKeyBlock * D));
  std::vector<float> wp(static_cast<size_t>(rb_len)), wd(static_cast<size_t>(rb_len));
  std::vector<int32_t> idx(static_cast<size_t>(rb_len));
  std::vector<uint8_t> pad(static_cast<size_t>(kKeyBlock));
  for (int64_t task = task0; task < task1; ++task) {
    const int64_t kb_i = task % nkb, bh = task / nkb, b = bh / s.Hkv, kvh = bh % s.Hkv;
    const int64_t j0 = kb_i * kKeyBlock, nk = std::min(kKeyBlock, s.Tk - j0);
    const int64_t kv_off = (b * s.Hkv + kvh) * s.S * D;
    std::fill(dK.begin(), dK.begin() + nk * D, 0.0f);
    std::fill(dV.begin(), dV.begin() + nk * D, 0.0f);
    bool any = false;
    for (int64_t j = 0; j < nk; ++j) {
      pad[j] = pr.vis.padded(b, j0 + j);
      any |= !pad[j];
    }
    // Causal: positions t with q_start + t < j0 see nothing of this block.
    const int64_t tmin = s.causal ? std::max<int64_t>(0, j0 - s.q_start) : 0;
    if (any && tmin < s.Tq) {
      const float* kb = view_keys(k, dt, kv_off, j0, nk, D, kbuf.data());
      const float* vb = view_keys(v, dt, kv_off, j0, nk, D, vbuf.data());
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = kvh * G + g;
        for (int64_t t0 = tmin; t0 < s.Tq; t0 += rb_len) {
          const int64_t nr = std::min(rb_len, s.Tq - t0), row0 = (b * s.Hq + hq) * s.Tq + t0;
          load_run(q, dt, row0 * D, nr * D, Q.data());
          load_run(g_out, dt, row0 * D, nr * D, dO.data());
          block_dots<Ln>(Q.data(), nr, kb, nk, D, P.data());
          block_dots<Ln>(dO.data(), nr, vb, nk, D, dP.data());
          probs_and_ds(pr, P.data(), dP.data(), nr, nk, j0, lse + row0, delta + row0, pad.data(),
                       [&](int64_t i) { return t0 + i; });
          for (int64_t j = 0; j < nk; ++j) {
            int64_t cnt = 0;
            for (int64_t i = 0; i < nr; ++i) {
              const float p = P[static_cast<size_t>(i * kKeyBlock + j)];
              if (p == 0.0f) continue;
              wp[cnt] = p;
              wd[cnt] = dP[static_cast<size_t>(i * kKeyBlock + j)];
              idx[cnt++] = static_cast<int32_t>(i);
            }
            accumulate_rows<Ln>(dV.data() + j * D, dO.data(), idx.data(), wp.data(), cnt, D);
            accumulate_rows<Ln>(dK.data() + j * D, Q.data(), idx.data(), wd.data(), cnt, D);
          }
        }
      }
    }
    store_run(dk, dt, kv_off + j0 * D, nk * D, dK.data());
    store_run(dv, dt, kv_off + j0 * D, nk * D, dV.data());
  }
}

// Each task kind compiled for the baseline target and, on x86-64, for AVX2 (picked per call).
#define LOWBIT_ATTENTION_DISPATCH(name, params, args)                 \
  void name##_base params { name##_impl<nn::BaseLanes> args; }        \
  LOWBIT_ATTENTION_AVX2_VARIANT(name, params, args)                   \
  void name params {                                                  \
    LOWBIT_ATTENTION_AVX2_CALL(name, args)                            \
    name##_base args;                                                 \
  }
#if LOWBIT_NN_DISPATCH
#define LOWBIT_ATTENTION_AVX2_VARIANT(name, params, args) \
  LOWBIT_TARGET_AVX2 void name##_avx2 params { name##_impl<nn::Lanes256> args; }
#define LOWBIT_ATTENTION_AVX2_CALL(name, args) \
  if (nn::cpu_has_avx2()) return name##_avx2 args;
#else
#define LOWBIT_ATTENTION_AVX2_VARIANT(name, params, args)
#define LOWBIT_ATTENTION_AVX2_CALL(name, args)
#endif

LOWBIT_ATTENTION_DISPATCH(forward_tasks,
                          (const Problem& pr, void* out, const void* q, const void* k, const void* v, float* lse,
                           int64_t t0, int64_t t1),
                          (pr, out, q, k, v, lse, t0, t1))
LOWBIT_ATTENTION_DISPATCH(dq_tasks,
                          (const Problem& pr, void* dq, const void* g_out, const void* q, const void* k, const void* v,
                           const float* lse, const float* delta, int64_t t0, int64_t t1),
                          (pr, dq, g_out, q, k, v, lse, delta, t0, t1))
LOWBIT_ATTENTION_DISPATCH(dkv_tasks,
                          (const Problem& pr, void* dk, void* dv, const void* g_out, const void* q, const void* k,
                           const void* v, const float* lse, const float* delta, int64_t t0, int64_t t1),
                          (pr, dk, dv, g_out, q, k, v, lse, delta, t0, t1))

}  // namespace

void attention(void* out, const void* q, const void* k, const void* v, DType dt, const AttentionShape& s,
               const uint8_t* mask, float* lse) {
  const Problem pr = make_problem(s, mask, dt);
  parallel_for(s.B * s.Hkv * pr.nqb, task_grain(pr),
               [&](int64_t t0, int64_t t1) { forward_tasks(pr, out, q, k, v, lse, t0, t1); });
}

void attention_backward(void* dq, void* dk, void* dv, const void* g_out, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, DType dt, const AttentionShape& s, const uint8_t* mask) {
  const Problem pr = make_problem(s, mask, dt);
  const int64_t D = s.D, nrows = s.B * s.Hq * s.Tq;

  // delta (B, Hq, Tq) = rowsum(dO * O): the softmax-backward correction term.
  std::vector<float> delta(static_cast<size_t>(nrows));
  parallel_for(nrows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, D)), [&](int64_t r0, int64_t r1) {
    std::vector<float> a(static_cast<size_t>(D)), o(static_cast<size_t>(D));
    for (int64_t r = r0; r < r1; ++r) {
      load_run(g_out, dt, r * D, D, a.data());
      load_run(out, dt, r * D, D, o.data());
      delta[static_cast<size_t>(r)] = nn::dot_lanes(a.data(), o.data(), D);
    }
  });

  parallel_for(s.B * s.Hkv * pr.nqb, task_grain(pr), [&](int64_t t0, int64_t t1) {
    dq_tasks(pr, dq, g_out, q, k, v, lse, delta.data(), t0, t1);
  });
  const int64_t nkb = (s.Tk + kKeyBlock - 1) / kKeyBlock;
  // A dk/dv task sees every query row of its group against one key block.
  const int64_t dkv_work = pr.G * s.Tq * kKeyBlock * D;
  parallel_for(s.B * s.Hkv * nkb, std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, dkv_work)), [&](int64_t t0, int64_t t1) {
    dkv_tasks(pr, dk, dv, g_out, q, k, v, lse, delta.data(), t0, t1);
  });

  // Cache rows [Tk, S) never influence the output: their gradient is zero.
  if (s.S > s.Tk) {
    const int64_t tail = (s.S - s.Tk) * D;
    std::vector<float> zeros(static_cast<size_t>(std::min<int64_t>(tail, 1 << 16)), 0.0f);
    for (int64_t bh = 0; bh < s.B * s.Hkv; ++bh) {
      const int64_t off = bh * s.S * D + s.Tk * D;
      for (int64_t i = 0; i < tail; i += static_cast<int64_t>(zeros.size())) {
        const int64_t len = std::min<int64_t>(static_cast<int64_t>(zeros.size()), tail - i);
        store_run(dk, dt, off + i, len, zeros.data());
        store_run(dv, dt, off + i, len, zeros.data());
      }
    }
  }
}

}  // namespace lowbit::cpu
