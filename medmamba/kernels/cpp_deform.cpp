// Fused deformable sampling for CPU (the core of DCNv4), 2D and 3D: forward and hand-written backward.
//
// Semantics mirror medmamba/kernels/deform_sampling.py::torch_deformable_sample (grid_sample with
// bilinear/trilinear weights, zeros outside, align_corners=False, i.e. voxel coordinates):
//   out[b, p, g, :] = sum_k m[b,p,g,k] * interp(value[b, :, g, :], p + kernel_point[k] + scale * offset[b,p,g,k])
// with value (B, P, G, Cg) channel-last (P = voxels in row-major order), offset_mask (B, P, G, K, d+1)
// holding the d offsets then the modulation m. The torch path materialises the (B, G, Cg, P, K)
// samples and multiplies them by m; here each output row is accumulated in place from the 2^d
// corner rows of Cg contiguous channels (the vector lanes), nothing is materialised.
//
// Forward: one task per (batch, voxel) range, each writes its own output rows.
// Backward: one task per (batch, group): only that task reads or writes value[b, :, g, :] and
// its gradient, so the scatter of the value gradient needs no atomics; offset and modulation
// gradients of (b, p, g, k) are written by that same task.
// A non-finite position (NaN/inf offset) gives NaN, as grid_sample does; a finite position
// outside the volume gives 0.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace {

constexpr int MAX_DIMS = 3;

struct Geometry {
  int64_t batch = 0, points = 0, groups = 0, cg = 0, n_kernel = 0, dims = 0;
  int64_t size[MAX_DIMS] = {1, 1, 1};
};

Geometry geometry_of(const at::Tensor& value, const at::Tensor& offset_mask, const at::Tensor& kernel_points) {
  Geometry s;
  s.dims = value.dim() - 3;
  TORCH_CHECK(s.dims == 2 || s.dims == 3, "deformable sampling: value must be (B, *spatial, G, Cg) in 2D or 3D");
  s.batch = value.size(0);
  s.points = 1;
  for (int64_t a = 0; a < s.dims; ++a) {
    s.size[a] = value.size(1 + a);
    s.points *= s.size[a];
  }
  s.groups = value.size(-2);
  s.cg = value.size(-1);
  s.n_kernel = kernel_points.size(0);
  TORCH_CHECK(kernel_points.dim() == 2 && kernel_points.size(1) == s.dims, "kernel_points must be (K, d)");
  TORCH_CHECK(offset_mask.numel() == s.batch * s.points * s.groups * s.n_kernel * (s.dims + 1),
              "offset_mask must be (B, *spatial, G, K, d + 1)");
  TORCH_CHECK(value.is_contiguous() && offset_mask.is_contiguous() && kernel_points.is_contiguous(),
              "deformable sampling takes contiguous tensors");
  return s;
}

// Voxel coordinates of flat index p (row-major).
inline void unravel(int64_t p, const Geometry& s, int64_t* coord) {
  for (int64_t a = s.dims - 1; a >= 0; --a) {
    coord[a] = p % s.size[a];
    p /= s.size[a];
  }
}

// Where one kernel point samples: the lower corner and the fractional parts per axis.
template <typename T>
struct Location {
  int64_t lo[MAX_DIMS];
  T frac[MAX_DIMS];
};

enum class Where { inside, outside, not_finite };

// Position of kernel point k of the voxel at coord; `outside` when no corner lies in the volume
// (checked before floor so huge offsets never overflow the integer conversion).
template <int ND, typename T>
inline Where locate(const int64_t* coord, const T* kernel_point, const T* offset, T scale, const Geometry& s,
                    Location<T>& loc) {
  Where where = Where::inside;
  for (int a = 0; a < ND; ++a) {
    const T pos = static_cast<T>(coord[a]) + kernel_point[a] + scale * offset[a];
    if (!std::isfinite(pos)) return Where::not_finite;
    if (!(pos > T(-1) && pos < static_cast<T>(s.size[a]))) {
      where = Where::outside;
      continue;
    }
    const T fl = std::floor(pos);
    loc.lo[a] = static_cast<int64_t>(fl);
    loc.frac[a] = pos - fl;
  }
  return where;
}

// Corner c (bit a = upper neighbour along axis a): flat voxel index, or -1 when outside; and the
// per-axis interpolation weights.
template <int ND, typename T>
inline int64_t corner(const Location<T>& loc, int c, const Geometry& s, T* axis_weight) {
  int64_t index = 0;
  bool inside = true;
  for (int a = 0; a < ND; ++a) {
    const bool upper = (c >> a) & 1;
    const int64_t i = loc.lo[a] + (upper ? 1 : 0);
    inside = inside && i >= 0 && i < s.size[a];
    index = index * s.size[a] + i;
    axis_weight[a] = upper ? loc.frac[a] : T(1) - loc.frac[a];
  }
  return inside ? index : -1;
}

// ND spatial axes and CG channels per group fixed at compile time where they are known (2D/3D,
// and CG = 32, HRVMamba's d_inner / groups) so that the corner loops unroll and a voxel's CG
// outputs are summed in registers; CG = 0 is the general case, summed in the output row.
template <typename T, int ND, int CG>
void forward_impl(const T* value, const T* om, const T* kernel_points, T scale, const Geometry& s, T* out) {
  const int64_t K = s.n_kernel, G = s.groups, Cg = CG > 0 ? CG : s.cg;
  constexpr int n_corners = 1 << ND;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  at::parallel_for(0, s.batch * s.points, 16, [&](int64_t begin, int64_t end) {
    int64_t coord[MAX_DIMS];
    T axis_weight[MAX_DIMS];
    Location<T> loc;
    T local[CG > 0 ? CG : 1];
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / s.points;
      unravel(bp % s.points, s, coord);
      const T* value_b = value + b * s.points * G * Cg;
      for (int64_t g = 0; g < G; ++g) {
        T* o = out + (bp * G + g) * Cg;
        T* acc = CG > 0 ? local : o;
        for (int64_t ch = 0; ch < Cg; ++ch) acc[ch] = T(0);
        for (int64_t k = 0; k < K; ++k) {
          const T* q = om + ((bp * G + g) * K + k) * (ND + 1);
          const Where where = locate<ND>(coord, kernel_points + k * ND, q, scale, s, loc);
          if (where == Where::not_finite) {
            for (int64_t ch = 0; ch < Cg; ++ch) acc[ch] = nan;
            continue;
          }
          if (where == Where::outside) continue;
          const T m = q[ND];
          for (int c = 0; c < n_corners; ++c) {
            const int64_t index = corner<ND>(loc, c, s, axis_weight);
            if (index < 0) continue;
            T w = m;
            for (int a = 0; a < ND; ++a) w *= axis_weight[a];
            const T* v = value_b + (index * G + g) * Cg;
#pragma omp simd
            for (int64_t ch = 0; ch < Cg; ++ch) acc[ch] += w * v[ch];
          }
        }
        if (CG > 0) {
          for (int64_t ch = 0; ch < Cg; ++ch) o[ch] = acc[ch];
        }
      }
    }
  });
}

template <typename T>
void forward_dispatch(const T* value, const T* om, const T* kernel_points, T scale, const Geometry& s, T* out) {
  if (s.dims == 2) {
    if (s.cg == 32) return forward_impl<T, 2, 32>(value, om, kernel_points, scale, s, out);
    return forward_impl<T, 2, 0>(value, om, kernel_points, scale, s, out);
  }
  if (s.cg == 32) return forward_impl<T, 3, 32>(value, om, kernel_points, scale, s, out);
  forward_impl<T, 3, 0>(value, om, kernel_points, scale, s, out);
}

template <typename T, int ND>
void backward_impl(const T* gout, const T* value, const T* om, const T* kernel_points, T scale, const Geometry& s,
                   T* gvalue, T* gom) {
  constexpr int64_t d = ND;
  const int64_t K = s.n_kernel, G = s.groups, Cg = s.cg;
  constexpr int n_corners = 1 << ND;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  at::parallel_for(0, s.batch * G, 1, [&](int64_t begin, int64_t end) {
    int64_t coord[MAX_DIMS];
    T axis_weight[MAX_DIMS];
    Location<T> loc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / G, g = task % G;
      const T* value_b = value + b * s.points * G * Cg;
      T* gvalue_b = gvalue + b * s.points * G * Cg;
      for (int64_t p = 0; p < s.points; ++p) {
        const int64_t bp = b * s.points + p;
        unravel(p, s, coord);
        const T* go = gout + (bp * G + g) * Cg;
        for (int64_t k = 0; k < K; ++k) {
          const T* q = om + ((bp * G + g) * K + k) * (d + 1);
          T* gq = gom + ((bp * G + g) * K + k) * (d + 1);
          const Where where = locate<ND>(coord, kernel_points + k * d, q, scale, s, loc);
          if (where != Where::inside) {
            const T fill = where == Where::not_finite ? nan : T(0);
            for (int64_t a = 0; a <= d; ++a) gq[a] = fill;
            continue;
          }
          const T m = q[d];
          T gm = 0;
          T gpos[MAX_DIMS] = {T(0), T(0), T(0)};
          for (int c = 0; c < n_corners; ++c) {
            const int64_t index = corner<ND>(loc, c, s, axis_weight);
            if (index < 0) continue;  // zero value outside: no gradient through this corner
            T w = T(1);
            for (int64_t a = 0; a < d; ++a) w *= axis_weight[a];
            const T mw = m * w;
            const T* v = value_b + (index * G + g) * Cg;
            T* gv = gvalue_b + (index * G + g) * Cg;
            T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t ch = 0; ch < Cg; ++ch) {
              dot += go[ch] * v[ch];
              gv[ch] += mw * go[ch];
            }
            gm += w * dot;
            // d w / d pos_a = (+1 upper, -1 lower) * product of the other axes' weights
            for (int64_t a = 0; a < d; ++a) {
              T others = ((c >> a) & 1) ? T(1) : T(-1);
              for (int64_t e = 0; e < d; ++e) {
                if (e != a) others *= axis_weight[e];
              }
              gpos[a] += others * dot;
            }
          }
          for (int64_t a = 0; a < d; ++a) gq[a] = scale * m * gpos[a];
          gq[d] = gm;
        }
      }
    }
  });
}

void deform_forward(const at::Tensor& value, const at::Tensor& offset_mask, const at::Tensor& kernel_points,
                    double scale, at::Tensor& out) {
  const Geometry s = geometry_of(value, offset_mask, kernel_points);
  TORCH_CHECK(out.is_contiguous() && out.numel() == value.numel(), "out must be contiguous like value");
  if (value.scalar_type() == at::kDouble) {
    forward_dispatch<double>(value.data_ptr<double>(), offset_mask.data_ptr<double>(), kernel_points.data_ptr<double>(),
                         scale, s, out.data_ptr<double>());
  } else {
    TORCH_CHECK(value.scalar_type() == at::kFloat, "deformable sampling runs in float32 or float64");
    forward_dispatch<float>(value.data_ptr<float>(), offset_mask.data_ptr<float>(), kernel_points.data_ptr<float>(),
                        static_cast<float>(scale), s, out.data_ptr<float>());
  }
}

void deform_backward(const at::Tensor& gout, const at::Tensor& value, const at::Tensor& offset_mask,
                     const at::Tensor& kernel_points, double scale, at::Tensor& gvalue, at::Tensor& gom) {
  const Geometry s = geometry_of(value, offset_mask, kernel_points);
  TORCH_CHECK(gout.is_contiguous() && gvalue.is_contiguous() && gom.is_contiguous(),
              "gradients must be contiguous");
  if (value.scalar_type() == at::kDouble) {
    (s.dims == 2 ? backward_impl<double, 2> : backward_impl<double, 3>)(gout.data_ptr<double>(), value.data_ptr<double>(), offset_mask.data_ptr<double>(),
                          kernel_points.data_ptr<double>(), scale, s, gvalue.data_ptr<double>(),
                          gom.data_ptr<double>());
  } else {
    TORCH_CHECK(value.scalar_type() == at::kFloat, "deformable sampling runs in float32 or float64");
    (s.dims == 2 ? backward_impl<float, 2> : backward_impl<float, 3>)(gout.data_ptr<float>(), value.data_ptr<float>(), offset_mask.data_ptr<float>(),
                         kernel_points.data_ptr<float>(), static_cast<float>(scale), s, gvalue.data_ptr<float>(),
                         gom.data_ptr<float>());
  }
}

}  // namespace

TORCH_LIBRARY(medmamba_cpp_deform, m) {
  m.def("forward(Tensor value, Tensor offset_mask, Tensor kernel_points, float scale, Tensor(a!) out) -> ()");
  m.def("backward(Tensor gout, Tensor value, Tensor offset_mask, Tensor kernel_points, float scale, "
        "Tensor(a!) gvalue, Tensor(b!) gom) -> ()");
  m.impl("forward", c10::DispatchKey::CPU, &deform_forward);
  m.impl("backward", c10::DispatchKey::CPU, &deform_backward);
}
