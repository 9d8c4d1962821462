// LipSwish's elementwise formulas, one pass over memory each (the math: iresnet/lipschitz/activations.py).
//
// A tensor is seen as [outer, channels, inner] with beta[c] for channel c: inner == 1 when the
// channels are innermost (channels-last maps, (B, C) matrices), inner = H * W for contiguous
// (B, C, H, W) maps, and channels == 1 for one beta shared by every element. Sums over all but
// the channel are kept in T for at most kFlushRows rows, then added into doubles per thread.
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

template <typename T>
using Vec = at::vec::Vectorized<T>;

constexpr double kScale = 1.1;  // LipSwish divides by 1.1 so that |f'| <= 1
constexpr int64_t kParallelMin = 1 << 15;  // smaller tensors run on one thread
constexpr int64_t kFlushRows = 64;

// exp to 2 ulp (ATen's exp_u20, as Inductor's loops use) instead of 1: 25-30% faster loops.
template <typename T>
Vec<T> sigmoid(const Vec<T>& z) {
  const Vec<T> one(T(1));
  return one / (one + z.neg().exp_u20());
}

// Adds the first n lanes of v into into[0..n).
template <typename T>
void add_lanes(const Vec<T>& v, int64_t n, double* into) {
  alignas(64) T lanes[Vec<T>::size()];
  v.store(lanes);
  for (int64_t i = 0; i < n; ++i) into[i] += lanes[i];
}

// Calls f(offset, beta, n) on runs of n <= Vec::size() elements from offset, all of them of the
// channel(s) in beta, and adds f's results into sums[channel] when sums is not null. Lanes past
// n are zero on input and must give zero.
template <typename T, typename F>
void for_each_run(int64_t outer, int64_t channels, int64_t inner, const T* beta, double* sums, F f) {
  constexpr int64_t W = Vec<T>::size();
#pragma omp parallel if (outer * channels * inner >= kParallelMin)
  {
    std::vector<double> local(sums ? channels : 0, 0.0);
    if (inner == 1) {
      const int64_t blocks = (channels + W - 1) / W;
      std::vector<Vec<T>> acc(sums ? blocks : 0, Vec<T>(T(0)));
      auto flush = [&] {
        for (int64_t k = 0; k < static_cast<int64_t>(acc.size()); ++k) {
          add_lanes(acc[k], std::min(W, channels - k * W), local.data() + k * W);
          acc[k] = Vec<T>(T(0));
        }
      };
      int64_t pending = 0;
#pragma omp for schedule(static)
      for (int64_t row = 0; row < outer; ++row) {
        for (int64_t k = 0; k < blocks; ++k) {
          const int64_t c = k * W, n = std::min(W, channels - c);
          const Vec<T> r = f(row * channels + c, Vec<T>::loadu(beta + c, n), n);
          if (sums) acc[k] = acc[k] + r;
        }
        if (sums && ++pending == kFlushRows) {
          flush();
          pending = 0;
        }
      }
      if (sums) flush();
    } else {
#pragma omp for schedule(static)
      for (int64_t row = 0; row < outer * channels; ++row) {
        const int64_t c = row % channels;
        const Vec<T> b(beta[c]);
        Vec<T> acc(T(0));
        for (int64_t i = 0; i < inner; i += W) {
          const Vec<T> r = f(row * inner + i, b, std::min(W, inner - i));
          if (sums) acc = acc + r;
        }
        if (sums) {
          double total[Vec<T>::size()] = {};
          add_lanes(acc, W, total);
          for (double t : total) local[c] += t;
        }
      }
    }
    if (sums) {
#pragma omp critical
      for (int64_t c = 0; c < channels; ++c) sums[c] += local[c];
    }
  }
}

// out = f(x) = x s / 1.1 and slope = f'(x) = s (1 + z (1 - s)) / 1.1, with z = beta x, s = sigmoid(z).
template <typename T>
void forward(const T* x, const T* beta, T* out, T* slope, int64_t outer, int64_t channels, int64_t inner) {
  const Vec<T> one(T(1)), k(T(1 / kScale));
  for_each_run<T>(outer, channels, inner, beta, nullptr, [&](int64_t at, const Vec<T>& b, int64_t n) {
    const Vec<T> xv = Vec<T>::loadu(x + at, n), z = xv * b, s = sigmoid(z);
    (xv * s * k).store(out + at, n);
    (s * (one + z * (one - s)) * k).store(slope + at, n);
    return xv;
  });
}

// sums[c] = sum over channel c of grad df/dbeta = grad x^2 s (1 - s) / 1.1.
template <typename T>
void beta_grad(const T* grad, const T* x, const T* beta, double* sums, int64_t outer, int64_t channels,
               int64_t inner) {
  const Vec<T> one(T(1)), k(T(1 / kScale));
  for_each_run<T>(outer, channels, inner, beta, sums, [&](int64_t at, const Vec<T>& b, int64_t n) {
    const Vec<T> xv = Vec<T>::loadu(x + at, n), s = sigmoid(xv * b);
    return Vec<T>::loadu(grad + at, n) * s * (one - s) * xv * xv * k;
  });
}

// With t = gg_x grad silu''(z) / 1.1 and silu''(z) = s (1 - s) (2 + z (1 - 2 s)):
// d_x = t beta (= gg_x grad f''(x)) and sums[c] = sum over channel c of t x (of gg_x grad df'/dbeta).
template <typename T>
void slope_grads(const T* gg_x, const T* grad, const T* x, const T* beta, T* d_x, double* sums, int64_t outer,
                 int64_t channels, int64_t inner) {
  const Vec<T> one(T(1)), two(T(2)), k(T(1 / kScale));
  for_each_run<T>(outer, channels, inner, beta, sums, [&](int64_t at, const Vec<T>& b, int64_t n) {
    const Vec<T> xv = Vec<T>::loadu(x + at, n), z = xv * b, s = sigmoid(z);
    const Vec<T> curvature = s * (one - s) * (two + z * (one - two * s));
    const Vec<T> t = Vec<T>::loadu(gg_x + at, n) * Vec<T>::loadu(grad + at, n) * curvature * k;
    (t * b).store(d_x + at, n);
    return t * xv;
  });
}

}  // namespace

#define IRESNET_LIPSWISH(T, suffix)                                                                       \
  extern "C" void iresnet_lipswish_forward_##suffix(const T* x, const T* beta, T* out, T* slope,          \
                                                    int64_t outer, int64_t channels, int64_t inner) {     \
    forward<T>(x, beta, out, slope, outer, channels, inner);                                             \
  }                                                                                                       \
  extern "C" void iresnet_lipswish_beta_grad_##suffix(const T* grad, const T* x, const T* beta,           \
                                                      double* sums, int64_t outer, int64_t channels,      \
                                                      int64_t inner) {                                    \
    beta_grad<T>(grad, x, beta, sums, outer, channels, inner);                                           \
  }                                                                                                       \
  extern "C" void iresnet_lipswish_slope_grads_##suffix(const T* gg_x, const T* grad, const T* x,         \
                                                        const T* beta, T* d_x, double* sums,              \
                                                        int64_t outer, int64_t channels, int64_t inner) { \
    slope_grads<T>(gg_x, grad, x, beta, d_x, sums, outer, channels, inner);                              \
  }

IRESNET_LIPSWISH(float, f32)
IRESNET_LIPSWISH(double, f64)
