// Native CPU rasteriser of 3D Gaussians: EWA projection and tile-based alpha compositing,
// forward and analytic backward. Same maths as the pure-PyTorch backend
// (lyra_core/rendering/projection.py and backends/tiles.py), which follows gsplat:
//
// - projection: world -> camera, perspective Jacobian with the field-of-view clamp, 2D
//   covariance dilated by eps2d, conic = inverse covariance, opacity-aware bounding radii;
// - rasterisation: (Gaussian, tile) pairs sorted by tile then depth, front-to-back blending with
//   alpha = min(0.999, opacity * exp(-sigma)), contributions below 1/255 skipped, a pixel stops
//   (exclusive) once its transmittance would reach 1e-4.
//
// Pixel coordinates are corner-based (pixel (row i, col j) has its centre at (j + 0.5, i + 0.5)).
// Threads follow torch.get_num_threads() (at::parallel_for). The backward walks each pixel's list
// back to front, recovering the transmittance by division as gsplat does, and accumulates
// per-Gaussian gradients in per-thread buffers over a fixed tile-to-thread assignment, so that
// gradients are deterministic for a given thread count.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <limits>
#include <numeric>
#include <vector>

namespace {

constexpr double kAlphaThreshold = 1.0 / 255.0;
constexpr double kMaxAlpha = 0.999;
constexpr double kTransmittanceEps = 1e-4;
constexpr double kMaxExtent = 3.33;

// The kernels take contiguous float32 CPU tensors (the Python wrapper makes them so).
void check_inputs(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == at::kFloat,
                "the native rasteriser takes contiguous float32 CPU tensors");
  }
}

// ---------------------------------------------------------------------------------------------
// Projection
// ---------------------------------------------------------------------------------------------

template <typename T>
struct Mat3 {
  T m[3][3];
};

// Rotation matrix from a quaternion (w, x, y, z), normalised first.
template <typename T>
inline Mat3<T> quat_to_rotmat(const T* q, T* q_unit) {
  T w = q[0], x = q[1], y = q[2], z = q[3];
  T inv_norm = T(1) / std::sqrt(w * w + x * x + y * y + z * z);
  w *= inv_norm;
  x *= inv_norm;
  y *= inv_norm;
  z *= inv_norm;
  q_unit[0] = w;
  q_unit[1] = x;
  q_unit[2] = y;
  q_unit[3] = z;
  Mat3<T> r;
  r.m[0][0] = 1 - 2 * (y * y + z * z);
  r.m[0][1] = 2 * (x * y - w * z);
  r.m[0][2] = 2 * (x * z + w * y);
  r.m[1][0] = 2 * (x * y + w * z);
  r.m[1][1] = 1 - 2 * (x * x + z * z);
  r.m[1][2] = 2 * (y * z - w * x);
  r.m[2][0] = 2 * (x * z - w * y);
  r.m[2][1] = 2 * (y * z + w * x);
  r.m[2][2] = 1 - 2 * (x * x + y * y);
  return r;
}

// Everything the projection of one (camera, Gaussian) pair computes, reused by the backward.
template <typename T>
struct Projected {
  T p[3];     // camera-space centre
  T l[3][3];  // camera-space square root of the covariance: R_cam R_q S
  T t[2];     // clamped tx, ty
  bool clamped[2];
  T row_x[3], row_y[3];
  T a, b, c, det;
};

template <typename T>
inline void project_one(const T* mean, const T* quat, const T* scale, const T* view, const T* K,
                        int width, int height, T eps2d, Projected<T>& out, T* q_unit,
                        Mat3<T>& rq) {
  for (int i = 0; i < 3; ++i) {
    out.p[i] = view[i * 4 + 0] * mean[0] + view[i * 4 + 1] * mean[1] + view[i * 4 + 2] * mean[2] +
               view[i * 4 + 3];
  }
  rq = quat_to_rotmat(quat, q_unit);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      T sum = 0;
      for (int k = 0; k < 3; ++k) sum += view[i * 4 + k] * rq.m[k][j];
      out.l[i][j] = sum * scale[j];
    }
  }
  const T fx = K[0], fy = K[4], cx = K[2], cy = K[5];
  const T x = out.p[0], y = out.p[1], z = out.p[2];
  const T tan_fovx = T(0.5) * width / fx, tan_fovy = T(0.5) * height / fy;
  const T lim_x_pos = (width - cx) / fx + T(0.3) * tan_fovx;
  const T lim_x_neg = cx / fx + T(0.3) * tan_fovx;
  const T lim_y_pos = (height - cy) / fy + T(0.3) * tan_fovy;
  const T lim_y_neg = cy / fy + T(0.3) * tan_fovy;
  const T u = x / z, v = y / z;
  const T uc = std::max(std::min(u, lim_x_pos), -lim_x_neg);
  const T vc = std::max(std::min(v, lim_y_pos), -lim_y_neg);
  out.clamped[0] = uc != u;
  out.clamped[1] = vc != v;
  out.t[0] = z * uc;
  out.t[1] = z * vc;
  const T jx = fx / z, jxz = fx * out.t[0] / (z * z);
  const T jy = fy / z, jyz = fy * out.t[1] / (z * z);
  for (int k = 0; k < 3; ++k) {
    out.row_x[k] = jx * out.l[0][k] - jxz * out.l[2][k];
    out.row_y[k] = jy * out.l[1][k] - jyz * out.l[2][k];
  }
  T cov_xx = 0, cov_xy = 0, cov_yy = 0;
  for (int k = 0; k < 3; ++k) {
    cov_xx += out.row_x[k] * out.row_x[k];
    cov_xy += out.row_x[k] * out.row_y[k];
    cov_yy += out.row_y[k] * out.row_y[k];
  }
  out.a = cov_xx + eps2d;
  out.b = cov_xy;
  out.c = cov_yy + eps2d;
  out.det = std::max(out.a * out.c - out.b * out.b, T(1e-10));
}

template <typename T>
void project_forward_impl(const at::Tensor& means, const at::Tensor& quats,
                          const at::Tensor& scales, const at::Tensor& opacities,
                          const at::Tensor& viewmats, const at::Tensor& Ks, int width, int height,
                          double eps2d, double near, double far, at::Tensor& means2d,
                          at::Tensor& conics, at::Tensor& depths, at::Tensor& radii) {
  const int64_t num_cams = viewmats.size(0), num_gauss = means.size(0);
  const T* m = means.data_ptr<T>();
  const T* q = quats.data_ptr<T>();
  const T* s = scales.data_ptr<T>();
  const T* o = opacities.data_ptr<T>();
  const T* vm = viewmats.data_ptr<T>();
  const T* k = Ks.data_ptr<T>();
  T* out_m = means2d.data_ptr<T>();
  T* out_c = conics.data_ptr<T>();
  T* out_d = depths.data_ptr<T>();
  int32_t* out_r = radii.data_ptr<int32_t>();
  const T threshold = T(kAlphaThreshold);
  at::parallel_for(0, num_cams * num_gauss, 2048, [&](int64_t begin, int64_t end) {
    Projected<T> pr;
    Mat3<T> rq;
    T q_unit[4];
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t cam = idx / num_gauss, g = idx % num_gauss;
      const T* view = vm + cam * 16;
      const T* K = k + cam * 9;
      project_one<T>(m + g * 3, q + g * 4, s + g * 3, view, K, width, height, T(eps2d), pr,
                     q_unit, rq);
      const T z = pr.p[2];
      const T mx = K[0] * pr.p[0] / z + K[2];
      const T my = K[4] * pr.p[1] / z + K[5];
      out_m[idx * 2 + 0] = mx;
      out_m[idx * 2 + 1] = my;
      out_c[idx * 3 + 0] = pr.c / pr.det;
      out_c[idx * 3 + 1] = -pr.b / pr.det;
      out_c[idx * 3 + 2] = pr.a / pr.det;
      out_d[idx] = z;
      const T opac = o[g];
      T extent = std::sqrt(T(2) * std::log(std::max(opac / threshold, T(1))));
      extent = std::min(extent, T(kMaxExtent));
      const T rx = std::ceil(extent * std::sqrt(pr.a));
      const T ry = std::ceil(extent * std::sqrt(pr.c));
      const bool keep = pr.det > 0 && z > T(near) && z < T(far) && opac >= threshold &&
                        mx + rx > 0 && mx - rx < width && my + ry > 0 && my - ry < height &&
                        std::isfinite(rx) && std::isfinite(ry);
      out_r[idx * 2 + 0] = keep ? static_cast<int32_t>(rx) : 0;
      out_r[idx * 2 + 1] = keep ? static_cast<int32_t>(ry) : 0;
    }
  });
}

std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& quats,
                                        const at::Tensor& scales, const at::Tensor& opacities,
                                        const at::Tensor& viewmats, const at::Tensor& Ks,
                                        int64_t width, int64_t height, double eps2d, double near,
                                        double far) {
  check_inputs({&means, &quats, &scales, &opacities, &viewmats, &Ks});
  const int64_t num_cams = viewmats.size(0), num_gauss = means.size(0);
  auto opts = means.options();
  at::Tensor means2d = at::empty({num_cams, num_gauss, 2}, opts);
  at::Tensor conics = at::empty({num_cams, num_gauss, 3}, opts);
  at::Tensor depths = at::empty({num_cams, num_gauss}, opts);
  at::Tensor radii = at::empty({num_cams, num_gauss, 2}, opts.dtype(at::kInt));
  project_forward_impl<float>(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d,
                              near, far, means2d, conics, depths, radii);
  return {means2d, conics, depths, radii};
}

template <typename T>
void project_backward_impl(const at::Tensor& means, const at::Tensor& quats,
                           const at::Tensor& scales, const at::Tensor& viewmats,
                           const at::Tensor& Ks, int width, int height, double eps2d,
                           const at::Tensor& radii, const at::Tensor& v_means2d,
                           const at::Tensor& v_conics, const at::Tensor& v_depths,
                           at::Tensor& v_means, at::Tensor& v_quats, at::Tensor& v_scales) {
  const int64_t num_cams = viewmats.size(0), num_gauss = means.size(0);
  const T* m = means.data_ptr<T>();
  const T* q = quats.data_ptr<T>();
  const T* s = scales.data_ptr<T>();
  const T* vm = viewmats.data_ptr<T>();
  const T* kk = Ks.data_ptr<T>();
  const int32_t* r = radii.data_ptr<int32_t>();
  const T* g_m2 = v_means2d.data_ptr<T>();
  const T* g_c = v_conics.data_ptr<T>();
  const T* g_d = v_depths.data_ptr<T>();
  T* out_m = v_means.data_ptr<T>();
  T* out_q = v_quats.data_ptr<T>();
  T* out_s = v_scales.data_ptr<T>();
  // Parallel over Gaussians; cameras summed in a fixed order inside (deterministic).
  at::parallel_for(0, num_gauss, 1024, [&](int64_t begin, int64_t end) {
    Projected<T> pr;
    Mat3<T> rq;
    T qu[4] = {1, 0, 0, 0};
    for (int64_t g = begin; g < end; ++g) {
      T acc_m[3] = {0, 0, 0}, acc_s[3] = {0, 0, 0};
      T v_rq[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
      bool any = false;
      for (int64_t cam = 0; cam < num_cams; ++cam) {
        const int64_t idx = cam * num_gauss + g;
        if (r[idx * 2] <= 0 || r[idx * 2 + 1] <= 0) continue;  // culled: no gradient
        any = true;
        const T* view = vm + cam * 16;
        const T* K = kk + cam * 9;
        project_one<T>(m + g * 3, q + g * 4, s + g * 3, view, K, width, height, T(eps2d), pr,
                       qu, rq);
        const T fx = K[0], fy = K[4];
        const T x = pr.p[0], y = pr.p[1], z = pr.p[2];
        // conic = (c, -b, a) / det with det = a c - b^2.
        const T va_c = g_c[idx * 3 + 0], vb_c = g_c[idx * 3 + 1], vc_c = g_c[idx * 3 + 2];
        const T inv_det = T(1) / pr.det;
        T v_a = vc_c * inv_det, v_b = -vb_c * inv_det, v_c = va_c * inv_det;
        if (pr.a * pr.c - pr.b * pr.b > T(1e-10)) {
          const T v_det = -(va_c * pr.c - vb_c * pr.b + vc_c * pr.a) * inv_det * inv_det;
          v_a += v_det * pr.c;
          v_c += v_det * pr.a;
          v_b += -T(2) * pr.b * v_det;
        }
        // cov_xx = row_x . row_x, cov_xy = row_x . row_y, cov_yy = row_y . row_y.
        T v_rx[3], v_ry[3];
        for (int k = 0; k < 3; ++k) {
          v_rx[k] = T(2) * v_a * pr.row_x[k] + v_b * pr.row_y[k];
          v_ry[k] = T(2) * v_c * pr.row_y[k] + v_b * pr.row_x[k];
        }
        const T tx = pr.t[0], ty = pr.t[1];
        T l0_rx = 0, l2_rx = 0, l1_ry = 0, l2_ry = 0;
        for (int k = 0; k < 3; ++k) {
          l0_rx += pr.l[0][k] * v_rx[k];
          l2_rx += pr.l[2][k] * v_rx[k];
          l1_ry += pr.l[1][k] * v_ry[k];
          l2_ry += pr.l[2][k] * v_ry[k];
        }
        T v_l[3][3];
        for (int k = 0; k < 3; ++k) {
          v_l[0][k] = fx / z * v_rx[k];
          v_l[1][k] = fy / z * v_ry[k];
          v_l[2][k] = -fx * tx / (z * z) * v_rx[k] - fy * ty / (z * z) * v_ry[k];
        }
        T v_p[3] = {0, 0, 0};
        v_p[2] += -fx / (z * z) * l0_rx + T(2) * fx * tx / (z * z * z) * l2_rx -
                  fy / (z * z) * l1_ry + T(2) * fy * ty / (z * z * z) * l2_ry;
        const T v_tx = -fx / (z * z) * l2_rx, v_ty = -fy / (z * z) * l2_ry;
        // tx = z * clamp(x / z): d/dx = 1, d/dz = 0 unclamped; d/dz = the limit when clamped.
        if (pr.clamped[0]) {
          v_p[2] += v_tx * tx / z;
        } else {
          v_p[0] += v_tx;
        }
        if (pr.clamped[1]) {
          v_p[2] += v_ty * ty / z;
        } else {
          v_p[1] += v_ty;
        }
        const T vmx = g_m2[idx * 2 + 0], vmy = g_m2[idx * 2 + 1];
        v_p[0] += fx / z * vmx;
        v_p[1] += fy / z * vmy;
        v_p[2] += -fx * x / (z * z) * vmx - fy * y / (z * z) * vmy + g_d[idx];
        // p = R_cam mean + t;  L = R_cam R_q S.
        for (int j = 0; j < 3; ++j) {
          for (int i = 0; i < 3; ++i) acc_m[j] += view[i * 4 + j] * v_p[i];
        }
        for (int i = 0; i < 3; ++i) {
          for (int j = 0; j < 3; ++j) {
            T v_m = 0;  // gradient of (R_q S)[i][j]
            for (int k = 0; k < 3; ++k) v_m += view[k * 4 + i] * v_l[k][j];
            v_rq[i][j] += v_m * s[g * 3 + j];
            acc_s[j] += v_m * rq.m[i][j];
          }
        }
      }
      if (!any) {
        for (int k = 0; k < 3; ++k) out_m[g * 3 + k] = out_s[g * 3 + k] = 0;
        for (int k = 0; k < 4; ++k) out_q[g * 4 + k] = 0;
        continue;
      }
      for (int k = 0; k < 3; ++k) {
        out_m[g * 3 + k] = acc_m[k];
        out_s[g * 3 + k] = acc_s[k];
      }
      // Rotation matrix -> unit quaternion -> raw quaternion (normalisation).
      const T w = qu[0], x = qu[1], y = qu[2], z = qu[3];
      const auto& G = v_rq;
      T v_qu[4];
      v_qu[0] = 2 * (-z * G[0][1] + y * G[0][2] + z * G[1][0] - x * G[1][2] - y * G[2][0] +
                     x * G[2][1]);
      v_qu[1] = 2 * (y * G[0][1] + z * G[0][2] + y * G[1][0] - 2 * x * G[1][1] - w * G[1][2] +
                     z * G[2][0] + w * G[2][1] - 2 * x * G[2][2]);
      v_qu[2] = 2 * (-2 * y * G[0][0] + x * G[0][1] + w * G[0][2] + x * G[1][0] + z * G[1][2] -
                     w * G[2][0] + z * G[2][1] - 2 * y * G[2][2]);
      v_qu[3] = 2 * (-2 * z * G[0][0] - w * G[0][1] + x * G[0][2] + w * G[1][0] -
                     2 * z * G[1][1] + y * G[1][2] + x * G[2][0] + y * G[2][1]);
      const T* qr = q + g * 4;
      const T inv_norm = T(1) / std::sqrt(qr[0] * qr[0] + qr[1] * qr[1] + qr[2] * qr[2] +
                                          qr[3] * qr[3]);
      T dot = 0;
      for (int k = 0; k < 4; ++k) dot += qu[k] * v_qu[k];
      for (int k = 0; k < 4; ++k) out_q[g * 4 + k] = (v_qu[k] - qu[k] * dot) * inv_norm;
    }
  });
}

std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& quats,
                                         const at::Tensor& scales, const at::Tensor& viewmats,
                                         const at::Tensor& Ks, int64_t width, int64_t height,
                                         double eps2d, const at::Tensor& radii,
                                         const at::Tensor& v_means2d, const at::Tensor& v_conics,
                                         const at::Tensor& v_depths) {
  check_inputs({&means, &quats, &scales, &viewmats, &Ks, &v_means2d, &v_conics, &v_depths});
  at::Tensor v_means = at::empty_like(means);
  at::Tensor v_quats = at::empty_like(quats);
  at::Tensor v_scales = at::empty_like(scales);
  project_backward_impl<float>(means, quats, scales, viewmats, Ks, width, height, eps2d, radii,
                               v_means2d, v_conics, v_depths, v_means, v_quats, v_scales);
  return {v_means, v_quats, v_scales};
}

// ---------------------------------------------------------------------------------------------
// Tile binning
// ---------------------------------------------------------------------------------------------

// min over the box [u0, u1] x [v0, v1] of 0.5 a u^2 + b u v + 0.5 c v^2 (a convex quadratic).
template <typename T>
inline T min_quadratic_over_box(T u0, T v0, T u1, T v1, T a, T b, T c) {
  if (u0 <= 0 && u1 >= 0 && v0 <= 0 && v1 >= 0) return T(0);
  auto sigma = [&](T u, T v) { return T(0.5) * (a * u * u + c * v * v) + b * u * v; };
  auto clampv = [](T x, T lo, T hi) { return std::min(std::max(x, lo), hi); };
  T best = sigma(u0, clampv(-b * u0 / c, v0, v1));
  best = std::min(best, sigma(u1, clampv(-b * u1 / c, v0, v1)));
  best = std::min(best, sigma(clampv(-b * v0 / a, u0, u1), v0));
  best = std::min(best, sigma(clampv(-b * v1 / a, u0, u1), v1));
  return best;
}

struct TileGrid {
  int64_t tiles_x, tiles_y, tile_size;

  // The tiles covering a width x height image (edge tiles padded).
  static TileGrid covering(int64_t width, int64_t height, int64_t tile_size) {
    return {(width + tile_size - 1) / tile_size, (height + tile_size - 1) / tile_size, tile_size};
  }
};

// Visits the tiles of a Gaussian's opacity-aware bounding box where its alpha reaches 1/255 at
// some pixel centre (the same exact test as the torch backend).
template <typename T, typename F>
inline void for_each_tile(const T* mean2d, const T* conic, const int32_t* radius, T log_opacity,
                          const TileGrid& grid, F&& visit) {
  const T ts = T(grid.tile_size);
  const T cx = mean2d[0] / ts, cy = mean2d[1] / ts;
  const T rx = T(radius[0]) / ts, ry = T(radius[1]) / ts;
  auto clamp_tile = [](T value, int64_t limit) {
    return std::min<int64_t>(static_cast<int64_t>(std::max(value, T(0))), limit);
  };
  const int64_t x0 = clamp_tile(std::floor(cx - rx), grid.tiles_x);
  const int64_t x1 = clamp_tile(std::ceil(cx + rx), grid.tiles_x);
  const int64_t y0 = clamp_tile(std::floor(cy - ry), grid.tiles_y);
  const int64_t y1 = clamp_tile(std::ceil(cy + ry), grid.tiles_y);
  const T log_threshold = std::log(T(kAlphaThreshold));
  for (int64_t ty = y0; ty < y1; ++ty) {
    for (int64_t tx = x0; tx < x1; ++tx) {
      const T u0 = T(tx) * ts + T(0.5) - mean2d[0];
      const T v0 = T(ty) * ts + T(0.5) - mean2d[1];
      const T min_sigma = min_quadratic_over_box(u0, v0, u0 + ts - 1, v0 + ts - 1, conic[0],
                                                 conic[1], conic[2]);
      if (log_opacity - min_sigma >= log_threshold) visit(ty * grid.tiles_x + tx);
    }
  }
}

// LSD radix sort of (key, value) pairs by key (stable), 11 bits per pass over the used bits.
inline void radix_sort_pairs(std::vector<uint64_t>& keys, std::vector<int32_t>& values) {
  uint64_t max_key = 0;
  for (uint64_t key : keys) max_key = std::max(max_key, key);
  std::vector<uint64_t> keys_tmp(keys.size());
  std::vector<int32_t> values_tmp(values.size());
  constexpr int kBits = 11;
  constexpr uint64_t kMask = (1u << kBits) - 1;
  const int64_t size = static_cast<int64_t>(keys.size());
  for (int shift = 0; shift < 64 && (max_key >> shift) != 0; shift += kBits) {
    std::vector<int64_t> bucket(kMask + 2, 0);
    for (uint64_t key : keys) ++bucket[((key >> shift) & kMask) + 1];
    // A digit that all keys share (common in the high bits of nearby depths) moves nothing.
    if (std::find(bucket.begin(), bucket.end(), size) != bucket.end()) continue;
    for (uint64_t j = 0; j <= kMask; ++j) bucket[j + 1] += bucket[j];
    for (size_t i = 0; i < keys.size(); ++i) {
      const int64_t dst = bucket[(keys[i] >> shift) & kMask]++;
      keys_tmp[dst] = keys[i];
      values_tmp[dst] = values[i];
    }
    keys.swap(keys_tmp);
    values.swap(values_tmp);
  }
}

// Every contributing (Gaussian, tile) pair, sorted by (camera, tile) then depth; equal depths
// keep index order, as the torch backend's stable sorts do. Pairs are made in index order (each
// thread a contiguous range), keyed by tile << 32 | depth bits (depths > near > 0, so their
// float bits sort like the values), then radix-sorted.
// Returns tile_offsets (C * tiles + 1,) int64 and pair_ids (P,) int32 holding flat indices
// cam * N + n.
template <typename T>
std::vector<at::Tensor> bin_tiles_impl(const at::Tensor& means2d, const at::Tensor& conics,
                                       const at::Tensor& depths, const at::Tensor& radii,
                                       const at::Tensor& opacities, const TileGrid& grid) {
  const int64_t num_cams = means2d.size(0), num_gauss = means2d.size(1);
  const int64_t tiles = grid.tiles_x * grid.tiles_y;
  const int64_t flat = num_cams * num_gauss;
  const T* m2 = means2d.data_ptr<T>();
  const T* con = conics.data_ptr<T>();
  const T* dep = depths.data_ptr<T>();
  const int32_t* rad = radii.data_ptr<int32_t>();
  const T* op = opacities.data_ptr<T>();
  const int num_threads = std::max(1, at::get_num_threads());

  std::vector<std::vector<uint64_t>> thread_keys(num_threads);
  std::vector<std::vector<int32_t>> thread_ids(num_threads);
  at::parallel_for(0, num_threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      // Local vectors, moved out at the end: push_back on neighbouring vector headers from two
      // threads would share their cache line.
      std::vector<uint64_t> keys;
      std::vector<int32_t> values;
      for (int64_t idx = flat * t / num_threads; idx < flat * (t + 1) / num_threads; ++idx) {
        if (rad[idx * 2] <= 0 || rad[idx * 2 + 1] <= 0) continue;
        const float depth = float(dep[idx]);
        uint32_t depth_bits;
        std::memcpy(&depth_bits, &depth, sizeof(depth_bits));
        const T log_opacity = std::log(std::max(op[idx % num_gauss], T(1e-30)));
        const uint64_t cam_tile = uint64_t(idx / num_gauss) * tiles;
        for_each_tile<T>(m2 + idx * 2, con + idx * 3, rad + idx * 2, log_opacity, grid,
                         [&](int64_t tile) {
                           keys.push_back((cam_tile + tile) << 32 | depth_bits);
                           values.push_back(static_cast<int32_t>(idx));
                         });
      }
      thread_keys[t] = std::move(keys);
      thread_ids[t] = std::move(values);
    }
  });
  std::vector<uint64_t> keys;
  std::vector<int32_t> values;
  for (int t = 0; t < num_threads; ++t) {
    keys.insert(keys.end(), thread_keys[t].begin(), thread_keys[t].end());
    values.insert(values.end(), thread_ids[t].begin(), thread_ids[t].end());
    std::vector<uint64_t>().swap(thread_keys[t]);
    std::vector<int32_t>().swap(thread_ids[t]);
  }
  radix_sort_pairs(keys, values);

  at::Tensor tile_offsets = at::zeros({num_cams * tiles + 1}, at::kLong);
  int64_t* offsets = tile_offsets.data_ptr<int64_t>();
  for (uint64_t key : keys) ++offsets[(key >> 32) + 1];
  for (int64_t j = 0; j < num_cams * tiles; ++j) offsets[j + 1] += offsets[j];
  at::Tensor pair_ids = at::empty({static_cast<int64_t>(values.size())}, at::kInt);
  std::copy(values.begin(), values.end(), pair_ids.data_ptr<int32_t>());
  return {tile_offsets, pair_ids};
}

// ---------------------------------------------------------------------------------------------
// Compositing
// ---------------------------------------------------------------------------------------------
//
// A tile is processed Gaussian by Gaussian (front to back in the forward, back to front in the
// backward) with the tile's pixels as lanes of vectors (GCC vector extensions). Every step is branch-free per lane, and a
// tile stops once all its pixels have stopped.

// The widest vectors the target has natively (wider generic vectors would be split into scalar
// comparisons): 8 floats with AVX, 4 with SSE.
#if defined(__AVX__)
constexpr int64_t kWidth = 8;
#else
constexpr int64_t kWidth = 4;
#endif
typedef float vfloat __attribute__((vector_size(kWidth * sizeof(float))));
typedef int32_t vint __attribute__((vector_size(kWidth * sizeof(int32_t))));

inline vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }

inline vfloat splat(float x) { return vfloat{} + x; }

// Bit j set when lane j of a comparison mask is (movemask).
inline int lane_bits(vint mask) {
#if defined(__AVX__)
  return _mm256_movemask_ps(reinterpret_cast<__m256>(mask));
#else
  return _mm_movemask_ps(reinterpret_cast<__m128>(mask));
#endif
}

// True when no lane of the comparison mask is set.
inline bool none(vint mask) { return lane_bits(mask) == 0; }

inline float horizontal_sum(vfloat v) {
  float sum = 0.0f;
  for (int64_t j = 0; j < kWidth; ++j) sum += v[j];
  return sum;
}

// exp(x) for x <= 0: 2^k e^r with r in [-ln2/2, ln2/2] and a degree-7 Taylor polynomial
// (relative error ~1e-7, like a float exp). Inputs below -80 give exp(-80) ~ 2e-35: far below
// any alpha that counts, and far from denormal floats, which are ~100x slower to multiply.
inline vfloat exp_neg(vfloat x) {
  x = x < -80.0f ? splat(-80.0f) : x;
  const vfloat round = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vfloat k = (x * 1.44269504088896341f + round) - round;
  const vfloat r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
  vfloat p = splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vint bits = (__builtin_convertvector(k, vint) + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// One tile's Gaussians, gathered contiguously (structure of arrays).
struct TileList {
  // reach: half-height in pixels of the band of rows where alpha can reach 1/255.
  std::vector<float> mx, my, a, b, c, opacity, reach, features;
  int64_t size = 0;

  void gather(const int32_t* ids, int64_t count, const float* m2, const float* con,
              const float* feat, const float* op, int64_t num_gauss, int64_t dim) {
    size = count;
    for (auto* v : {&mx, &my, &a, &b, &c, &opacity, &reach}) v->resize(count);
    features.resize(count * dim);
    constexpr int64_t kAhead = 8;  // Gaussians are scattered in memory: fetch them early
    for (int64_t k = 0; k < count; ++k) {
      if (k + kAhead < count) {
        const int64_t next = ids[k + kAhead];
        __builtin_prefetch(m2 + next * 2);
        __builtin_prefetch(con + next * 3);
        __builtin_prefetch(feat + next * dim);
        __builtin_prefetch(op + next % num_gauss);
      }
      const int64_t idx = ids[k];
      mx[k] = m2[idx * 2];
      my[k] = m2[idx * 2 + 1];
      a[k] = con[idx * 3];
      b[k] = con[idx * 3 + 1];
      c[k] = con[idx * 3 + 2];
      opacity[k] = op[idx % num_gauss];
      // alpha >= 1/255 needs sigma <= log(255 opacity) (plus a margin: the exact test on alpha
      // decides); along a row at offset v, min over u of sigma is 0.5 v^2 (a c - b^2) / a.
      const double max_sigma = std::log(std::max(double(opacity[k]), 1e-30) / kAlphaThreshold);
      const double det = double(a[k]) * c[k] - double(b[k]) * b[k];
      double band = std::numeric_limits<double>::infinity();
      if (max_sigma < -1e-3) {
        band = -1.0;
      } else if (det > 0 && a[k] > 0) {
        band = std::sqrt(2.0 * (max_sigma + 1e-3) * a[k] / det) + 1e-3;
      }
      reach[k] = float(std::min(band, 1e30));
      for (int64_t d = 0; d < dim; ++d) features[k * dim + d] = feat[idx * dim + d];
    }
  }
};

// The pixels of one tile as lanes, padded to whole vectors (padding lanes are never active).
struct TileLanes {
  int64_t lanes = 0, x_start = 0, y_start = 0, x_end = 0, y_end = 0, tile_size = 0;
  std::vector<float> offset_x, offset_y, inside;

  void reset(const TileGrid& grid, int64_t tile, int64_t width, int64_t height) {
    tile_size = grid.tile_size;
    lanes = (tile_size * tile_size + kWidth - 1) / kWidth * kWidth;
    x_start = (tile % grid.tiles_x) * tile_size;
    y_start = (tile / grid.tiles_x) * tile_size;
    x_end = std::min(x_start + tile_size, width);
    y_end = std::min(y_start + tile_size, height);
    offset_x.assign(lanes, 0.0f);
    offset_y.assign(lanes, 0.0f);
    inside.assign(lanes, 0.0f);
    for (int64_t p = 0; p < tile_size * tile_size; ++p) {
      offset_x[p] = float(p % tile_size);
      offset_y[p] = float(p / tile_size);
      inside[p] = (x_start + p % tile_size < x_end && y_start + p / tile_size < y_end) ? 1.0f
                                                                                       : 0.0f;
    }
  }

  // Lanes [first, last) covering the tile rows where Gaussian k can reach 1/255 (whole vectors).
  std::pair<int64_t, int64_t> blocks(const TileList& list, int64_t k) const {
    const float reach = list.reach[k];
    if (!(reach >= 0.0f)) return {0, 0};
    const float centre = list.my[k] - 0.5f - float(y_start);  // tile row of the centre
    const float top = std::max(std::floor(centre - reach), 0.0f);
    const float bottom = std::min(std::ceil(centre + reach), float(tile_size - 1));
    if (top > bottom) return {0, 0};
    const int64_t first = int64_t(top) * tile_size / kWidth * kWidth;
    const int64_t last = std::min(((int64_t(bottom) + 1) * tile_size + kWidth - 1) / kWidth *
                                      kWidth, lanes);
    return {first, last};
  }

  // Pixel index in the (C, H, W) image of lane p, or -1 outside the image / padding.
  int64_t pixel(int64_t cam, int64_t p, int64_t width, int64_t height) const {
    if (inside[p] == 0.0f) return -1;
    return (cam * height + y_start + p / tile_size) * width + x_start + p % tile_size;
  }
};

// One Gaussian at 8 lanes: offsets pixel - mean, the uncapped value and alpha (0 below 1/255).
struct LaneAlpha {
  vfloat u, v, value, alpha;
};

inline LaneAlpha evaluate(const TileList& list, int64_t k, const TileLanes& lane, int64_t block) {
  const float x0 = float(lane.x_start) + 0.5f - list.mx[k];
  const float y0 = float(lane.y_start) + 0.5f - list.my[k];
  LaneAlpha out;
  out.u = load(lane.offset_x.data() + block) + x0;
  out.v = load(lane.offset_y.data() + block) + y0;
  const vfloat sigma = 0.5f * (list.a[k] * out.u * out.u + list.c[k] * out.v * out.v) +
                       list.b[k] * out.u * out.v;
  out.value = list.opacity[k] * exp_neg(-sigma);
  const vfloat capped = out.value < float(kMaxAlpha) ? out.value : splat(float(kMaxAlpha));
  out.alpha = capped >= float(kAlphaThreshold) ? capped : splat(0.0f);
  return out;
}

void rasterize_forward_impl(const at::Tensor& means2d, const at::Tensor& conics,
                            const at::Tensor& features, const at::Tensor& opacities,
                            const at::Tensor& tile_offsets, const at::Tensor& pair_ids,
                            const TileGrid& grid, int64_t width, int64_t height,
                            at::Tensor& accumulated, at::Tensor& transmittance,
                            at::Tensor& last_count) {
  const int64_t num_cams = means2d.size(0), num_gauss = means2d.size(1);
  const int64_t dim = features.size(2);
  const int64_t tiles = grid.tiles_x * grid.tiles_y;
  const float* m2 = means2d.data_ptr<float>();
  const float* con = conics.data_ptr<float>();
  const float* feat = features.data_ptr<float>();
  const float* op = opacities.data_ptr<float>();
  const int64_t* offsets = tile_offsets.data_ptr<int64_t>();
  const int32_t* ids = pair_ids.data_ptr<int32_t>();
  float* acc = accumulated.data_ptr<float>();
  float* trans = transmittance.data_ptr<float>();
  int32_t* last = last_count.data_ptr<int32_t>();
  std::atomic<int64_t> next_tile{0};
  const int num_threads = std::max(1, at::get_num_threads());
  // Tiles are handed out one at a time: their costs differ a lot.
  at::parallel_for(0, num_threads, 1, [&](int64_t, int64_t) {
    TileList list;
    TileLanes lane;
    std::vector<float> tile_acc, t, alive, count;
    for (int64_t job = next_tile++; job < num_cams * tiles; job = next_tile++) {
      const int64_t cam = job / tiles;
      lane.reset(grid, job % tiles, width, height);
      const int64_t lanes = lane.lanes;
      list.gather(ids + offsets[job], offsets[job + 1] - offsets[job], m2, con, feat, op,
                  num_gauss, dim);
      tile_acc.assign(dim * lanes, 0.0f);
      t.assign(lanes, 1.0f);
      count.assign(lanes, 0.0f);
      alive = lane.inside;
      int64_t remaining = 0;  // pixels still blending
      for (float inside : lane.inside) remaining += inside > 0.0f;
      for (int64_t k = 0; k < list.size && remaining > 0; ++k) {
        const float* f = list.features.data() + k * dim;
        const auto [first, last_lane] = lane.blocks(list, k);
        for (int64_t block = first; block < last_lane; block += kWidth) {
          const vfloat was_alive = load(alive.data() + block);
          if (none(was_alive != 0.0f)) continue;
          const vfloat alpha = evaluate(list, k, lane, block).alpha * was_alive;
          const vfloat before = load(t.data() + block);
          const vfloat next = before * (1.0f - alpha);
          const vint hit = alpha > 0.0f;
          const vint stop = hit & (next <= float(kTransmittanceEps));
          const vint kept = hit & ~stop;
          store(alive.data() + block, stop ? splat(0.0f) : was_alive);
          remaining -= __builtin_popcount(lane_bits(stop));
          const vfloat weight = kept ? alpha * before : splat(0.0f);
          store(t.data() + block, kept ? next : before);
          store(count.data() + block, kept ? splat(float(k + 1)) : load(count.data() + block));
          for (int64_t d = 0; d < dim; ++d) {
            float* dst = tile_acc.data() + d * lanes + block;
            store(dst, load(dst) + weight * f[d]);
          }
        }
      }
      for (int64_t p = 0; p < lanes; ++p) {
        const int64_t pix = lane.pixel(cam, p, width, height);
        if (pix < 0) continue;
        for (int64_t d = 0; d < dim; ++d) acc[pix * dim + d] = tile_acc[d * lanes + p];
        trans[pix] = t[p];
        last[pix] = static_cast<int32_t>(count[p]);
      }
    }
  });
}

void rasterize_backward_impl(const at::Tensor& means2d, const at::Tensor& conics,
                             const at::Tensor& features, const at::Tensor& opacities,
                             const at::Tensor& tile_offsets, const at::Tensor& pair_ids,
                             const at::Tensor& transmittance, const at::Tensor& last_count,
                             const at::Tensor& v_accumulated, const at::Tensor& v_transmittance,
                             const TileGrid& grid, int64_t width, int64_t height,
                             at::Tensor& v_means2d, at::Tensor& v_conics, at::Tensor& v_features,
                             at::Tensor& v_opacities) {
  const int64_t num_cams = means2d.size(0), num_gauss = means2d.size(1);
  const int64_t dim = features.size(2);
  const int64_t tiles = grid.tiles_x * grid.tiles_y;
  const int64_t flat = num_cams * num_gauss;
  const float* m2 = means2d.data_ptr<float>();
  const float* con = conics.data_ptr<float>();
  const float* feat = features.data_ptr<float>();
  const float* op = opacities.data_ptr<float>();
  const int64_t* offsets = tile_offsets.data_ptr<int64_t>();
  const int32_t* ids = pair_ids.data_ptr<int32_t>();
  const float* trans = transmittance.data_ptr<float>();
  const int32_t* last = last_count.data_ptr<int32_t>();
  const float* g_acc = v_accumulated.data_ptr<float>();
  const float* g_trans = v_transmittance.data_ptr<float>();
  // Per (camera, Gaussian) slot: means2d (2), conic (3), opacity (1), features (dim).
  const int64_t stride = 6 + dim;
  const int num_threads = std::max(1, at::get_num_threads());
  // One gradient buffer per thread; thread t owns tiles t, t + threads, ... (deterministic).
  std::vector<std::vector<float>> buffers(num_threads);
  at::parallel_for(0, num_threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t thread = t0; thread < t1; ++thread) {
      std::vector<float>& grad = buffers[thread];
      TileList list;
      TileLanes lane;
      // Per lane: final transmittance and its gradient, the running transmittance, the
      // gradient of the accumulated features, the suffix sum of weighted features behind the
      // current Gaussian, and the number of Gaussians the forward blended.
      std::vector<float> t_final, v_t_final, t, v_acc, suffix, count;
      std::vector<vfloat> sums(stride);
      for (int64_t job = thread; job < num_cams * tiles; job += num_threads) {
        if (offsets[job + 1] == offsets[job]) continue;
        if (grad.empty()) grad.assign(flat * stride, 0.0f);
        const int64_t cam = job / tiles;
        lane.reset(grid, job % tiles, width, height);
        const int64_t lanes = lane.lanes;
        for (auto* v : {&t_final, &v_t_final, &count}) v->assign(lanes, 0.0f);
        v_acc.assign(dim * lanes, 0.0f);
        suffix.assign(dim * lanes, 0.0f);
        int32_t max_count = 0;
        for (int64_t p = 0; p < lanes; ++p) {
          const int64_t pix = lane.pixel(cam, p, width, height);
          if (pix < 0) continue;
          count[p] = float(last[pix]);
          max_count = std::max(max_count, last[pix]);
          t_final[p] = trans[pix];
          v_t_final[p] = g_trans[pix];
          for (int64_t d = 0; d < dim; ++d) v_acc[d * lanes + p] = g_acc[pix * dim + d];
        }
        if (max_count == 0) continue;
        const int32_t* tile_ids = ids + offsets[job];
        list.gather(tile_ids, max_count, m2, con, feat, op, num_gauss, dim);
        t = t_final;
        for (int64_t k = max_count - 1; k >= 0; --k) {
          if (k > 0) __builtin_prefetch(grad.data() + tile_ids[k - 1] * stride, 1);
          const float* f = list.features.data() + k * dim;
          const float a = list.a[k], b = list.b[k], c = list.c[k];
          std::fill(sums.begin(), sums.end(), vfloat{});
          const auto [first, last_lane] = lane.blocks(list, k);
          for (int64_t block = first; block < last_lane; block += kWidth) {
            const vint blended = float(k) < load(count.data() + block);
            if (none(blended)) continue;
            const LaneAlpha at = evaluate(list, k, lane, block);
            const vfloat alpha = blended ? at.alpha : splat(0.0f);
            const vfloat inv_one_minus = 1.0f / (1.0f - alpha);
            const vfloat before = load(t.data() + block) * inv_one_minus;
            store(t.data() + block, before);  // transmittance before Gaussian k
            const vfloat weight = alpha * before;
            vfloat v_alpha = -load(v_t_final.data() + block) * load(t_final.data() + block) *
                             inv_one_minus;
            for (int64_t d = 0; d < dim; ++d) {
              const vfloat va = load(v_acc.data() + d * lanes + block);
              float* sf = suffix.data() + d * lanes + block;
              const vfloat behind = load(sf);
              v_alpha += va * (before * f[d] - behind * inv_one_minus);
              store(sf, behind + weight * f[d]);
              sums[6 + d] += weight * va;
            }
            // No gradient where the 0.999 cap applied or Gaussian k was not blended.
            const vint free = (alpha > 0.0f) & (at.value <= float(kMaxAlpha));
            const vfloat v_value = free ? v_alpha : splat(0.0f);
            const vfloat v_sigma = -alpha * v_value;
            sums[0] += -(a * at.u + b * at.v) * v_sigma;
            sums[1] += -(b * at.u + c * at.v) * v_sigma;
            sums[2] += at.u * at.u * v_sigma;
            sums[3] += at.u * at.v * v_sigma;
            sums[4] += at.v * at.v * v_sigma;
            sums[5] += alpha * v_value;
          }
          float* slot = grad.data() + tile_ids[k] * stride;
          slot[0] += horizontal_sum(sums[0]);
          slot[1] += horizontal_sum(sums[1]);
          slot[2] += 0.5f * horizontal_sum(sums[2]);
          slot[3] += horizontal_sum(sums[3]);
          slot[4] += 0.5f * horizontal_sum(sums[4]);
          slot[5] += horizontal_sum(sums[5]) / list.opacity[k];
          for (int64_t d = 0; d < dim; ++d) slot[6 + d] += horizontal_sum(sums[6 + d]);
        }
      }
    }
  });
  float* vm = v_means2d.data_ptr<float>();
  float* vc = v_conics.data_ptr<float>();
  float* vf = v_features.data_ptr<float>();
  float* vo = v_opacities.data_ptr<float>();
  at::parallel_for(0, flat, 4096, [&](int64_t begin, int64_t end) {
    std::vector<float> sum(stride);
    for (int64_t idx = begin; idx < end; ++idx) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (int t = 0; t < num_threads; ++t) {
        if (buffers[t].empty()) continue;
        const float* src = buffers[t].data() + idx * stride;
        for (int64_t j = 0; j < stride; ++j) sum[j] += src[j];
      }
      vm[idx * 2] = sum[0];
      vm[idx * 2 + 1] = sum[1];
      for (int j = 0; j < 3; ++j) vc[idx * 3 + j] = sum[2 + j];
      vo[idx] = sum[5];
      for (int64_t d = 0; d < dim; ++d) vf[idx * dim + d] = sum[6 + d];
    }
  });
}

std::vector<at::Tensor> rasterize_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& features, const at::Tensor& opacities,
                                          const at::Tensor& depths, const at::Tensor& radii,
                                          int64_t width, int64_t height, int64_t tile_size) {
  TORCH_CHECK(tile_size >= 1 && tile_size <= 64, "tile_size must be in 1..64");
  check_inputs({&means2d, &conics, &features, &opacities, &depths});
  TORCH_CHECK(means2d.size(0) * means2d.size(1) < (int64_t(1) << 31),
              "cameras x Gaussians must stay below 2^31");
  const int64_t num_cams = means2d.size(0), dim = features.size(2);
  const TileGrid grid = TileGrid::covering(width, height, tile_size);
  auto opts = means2d.options();
  at::Tensor accumulated = at::empty({num_cams, height, width, dim}, opts);
  at::Tensor transmittance = at::empty({num_cams, height, width}, opts);
  at::Tensor last_count = at::empty({num_cams, height, width}, opts.dtype(at::kInt));
  std::vector<at::Tensor> binned;
  binned = bin_tiles_impl<float>(means2d, conics, depths, radii, opacities, grid);
  rasterize_forward_impl(means2d, conics, features, opacities, binned[0], binned[1], grid, width,
                         height, accumulated, transmittance, last_count);
  return {accumulated, transmittance, last_count, binned[0], binned[1]};
}

std::vector<at::Tensor> rasterize_backward(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& features,
    const at::Tensor& opacities, const at::Tensor& tile_offsets, const at::Tensor& pair_ids,
    const at::Tensor& transmittance, const at::Tensor& last_count,
    const at::Tensor& v_accumulated, const at::Tensor& v_transmittance, int64_t width,
    int64_t height, int64_t tile_size) {
  check_inputs({&means2d, &conics, &features, &opacities, &transmittance, &v_accumulated,
                &v_transmittance});
  const int64_t num_cams = means2d.size(0), num_gauss = means2d.size(1);
  const TileGrid grid = TileGrid::covering(width, height, tile_size);
  at::Tensor v_means2d = at::empty_like(means2d);
  at::Tensor v_conics = at::empty_like(conics);
  at::Tensor v_features = at::empty_like(features);
  // Per (camera, Gaussian) opacity gradients, summed over cameras below.
  at::Tensor v_opacity_pairs = at::empty({num_cams, num_gauss}, means2d.options());
  rasterize_backward_impl(means2d, conics, features, opacities, tile_offsets, pair_ids,
                          transmittance, last_count, v_accumulated, v_transmittance, grid, width,
                          height, v_means2d, v_conics, v_features, v_opacity_pairs);
  return {v_means2d, v_conics, v_features, v_opacity_pairs.sum(0)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Lyra ROS native CPU Gaussian rasteriser (projection and compositing, fwd + bwd)";
  m.def("project_forward", &project_forward);
  m.def("project_backward", &project_backward);
  m.def("rasterize_forward", &rasterize_forward);
  m.def("rasterize_backward", &rasterize_backward);
}
