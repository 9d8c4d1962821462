// LipSwish's elementwise formulas as CPU kernels of torch.library operators, one pass over memory
// each (the math: iresnet/ops/lipswish.py). Built by torch.utils.cpp_extension at first use.
//
// A tensor is seen as [outer, channels, inner] with beta[c] for channel c: inner == 1 when the
// channels are innermost (channels-last maps, (B, C) matrices), inner = H * W for contiguous
// (B, C, H, W) maps, and channels == 1 for one beta shared by every element. Other layouts are
// copied to x's suggested memory format first. Work is split by at::parallel_for (torch's own
// thread pool and thread count); per-channel sums are kept in T for at most kFlushRows rows, then
// added into doubles per thread and summed over threads at the end.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

template <typename T>
using Vec = at::vec::Vectorized<T>;

constexpr double kScale = 1.1;  // LipSwish divides by 1.1 so that |f'| <= 1
constexpr int64_t kGrainElements = 1 << 15;  // elements per task: smaller tensors run on one thread
constexpr int64_t kFlushRows = 64;

struct Layout {
  int64_t outer, channels, inner;
};

// x as [outer, channels, inner], after check_inputs made it contiguous or channels-last.
Layout layout_of(const Tensor& x, const Tensor& beta) {
  if (beta.numel() == 1) return {1, 1, x.numel()};
  const int64_t channels = x.size(1);
  const bool nchw = x.is_contiguous();
  const int64_t inner = nchw ? x.numel() / std::max<int64_t>(1, x.size(0) * channels) : 1;
  return {x.numel() / std::max<int64_t>(1, channels * inner), channels, inner};
}

// x itself when it is laid out contiguously or channels-last, else a copy in its suggested format.
Tensor dense(const Tensor& x) {
  if (x.is_contiguous() || (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast))) return x;
  return x.contiguous(x.suggest_memory_format());
}

// `other` with x's strides (a copy where they differ).
Tensor like(const Tensor& other, const Tensor& x) {
  TORCH_CHECK(other.sizes() == x.sizes(), "iresnet::lipswish: tensors of shapes ", other.sizes(), " and ",
              x.sizes(), " must match");
  return other.strides() == x.strides() ? other : at::empty_like(x).copy_(other);
}

void check_inputs(const Tensor& x, const Tensor& beta) {
  TORCH_CHECK(x.device().is_cpu() && beta.device().is_cpu(), "iresnet::lipswish kernels take CPU tensors");
  TORCH_CHECK(x.scalar_type() == beta.scalar_type(), "iresnet::lipswish: x and beta must share a dtype, got ",
              x.scalar_type(), " and ", beta.scalar_type());
  TORCH_CHECK(beta.numel() == 1 || (x.dim() >= 2 && beta.numel() == x.size(1)),
              "iresnet::lipswish: beta must hold one value or one per channel (dim 1 of x), got ",
              beta.numel(), " values for x of shape ", x.sizes());
}

template <typename T>
Vec<T> sigmoid(const Vec<T>& z) {
  // exp to 2 ulp (ATen's exp_u20, as Inductor's loops use) instead of 1: 25-30% faster loops.
  const Vec<T> one(T(1));
  return one / (one + z.neg().exp_u20());
}

// f'(x) = s (1 + z (1 - s)) / 1.1, with z = beta x and s = sigmoid(z).
template <typename T>
Vec<T> slope_of(const Vec<T>& z, const Vec<T>& s) {
  const Vec<T> one(T(1));
  return s * (one + z * (one - s)) * Vec<T>(T(1 / kScale));
}

// Adds the first n lanes of v into into[0..n).
template <typename T>
void add_lanes(const Vec<T>& v, int64_t n, double* into) {
  alignas(64) T lanes[Vec<T>::size()];
  v.store(lanes);
  for (int64_t i = 0; i < n; ++i) into[i] += lanes[i];
}

// Calls f(offset, beta, n) on runs of n <= Vec::size() elements from offset, all of them of the
// channel(s) in beta. With `sums` (one double per channel), f's results are summed per channel
// into it; lanes past n are zero on input and f must give zero there.
template <typename T, typename F>
void for_each_run(const Layout& l, const T* beta, double* sums, F f) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t channels = l.channels, inner = l.inner;
  const bool channels_inner = inner == 1;
  const int64_t rows = channels_inner ? l.outer : l.outer * channels;
  const int64_t row_len = channels_inner ? channels : inner;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_len));
  // One partial sum per thread of torch's pool, merged below.
  std::vector<double> partial(sums ? at::get_num_threads() * channels : 0, 0.0);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    double* local = sums ? partial.data() + at::get_thread_num() * channels : nullptr;
    if (channels_inner) {
      const int64_t blocks = (channels + W - 1) / W;
      std::vector<Vec<T>> acc(sums ? blocks : 0, Vec<T>(T(0)));
      auto flush = [&] {
        for (int64_t k = 0; k < static_cast<int64_t>(acc.size()); ++k) {
          add_lanes(acc[k], std::min(W, channels - k * W), local + k * W);
          acc[k] = Vec<T>(T(0));
        }
      };
      int64_t pending = 0;
      for (int64_t row = begin; row < end; ++row) {
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
      for (int64_t row = begin; row < end; ++row) {
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
  });
  for (size_t i = 0; i < partial.size(); ++i) sums[i % channels] += partial[i];
}

// Per-channel float64 sums, returned in beta's shape and dtype.
Tensor sums_like_beta(const Tensor& sums, const Tensor& beta) { return sums.to(beta.scalar_type()).view(beta.sizes()); }

// (f(x), f'(x)): out = x s / 1.1 and slope = s (1 + z (1 - s)) / 1.1, with z = beta x, s = sigmoid(z).
std::tuple<Tensor, Tensor> lipswish_and_slope(const Tensor& x_in, const Tensor& beta_in) {
  check_inputs(x_in, beta_in);
  const Tensor x = dense(x_in), beta = beta_in.contiguous();
  Tensor out = at::empty_like(x), slope = at::empty_like(x);
  const Layout l = layout_of(x, beta);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "iresnet::lipswish_and_slope", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>();
    scalar_t *op = out.mutable_data_ptr<scalar_t>(), *sp = slope.mutable_data_ptr<scalar_t>();
    const Vec<scalar_t> k(scalar_t(1 / kScale));
    for_each_run<scalar_t>(l, beta.const_data_ptr<scalar_t>(), nullptr,
                           [&](int64_t at, const Vec<scalar_t>& b, int64_t n) {
                             const auto xv = Vec<scalar_t>::loadu(xp + at, n), z = xv * b, s = sigmoid(z);
                             (xv * s * k).store(op + at, n);
                             slope_of(z, s).store(sp + at, n);
                             return xv;
                           });
  });
  return {out, slope};
}

// sum over each channel of grad df/dbeta = grad x^2 s (1 - s) / 1.1, in beta's shape.
Tensor lipswish_beta_grad(const Tensor& grad_in, const Tensor& x_in, const Tensor& beta_in) {
  check_inputs(x_in, beta_in);
  const Tensor x = dense(x_in), grad = like(grad_in, x), beta = beta_in.contiguous();
  const Layout l = layout_of(x, beta);
  Tensor sums = at::zeros({l.channels}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "iresnet::lipswish_beta_grad", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    const Vec<scalar_t> one(scalar_t(1)), k(scalar_t(1 / kScale));
    for_each_run<scalar_t>(l, beta.const_data_ptr<scalar_t>(), sums.mutable_data_ptr<double>(),
                           [&](int64_t at, const Vec<scalar_t>& b, int64_t n) {
                             const auto xv = Vec<scalar_t>::loadu(xp + at, n), s = sigmoid(xv * b);
                             return Vec<scalar_t>::loadu(gp + at, n) * s * (one - s) * xv * xv * k;
                           });
  });
  return sums_like_beta(sums, beta_in);
}

// With t = gg_x grad silu''(z) / 1.1 and silu''(z) = s (1 - s) (2 + z (1 - 2 s)): d_grad = gg_x f'(x),
// d_x = t beta (= gg_x grad f''(x)) and the sum over each channel of t x (of gg_x grad df'/dbeta).
std::tuple<Tensor, Tensor, Tensor> lipswish_slope_grads(const Tensor& gg_x_in, const Tensor& grad_in,
                                                        const Tensor& x_in, const Tensor& beta_in) {
  check_inputs(x_in, beta_in);
  const Tensor x = dense(x_in), gg_x = like(gg_x_in, x), grad = like(grad_in, x), beta = beta_in.contiguous();
  const Layout l = layout_of(x, beta);
  Tensor d_grad = at::empty_like(x), d_x = at::empty_like(x);
  Tensor sums = at::zeros({l.channels}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "iresnet::lipswish_slope_grads", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>(),
                   *ggp = gg_x.const_data_ptr<scalar_t>();
    scalar_t *dgp = d_grad.mutable_data_ptr<scalar_t>(), *dp = d_x.mutable_data_ptr<scalar_t>();
    const Vec<scalar_t> one(scalar_t(1)), two(scalar_t(2)), k(scalar_t(1 / kScale));
    for_each_run<scalar_t>(l, beta.const_data_ptr<scalar_t>(), sums.mutable_data_ptr<double>(),
                           [&](int64_t at, const Vec<scalar_t>& b, int64_t n) {
                             const auto xv = Vec<scalar_t>::loadu(xp + at, n), z = xv * b, s = sigmoid(z);
                             const auto gg = Vec<scalar_t>::loadu(ggp + at, n);
                             (gg * slope_of(z, s)).store(dgp + at, n);
                             const auto curvature = s * (one - s) * (two + z * (one - two * s));
                             const auto t = gg * Vec<scalar_t>::loadu(gp + at, n) * curvature * k;
                             (t * b).store(dp + at, n);
                             return t * xv;
                           });
  });
  return {d_grad, d_x, sums_like_beta(sums, beta_in)};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(iresnet, m) {
  m.def("lipswish_and_slope(Tensor x, Tensor beta) -> (Tensor, Tensor)");
  m.def("lipswish_beta_grad(Tensor grad, Tensor x, Tensor beta) -> Tensor");
  m.def("lipswish_slope_grads(Tensor gg_x, Tensor grad, Tensor x, Tensor beta) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(iresnet, CPU, m) {
  m.impl("lipswish_and_slope", &lipswish_and_slope);
  m.impl("lipswish_beta_grad", &lipswish_beta_grad);
  m.impl("lipswish_slope_grads", &lipswish_slope_grads);
}
