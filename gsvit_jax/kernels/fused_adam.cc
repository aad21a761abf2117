// Adam's whole update of one parameter in one pass over memory, as an XLA FFI handler: reads the
// parameter, gradient and both moments once and writes the parameter and moments in place. XLA:CPU
// computes optax.adam's update as three loops (first moment, second moment, parameter), 10 reads
// and writes of each parameter's size instead of 7: for the pre-training model's 340M parameters,
// twice the time of PyTorch's fused Adam (benchmarks/RESULTS.md). Same arithmetic as optax.adam
// with eps_root = 0; gsvit_jax/kernels/adam.py calls this.
#include <cmath>
#include <cstdint>

#include "onednn_common.h"

namespace {

using namespace gsvit;

// hyper = {-learning rate, 1 - b1^t, 1 - b2^t} (t: the step count after this update); 1 - b1 and
// 1 - b2 arrive rounded from double, as optax computes them.
__attribute__((target_clones("avx512f", "avx2", "default")))
void Update(int64_t size, const float* p, const float* g, const float* m, const float* v,
            float* p_out, float* m_out, float* v_out, float b1, float one_minus_b1, float b2,
            float one_minus_b2, float eps, float neg_lr, float correction1, float correction2) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < size; ++i) {
    float mu = one_minus_b1 * g[i] + b1 * m[i];
    float nu = one_minus_b2 * (g[i] * g[i]) + b2 * v[i];
    m_out[i] = mu;
    v_out[i] = nu;
    p_out[i] = p[i] + (mu / correction1) / (std::sqrt(nu / correction2) + eps) * neg_lr;
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
         p_out->typed_data(), m_out->typed_data(), v_out->typed_data(), b1, one_minus_b1, b2,
         one_minus_b2, eps, h[0], h[1], h[2]);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitFusedAdam, AdamImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("b1")
                                  .Attr<float>("one_minus_b1")
                                  .Attr<float>("b2")
                                  .Attr<float>("one_minus_b2")
                                  .Attr<float>("eps")
                                  .Attr<int64_t>("threads"));
