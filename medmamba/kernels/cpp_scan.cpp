// Fused multi-route selective scan for CPU: forward and hand-written backward.
//
// Semantics and argument layout mirror medmamba/kernels/torch_scan.py (the Python side casts,
// allocates and applies the z gate; this file only runs the recurrence). One task owns one
// (batch, block of W channels) pair and walks every route k in turn, so outputs accumulated over
// routes (y, du) have a single writer. The W channels of a block are the vector lanes: each time
// step loads W contiguous channels of u and delta at the route's position (the route gather is an
// index into the raster-order tensors, no permuted copy exists), then updates the (N, W) state
// held in a small stack array (L1), one exp2 per lane-step.
//
// The forward keeps the state at the start of every chunk of T steps (when asked); the backward
// walks chunks last to first, recomputes the chunk's states and decays from the saved one into a
// (T+1, N, W) scratch and runs the adjoint recurrence g_t = C_t*gy_t + a_{t+1}*g_{t+1} backwards.
// dB/dC are sums over channels: each channel block writes its own partial (summed in Python), so
// no two tasks write the same element.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

constexpr int W = 16;         // channels per task = vector lanes (two AVX2 registers of fp32)
constexpr int MAX_N = 64;     // largest d_state held on the stack
constexpr double LOG2E = 1.4426950408889634;

// exp2 for fp32 in plain arithmetic so the compiler vectorises it across the W lanes:
// 2^x = 2^r * 2^f with r = round(x), |f| <= 1/2, 2^f by a degree-5 polynomial fitted to the
// relative error at Chebyshev nodes (max relative error 2.2e-7 in fp32, measured over 1e5
// points). The range is limited on the integer exponent (one integer max and min), not on x:
// GCC turns a clamp of x into compares and blends around the polynomial, a third of the scan's
// hot loop. Below 2^-126 the result is 0 (the kernel flushes denormals anyway); above 2^127 it
// saturates near 2^127; x >= 2^31 gives 0 (an unstable A > 0 with an absurd step; the per-step
// callers below clamp x first), NaN gives NaN.
inline float fast_exp2(float x) {
  const float r = (x + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const float f = x - r;
  float p = 1.3266970386e-3f;
  p = p * f + 9.6754597455e-3f;
  p = p * f + 5.5507426160e-2f;
  p = p * f + 2.4022121754e-1f;
  p = p * f + 6.9314694916e-1f;
  p = p * f + 1.000000071f;
  int32_t e = static_cast<int32_t>(r) + 127;
  e = e < 0 ? 0 : e;
  e = e > 254 ? 254 : e;
  return p * __builtin_bit_cast(float, static_cast<int32_t>(static_cast<uint32_t>(e) << 23));
}

// fast_exp2 with x clamped to the normal range (per-step softplus/sigmoid, off the per-state path).
inline float fast_exp2_clamped(float x) {
  x = x < -126.0f ? -126.0f : x;
  return fast_exp2(x > 126.0f ? 126.0f : x);
}

// log(1 + e) for e >= 0 in plain arithmetic: m * 2^k = 1 + e with m in [sqrt(1/2), sqrt(2)),
// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, odd series to s^11 (error < 4e-10).
inline float fast_log1p_pos(float e) {
  const float v = 1.0f + e;
  int32_t bits = __builtin_bit_cast(int32_t, v);
  int32_t k = ((bits >> 23) & 0xff) - 127;
  float m = __builtin_bit_cast(float, (bits & 0x007fffff) | 0x3f800000);
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  const float small = e - 0.5f * e * e;  // 1 + e rounds away e below ~1e-4: use the series
  return e < 1e-4f ? small : 0.69314718055994531f * static_cast<float>(k) + 2.0f * s * p;
}

template <typename T> struct Math;

template <> struct Math<float> {
  static float exp2(float x) { return fast_exp2(x); }
  // torch's softplus: x above the threshold 20 is returned as is
  static float softplus(float x) {
    const float e = fast_exp2_clamped((x < 20.0f ? x : 20.0f) * static_cast<float>(LOG2E));
    return x > 20.0f ? x : fast_log1p_pos(e);
  }
  static float sigmoid(float x) { return 1.0f / (1.0f + fast_exp2_clamped(-x * static_cast<float>(LOG2E))); }
};

// fp64 is the exactness path (gradcheck): libm functions, not vectorised.
template <> struct Math<double> {
  static double exp2(double x) { return std::exp2(x); }
  static double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
  static double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
};

// Flush denormals to zero inside the kernel (a decayed state near 1e-38 otherwise costs ~100x per
// operation on x86); restores the caller's mode on exit.
struct DenormalsAreZero {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  DenormalsAreZero() { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~DenormalsAreZero() { _mm_setcsr(saved); }
#endif
};

struct Shape {
  int64_t batch, L, C, K, N, T, n_chunks, n_blocks;
  int64_t y_sb, y_sk;  // batch and route strides of y / gout: (batch, L, C) summed or (batch, K, L, C) per route
};

template <typename T>
struct Inputs {
  const T *u, *delta, *A, *B, *C, *D, *bias;
  const int64_t* routes;
  int64_t su0, su1;            // u (batch, L, C), channel stride 1
  int64_t sd0, sd1, sd2;       // delta (batch, K, L, C), channel stride 1
  int64_t sb0, sb1, sb2, sb3;  // B (batch, K, L, N)
  int64_t sc0, sc1, sc2, sc3;  // C (batch, K, L, N)
  bool softplus;
};

template <typename T>
Inputs<T> inputs_of(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                    const at::Tensor& C, const at::Tensor& D, const at::Tensor& bias, const at::Tensor& routes,
                    bool softplus) {
  TORCH_CHECK(u.stride(2) == 1 && delta.stride(3) == 1, "u and delta need unit channel stride");
  TORCH_CHECK(A.is_contiguous() && routes.is_contiguous(), "A and routes must be contiguous");
  Inputs<T> in;
  in.u = u.data_ptr<T>();
  in.delta = delta.data_ptr<T>();
  in.A = A.data_ptr<T>();
  in.B = B.data_ptr<T>();
  in.C = C.data_ptr<T>();
  in.D = D.numel() ? D.data_ptr<T>() : nullptr;
  in.bias = bias.numel() ? bias.data_ptr<T>() : nullptr;
  in.routes = routes.data_ptr<int64_t>();
  in.su0 = u.stride(0); in.su1 = u.stride(1);
  in.sd0 = delta.stride(0); in.sd1 = delta.stride(1); in.sd2 = delta.stride(2);
  in.sb0 = B.stride(0); in.sb1 = B.stride(1); in.sb2 = B.stride(2); in.sb3 = B.stride(3);
  in.sc0 = C.stride(0); in.sc1 = C.stride(1); in.sc2 = C.stride(2); in.sc3 = C.stride(3);
  in.softplus = softplus;
  return in;
}

// Per-route constants of one channel block, lanes past the last channel padded neutrally.
template <typename T>
struct RouteConsts {
  alignas(64) T A2[MAX_N * W];   // A * log2(e), (N, W)
  alignas(64) T A[MAX_N * W];
  alignas(64) T D[W];
  alignas(64) T bias[W];

  void load(const Inputs<T>& in, const Shape& s, int64_t k, int64_t c0, int nw) {
    for (int64_t n = 0; n < s.N; ++n)
      for (int w = 0; w < W; ++w) {
        const T a = w < nw ? in.A[(k * s.C + c0 + w) * s.N + n] : T(0);
        A[n * W + w] = a;
        A2[n * W + w] = a * static_cast<T>(LOG2E);
      }
    for (int w = 0; w < W; ++w) {
      D[w] = (in.D && w < nw) ? in.D[k * s.C + c0 + w] : T(0);
      bias[w] = (in.bias && w < nw) ? in.bias[k * s.C + c0 + w] : T(0);
    }
  }
};

// δ (after bias and softplus), σ(pre) (the softplus derivative, 1 without softplus) and u for
// route k at raster position p, W lanes.
template <typename T>
inline void load_step(const Inputs<T>& in, const RouteConsts<T>& rc, int64_t b, int64_t k, int64_t p,
                      int64_t c0, int nw, T* dv, T* sig, T* uu) {
  const T* up = in.u + b * in.su0 + p * in.su1 + c0;
  const T* dp = in.delta + b * in.sd0 + k * in.sd1 + p * in.sd2 + c0;
  if (nw == W) {
    for (int w = 0; w < W; ++w) { uu[w] = up[w]; dv[w] = dp[w] + rc.bias[w]; }
  } else {
    for (int w = 0; w < W; ++w) { uu[w] = w < nw ? up[w] : T(0); dv[w] = (w < nw ? dp[w] : T(0)) + rc.bias[w]; }
  }
  if (in.softplus) {
    if (sig) for (int w = 0; w < W; ++w) sig[w] = Math<T>::sigmoid(dv[w]);
    for (int w = 0; w < W; ++w) dv[w] = Math<T>::softplus(dv[w]);
  } else if (sig) {
    for (int w = 0; w < W; ++w) sig[w] = T(1);
  }
}

// Routes other than the raster one visit the tokens with a large stride (a column route of a
// 32x32 map jumps 32 rows, 24 KiB of u, per step), a new cache line and often a new page for
// every array at every step, which the hardware prefetchers do not follow. The route is known
// ahead, so the loops below prefetch the rows of the step PREFETCH_STEPS ahead. (2-vCPU AVX2 EPYC,
// 1 thread, batch 2, 4 cross2d routes on 32x32, 192 channels, N 16, best CPU time of 15 on a
// loaded machine: backward 53-73 ms before, 42-52 ms after, 42 ms for raster-only routes;
// forward 25-29 ms before, 19 ms after.)
constexpr int64_t PREFETCH_STEPS = 4;

template <typename T>
inline void prefetch_inputs(const Inputs<T>& in, int64_t b, int64_t k, int64_t p, int64_t c0) {
  __builtin_prefetch(in.u + b * in.su0 + p * in.su1 + c0);
  __builtin_prefetch(in.delta + b * in.sd0 + k * in.sd1 + p * in.sd2 + c0);
  __builtin_prefetch(in.B + b * in.sb0 + k * in.sb1 + p * in.sb2);
  __builtin_prefetch(in.C + b * in.sc0 + k * in.sc1 + p * in.sc2);
}

template <typename T>
void forward_impl(const Inputs<T>& in, const Shape& s, T* y, T* states, bool save) {
  at::parallel_for(0, s.batch * s.n_blocks, 1, [&](int64_t begin, int64_t end) {
    DenormalsAreZero ftz;
    RouteConsts<T> rc;
    alignas(64) T h[MAX_N * W];
    alignas(64) T dv[W], uu[W], du[W], yy[W];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.n_blocks, c0 = (task % s.n_blocks) * W;
      const int nw = static_cast<int>(std::min<int64_t>(W, s.C - c0));
      for (int64_t k = 0; k < s.K; ++k) {
        rc.load(in, s, k, c0, nw);
        std::fill(h, h + s.N * W, T(0));
        const int64_t* route = in.routes + k * s.L;
        for (int64_t t = 0, to_save = 0; t < s.L; ++t, --to_save) {
          if (save && to_save == 0) {  // chunk start: states (n_chunks, batch, K, C, N)
            T* st = states + (((t / s.T) * s.batch + b) * s.K + k) * s.C * s.N + c0 * s.N;
            for (int w = 0; w < nw; ++w)
              for (int64_t n = 0; n < s.N; ++n) st[w * s.N + n] = h[n * W + w];
            to_save = s.T;
          }
          const int64_t p = route[t];
          if (t + PREFETCH_STEPS < s.L) {
            const int64_t q = route[t + PREFETCH_STEPS];
            prefetch_inputs(in, b, k, q, c0);
            __builtin_prefetch(y + b * s.y_sb + k * s.y_sk + q * s.C + c0, 1);
          }
          load_step(in, rc, b, k, p, c0, nw, dv, static_cast<T*>(nullptr), uu);
          for (int w = 0; w < W; ++w) { du[w] = dv[w] * uu[w]; yy[w] = rc.D[w] * uu[w]; }
          const T* Bp = in.B + b * in.sb0 + k * in.sb1 + p * in.sb2;
          const T* Cp = in.C + b * in.sc0 + k * in.sc1 + p * in.sc2;
          for (int64_t n = 0; n < s.N; ++n) {
            const T bn = Bp[n * in.sb3], cn = Cp[n * in.sc3];
            T* hn = h + n * W;
            const T* a2 = rc.A2 + n * W;
#pragma GCC ivdep
            for (int w = 0; w < W; ++w) {
              const T hv = Math<T>::exp2(dv[w] * a2[w]) * hn[w] + du[w] * bn;
              hn[w] = hv;
              yy[w] += hv * cn;
            }
          }
          T* yp = y + b * s.y_sb + k * s.y_sk + p * s.C + c0;
          for (int w = 0; w < nw; ++w) yp[w] += yy[w];
        }
      }
    }
  });
}

// Sum of the W lanes as a pairwise tree. (A reduction clause without -ffast-math compiled to 16
// dependent scalar adds per sum, two sums per state per step: more than half of the adjoint
// loop's instructions; GCC also scalarises a plain-C tree, hence the AVX version for fp32.)
template <typename T>
inline T lane_sum(const T* v) {
  static_assert(W == 16, "lane_sum is written for 16 lanes");
  T h[8];
  for (int w = 0; w < 8; ++w) h[w] = v[w] + v[w + 8];
  return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}

#if defined(__AVX__)
template <>
inline float lane_sum<float>(const float* v) {  // v is 32-byte aligned
  const __m256 a = _mm256_add_ps(_mm256_load_ps(v), _mm256_load_ps(v + 8));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}
#endif

template <typename T>
void backward_impl(const Inputs<T>& in, const Shape& s, const T* gout, const T* states, T* du_out,
                   T* ddelta, T* dB_part, T* dC_part, T* dA_part, T* dD_part, T* dbias_part) {
  at::parallel_for(0, s.batch * s.n_blocks, 1, [&](int64_t begin, int64_t end) {
    DenormalsAreZero ftz;
    RouteConsts<T> rc;
    const int64_t NW = s.N * W;
    // per chunk: states after each step (slot 0 = the chunk's start state) and decays
    std::vector<T> hs_buf((s.T + 1) * NW), as_buf(s.T * NW), dv_buf(s.T * W), sig_buf(s.T * W), uu_buf(s.T * W);
    alignas(64) T gc[MAX_N * W], dA_acc[MAX_N * W];
    alignas(64) T gy[W], gB[W], ddl[W], dD_acc[W], db_acc[W], dvu[W], pc[W], pb[W];
    T *hs = hs_buf.data(), *as = as_buf.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.n_blocks, blk = task % s.n_blocks, c0 = blk * W;
      const int nw = static_cast<int>(std::min<int64_t>(W, s.C - c0));
      for (int64_t k = 0; k < s.K; ++k) {
        rc.load(in, s, k, c0, nw);
        const int64_t* route = in.routes + k * s.L;
        std::fill(gc, gc + NW, T(0));
        std::fill(dA_acc, dA_acc + NW, T(0));
        std::fill(dD_acc, dD_acc + W, T(0));
        std::fill(db_acc, db_acc + W, T(0));
        T* dBk = dB_part + ((blk * s.batch + b) * s.K + k) * s.L * s.N;
        T* dCk = dC_part + ((blk * s.batch + b) * s.K + k) * s.L * s.N;
        for (int64_t j = s.n_chunks - 1; j >= 0; --j) {
          const int64_t t0 = j * s.T, steps = std::min(s.L, t0 + s.T) - t0;
          const T* st = states + ((j * s.batch + b) * s.K + k) * s.C * s.N + c0 * s.N;
          for (int64_t n = 0; n < s.N; ++n)
            for (int w = 0; w < W; ++w) hs[n * W + w] = w < nw ? st[w * s.N + n] : T(0);
          // recompute the chunk forward
          for (int64_t i = 0; i < steps; ++i) {
            const int64_t p = route[t0 + i];
            if (i + PREFETCH_STEPS < steps) prefetch_inputs(in, b, k, route[t0 + i + PREFETCH_STEPS], c0);
            T *dv = dv_buf.data() + i * W, *uu = uu_buf.data() + i * W;
            load_step(in, rc, b, k, p, c0, nw, dv, sig_buf.data() + i * W, uu);
            const T* Bp = in.B + b * in.sb0 + k * in.sb1 + p * in.sb2;
            const T* hprev = hs + i * NW;
            T* hnext = hs + (i + 1) * NW;
            T* ai = as + i * NW;
            for (int64_t n = 0; n < s.N; ++n) {
              const T bn = Bp[n * in.sb3];
              const T* a2 = rc.A2 + n * W;
#pragma GCC ivdep
              for (int w = 0; w < W; ++w) {
                const T a = Math<T>::exp2(dv[w] * a2[w]);
                ai[n * W + w] = a;
                hnext[n * W + w] = a * hprev[n * W + w] + dv[w] * uu[w] * bn;
              }
            }
          }
          // adjoint, last step first
          for (int64_t i = steps - 1; i >= 0; --i) {
            const int64_t p = route[t0 + i];
            if (i >= PREFETCH_STEPS) {  // rows the recompute above did not touch: gradient in and out
              const int64_t q = route[t0 + i - PREFETCH_STEPS];
              __builtin_prefetch(gout + b * s.y_sb + k * s.y_sk + q * s.C + c0);
              __builtin_prefetch(du_out + (b * s.L + q) * s.C + c0, 1);
              __builtin_prefetch(ddelta + ((b * s.K + k) * s.L + q) * s.C + c0, 1);
              __builtin_prefetch(dBk + q * s.N, 1);
              __builtin_prefetch(dCk + q * s.N, 1);
            }
            const T *dv = dv_buf.data() + i * W, *uu = uu_buf.data() + i * W, *sg = sig_buf.data() + i * W;
            const T* gp = gout + b * s.y_sb + k * s.y_sk + p * s.C + c0;
            for (int w = 0; w < W; ++w) {
              gy[w] = w < nw ? gp[w] : T(0); gB[w] = T(0); ddl[w] = T(0); dvu[w] = dv[w] * uu[w];
            }
            const T* Bp = in.B + b * in.sb0 + k * in.sb1 + p * in.sb2;
            const T* Cp = in.C + b * in.sc0 + k * in.sc1 + p * in.sc2;
            const T* hprev = hs + i * NW;
            const T* hcur = hs + (i + 1) * NW;
            const T* ai = as + i * NW;
            for (int64_t n = 0; n < s.N; ++n) {
              const T bn = Bp[n * in.sb3], cn = Cp[n * in.sc3];
              const T* An = rc.A + n * W;
              T* gcn = gc + n * W;
              T* dAn = dA_acc + n * W;
#pragma GCC ivdep
              for (int w = 0; w < W; ++w) {
                const T g = gcn[w] + cn * gy[w];
                pc[w] = gy[w] * hcur[n * W + w];
                pb[w] = g * dvu[w];
                const T x = g * hprev[n * W + w] * ai[n * W + w];
                ddl[w] += x * An[w];
                dAn[w] += x * dv[w];
                gB[w] += g * bn;
                gcn[w] = ai[n * W + w] * g;
              }
              dCk[p * s.N + n] = lane_sum(pc);
              dBk[p * s.N + n] = lane_sum(pb);
            }
            T* dup = du_out + (b * s.L + p) * s.C + c0;
            T* ddp = ddelta + ((b * s.K + k) * s.L + p) * s.C + c0;
            for (int w = 0; w < nw; ++w) {
              dup[w] += dv[w] * gB[w] + rc.D[w] * gy[w];
              const T dd = (ddl[w] + gB[w] * uu[w]) * sg[w];
              ddp[w] = dd;
              db_acc[w] += dd;
              dD_acc[w] += gy[w] * uu[w];
            }
          }
        }
        // per-batch partials (batch, K, C[, N]); summed over batch in Python
        T* dAp = dA_part + ((b * s.K + k) * s.C + c0) * s.N;
        for (int w = 0; w < nw; ++w) {
          for (int64_t n = 0; n < s.N; ++n) dAp[w * s.N + n] = dA_acc[n * W + w];
          dD_part[(b * s.K + k) * s.C + c0 + w] = dD_acc[w];
          dbias_part[(b * s.K + k) * s.C + c0 + w] = db_acc[w];
        }
      }
    }
  });
}

Shape shape_of(const at::Tensor& u, const at::Tensor& A, int64_t chunk, bool per_route) {
  Shape s;
  s.batch = u.size(0); s.L = u.size(1); s.C = u.size(2);
  s.K = A.size(0); s.N = A.size(2);
  TORCH_CHECK(s.N <= MAX_N, "d_state above ", MAX_N, " is not supported by the cpp scan");
  s.T = chunk;
  s.n_chunks = (s.L + chunk - 1) / chunk;
  s.n_blocks = (s.C + W - 1) / W;
  s.y_sk = per_route ? s.L * s.C : 0;
  s.y_sb = per_route ? s.K * s.L * s.C : s.L * s.C;
  return s;
}

void scan_forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const at::Tensor& D, const at::Tensor& bias, const at::Tensor& routes,
                  bool softplus, int64_t chunk, bool per_route, const at::Tensor& y, const at::Tensor& states,
                  bool save) {
  const Shape s = shape_of(u, A, chunk, per_route);
  TORCH_CHECK(y.numel() == s.batch * (per_route ? s.K : 1) * s.L * s.C, "y has the wrong size");
  TORCH_CHECK(y.is_contiguous() && (!save || states.is_contiguous()), "outputs must be contiguous");
  if (u.scalar_type() == at::kDouble) {
    forward_impl<double>(inputs_of<double>(u, delta, A, B, C, D, bias, routes, softplus), s, y.data_ptr<double>(),
                         save ? states.data_ptr<double>() : nullptr, save);
  } else {
    TORCH_CHECK(u.scalar_type() == at::kFloat, "cpp scan runs in float32 or float64");
    forward_impl<float>(inputs_of<float>(u, delta, A, B, C, D, bias, routes, softplus), s, y.data_ptr<float>(),
                        save ? states.data_ptr<float>() : nullptr, save);
  }
}

void scan_backward(const at::Tensor& gout, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                   const at::Tensor& B, const at::Tensor& C, const at::Tensor& D, const at::Tensor& bias,
                   const at::Tensor& routes, bool softplus, int64_t chunk, bool per_route, const at::Tensor& states,
                   const at::Tensor& du, const at::Tensor& ddelta, const at::Tensor& dB_part,
                   const at::Tensor& dC_part, const at::Tensor& dA_part, const at::Tensor& dD_part,
                   const at::Tensor& dbias_part) {
  const Shape s = shape_of(u, A, chunk, per_route);
  TORCH_CHECK(gout.numel() == s.batch * (per_route ? s.K : 1) * s.L * s.C, "gout has the wrong size");
  for (const at::Tensor* t : {&gout, &states, &du, &ddelta, &dB_part, &dC_part, &dA_part, &dD_part, &dbias_part})
    TORCH_CHECK(t->is_contiguous(), "backward buffers must be contiguous");
  if (u.scalar_type() == at::kDouble) {
    backward_impl<double>(inputs_of<double>(u, delta, A, B, C, D, bias, routes, softplus), s,
                          gout.data_ptr<double>(), states.data_ptr<double>(), du.data_ptr<double>(),
                          ddelta.data_ptr<double>(), dB_part.data_ptr<double>(), dC_part.data_ptr<double>(),
                          dA_part.data_ptr<double>(), dD_part.data_ptr<double>(), dbias_part.data_ptr<double>());
  } else {
    TORCH_CHECK(u.scalar_type() == at::kFloat, "cpp scan runs in float32 or float64");
    backward_impl<float>(inputs_of<float>(u, delta, A, B, C, D, bias, routes, softplus), s,
                         gout.data_ptr<float>(), states.data_ptr<float>(), du.data_ptr<float>(),
                         ddelta.data_ptr<float>(), dB_part.data_ptr<float>(), dC_part.data_ptr<float>(),
                         dA_part.data_ptr<float>(), dD_part.data_ptr<float>(), dbias_part.data_ptr<float>());
  }
}

// Size of the thread team of one parallel_for region here (1 when the extension was built without
// the OpenMP flag torch's own parallel_for needs).
int64_t team_size() {
  std::vector<char> seen(std::max(1, at::get_num_threads()), 0);
  at::parallel_for(0, static_cast<int64_t>(seen.size()) * 64, 1, [&](int64_t, int64_t) {
    const int id = at::get_thread_num();
    if (id >= 0 && id < static_cast<int>(seen.size())) seen[id] = 1;
  });
  return std::count(seen.begin(), seen.end(), 1);
}

}  // namespace

TORCH_LIBRARY(medmamba_cpp_scan, m) {
  m.def("team_size() -> int", &team_size);
  m.def("forward(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor D, Tensor bias, Tensor routes, "
        "bool softplus, int chunk, bool per_route, Tensor(a!) y, Tensor(b!) states, bool save) -> ()");
  m.def("backward(Tensor gout, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor D, Tensor bias, "
        "Tensor routes, bool softplus, int chunk, bool per_route, Tensor states, Tensor(a!) du, Tensor(b!) ddelta, "
        "Tensor(c!) dB_part, Tensor(d!) dC_part, Tensor(e!) dA_part, Tensor(f!) dD_part, "
        "Tensor(g!) dbias_part) -> ()");
  m.impl("forward", c10::DispatchKey::CPU, &scan_forward);
  m.impl("backward", c10::DispatchKey::CPU, &scan_backward);
}
