// Adam's whole update of one parameter in one pass over memory, as an XLA FFI handler: reads the
// parameter, gradient and both moments once and writes the parameter and moments in place. XLA:CPU
// computes optax.adam's update as three loops (first moment, second moment, parameter), 10 reads
// and writes of each parameter's size instead of 7: for the pre-training model's 340M parameters,
// twice the time of PyTorch's fused Adam (benchmarks/RESULTS.md). Same arithmetic as optax.adam
// with eps_root = 0; gsvit_jax/kernels/adam.py calls this. A second handler takes a weight whose
// gradient arrives as its two factors, x^T dy (a linear layer's input and output gradient), and
// forms the gradient tile by tile inside the update: the pre-training decoder's 6144 x 50176 layer
// then never writes and reads back its 1.2 GB gradient, which was fresh memory every step.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "onednn_common.h"

namespace {

using namespace gsvit;

// hyper = {-learning rate, 1 - b1^t, 1 - b2^t} (t: the step count after this update); 1 - b1 and
// 1 - b2 arrive rounded from double, as optax computes them.
struct Hyper {
  float b1, one_minus_b1, b2, one_minus_b2, eps, neg_lr, correction1, correction2;
};

// The update of `size` consecutive elements, one thread; inlined into each caller's clone.
inline __attribute__((always_inline)) void Step(int64_t size, const float* p, const float* g,
                                                const float* m, const float* v, float* p_out,
                                                float* m_out, float* v_out, const Hyper& h) {
#pragma omp simd
  for (int64_t i = 0; i < size; ++i) {
    float mu = h.one_minus_b1 * g[i] + h.b1 * m[i];
    float nu = h.one_minus_b2 * (g[i] * g[i]) + h.b2 * v[i];
    m_out[i] = mu;
    v_out[i] = nu;
    p_out[i] = p[i] + (mu / h.correction1) / (std::sqrt(nu / h.correction2) + h.eps) * h.neg_lr;
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void Update(int64_t size, const float* p, const float* g, const float* m, const float* v,
            float* p_out, float* m_out, float* v_out, Hyper h) {
  constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static)
  for (int64_t start = 0; start < size; start += kChunk) {
    int64_t count = std::min(kChunk, size - start);
    Step(count, p + start, g + start, m + start, v + start, p_out + start, m_out + start,
         v_out + start, h);
  }
}

// The same update of a (k, n) weight whose gradient is x^T dy: xt = x^T (k, rows), dy (rows, n).
// Each thread takes blocks of weight rows; a block of dy's columns stays in L1 across the block's
// rows, and each row's gradient over the column block is formed in a small buffer (loops GCC
// vectorizes: the sum over rows outside, columns inside) and consumed at once.
__attribute__((target_clones("avx512f", "avx2", "default")))
void OuterUpdate(int64_t rows, int64_t k, int64_t n, const float* xt, const float* dy,
                 const float* p, const float* m, const float* v, float* p_out, float* m_out,
                 float* v_out, Hyper h) {
  constexpr int64_t kRowBlock = 16, kColBlock = 512;
  int64_t row_blocks = (k + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < row_blocks; ++block) {
    alignas(64) float g[kColBlock];
    int64_t first = block * kRowBlock, last = std::min(k, first + kRowBlock);
    for (int64_t c0 = 0; c0 < n; c0 += kColBlock) {
      int64_t width = std::min(kColBlock, n - c0);
      for (int64_t i = first; i < last; ++i) {
        const float* xi = xt + i * rows;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) g[j] = 0.f;
        for (int64_t r = 0; r < rows; ++r) {
          const float* dr = dy + r * n + c0;
          float a = xi[r];
#pragma omp simd
          for (int64_t j = 0; j < width; ++j) g[j] += a * dr[j];
        }
        int64_t at = i * n + c0;
        Step(width, p + at, g, m + at, v + at, p_out + at, m_out + at, v_out + at, h);
      }
    }
  }
}

ffi::Error AdamImpl(ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> m,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> hyper,
                    ffi::Result<ffi::Buffer<ffi::F32>> p_out,
                    ffi::Result<ffi::Buffer<ffi::F32>> m_out,
                    ffi::Result<ffi::Buffer<ffi::F32>> v_out, float b1, float one_minus_b1,
                    float b2, float one_minus_b2, float eps, int64_t threads) {
  int64_t size = p.element_count();
  if (g.element_count() != size || m.element_count() != size || v.element_count() != size ||
      hyper.element_count() != 3) {
    return ffi::Error::InvalidArgument("gsvit_fused_adam: p, g, m, v of one size; 3 hyper");
  }
  SetThreads(threads);
  const float* h = hyper.typed_data();
  Update(size, p.typed_data(), g.typed_data(), m.typed_data(), v.typed_data(),
         p_out->typed_data(), m_out->typed_data(), v_out->typed_data(),
         {b1, one_minus_b1, b2, one_minus_b2, eps, h[0], h[1], h[2]});
  return ffi::Error::Success();
}

ffi::Error OuterAdamImpl(ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> xt,
                         ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> m,
                         ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> hyper,
                         ffi::Result<ffi::Buffer<ffi::F32>> p_out,
                         ffi::Result<ffi::Buffer<ffi::F32>> m_out,
                         ffi::Result<ffi::Buffer<ffi::F32>> v_out, float b1, float one_minus_b1,
                         float b2, float one_minus_b2, float eps, int64_t threads) {
  auto pd = p.dimensions(), xd = xt.dimensions(), dd = dy.dimensions();
  if (pd.size() != 2 || xd.size() != 2 || dd.size() != 2 || xd[0] != pd[0] || dd[1] != pd[1] ||
      xd[1] != dd[0] || m.element_count() != p.element_count() ||
      v.element_count() != p.element_count() || hyper.element_count() != 3) {
    return ffi::Error::InvalidArgument(
        "gsvit_fused_adam_outer: p (k, n), xt (k, rows), dy (rows, n), m and v like p; 3 hyper");
  }
  SetThreads(threads);
  const float* h = hyper.typed_data();
  OuterUpdate(xd[1], pd[0], pd[1], xt.typed_data(), dy.typed_data(), p.typed_data(),
              m.typed_data(), v.typed_data(), p_out->typed_data(), m_out->typed_data(),
              v_out->typed_data(), {b1, one_minus_b1, b2, one_minus_b2, eps, h[0], h[1], h[2]});
  return ffi::Error::Success();
}

// What both handlers return (the parameter and moments, in place) and their attributes.
template <typename Binding>
auto WithResultsAndAttributes(Binding binding) {
  using F32 = ffi::Buffer<ffi::F32>;
  return std::move(binding)
      .template Ret<F32>()
      .template Ret<F32>()
      .template Ret<F32>()
      .template Attr<float>("b1")
      .template Attr<float>("one_minus_b1")
      .template Attr<float>("b2")
      .template Attr<float>("one_minus_b2")
      .template Attr<float>("eps")
      .template Attr<int64_t>("threads");
}

using F32Arg = ffi::Buffer<ffi::F32>;

}  // namespace

// p, g, m, v, hyper
XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitFusedAdam, AdamImpl,
                              WithResultsAndAttributes(ffi::Ffi::Bind()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()));

// p, xt, dy, m, v, hyper
XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitFusedAdamOuter, OuterAdamImpl,
                              WithResultsAndAttributes(ffi::Ffi::Bind()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()
                                                           .Arg<F32Arg>()));
