// oneDNN matrix products as XLA FFI handlers: y = x @ w + b (optionally ReLU'd) and its two
// gradients, for activations in float32 or bfloat16 (f32 accumulation) with a (K, N) weight
// (float32, or bfloat16 with bfloat16 activations) and a float32 bias; the parameter gradients are
// float32. A second forward handler adds a residual r (M, N) inside the product, y = x @ w + b + r,
// so a block's residual sum costs no pass of its own over the activations. In float32 the plain
// product and the weight gradient call oneDNN's BLAS-style sgemm: as fast as the matmul primitive
// on the encoder's shapes and 1.4x / 2.4x faster on the decoder's 8 x 6144 x 50176 layer. In
// bfloat16 oneDNN runs these on AMX / AVX-512-BF16, which XLA:CPU does not: it computes bfloat16
// dots in float32 with converts around them, ~10x slower on an AMX Xeon (benchmarks/RESULTS.md).
// gsvit_jax/kernels/matmul.py calls this.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "onednn_common.h"

namespace {

using namespace gsvit;

// (rows M, inner K, columns N, bfloat16 activations?, ReLU?, threads, bfloat16 weight?, residual
// added?): the primitives of one product.
using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, bool, bool>;

// bfloat16 products of fewer rows than this read a bfloat16 weight in place, in its plain layout;
// larger ones reorder it on each call into the blocked layout oneDNN picks, which pays there. GSViT
// at batch 1 (196 rows at most): 14 ms instead of 20-25 with the reorder; at batch 64 (1024 rows
// at least) the plain layout was slower (benchmarks/RESULTS.md).
constexpr int64_t kBlockedWeightRows = 1024;

dnnl::memory::desc Matrix(int64_t rows, int64_t cols, dt type, tag layout = tag::ab) {
  return dnnl::memory::desc({rows, cols}, type, layout);
}

dt Activations(const Key& key) { return std::get<3>(key) ? dt::bf16 : dt::f32; }
dt WeightType(const Key& key) { return std::get<6>(key) ? dt::bf16 : dt::f32; }

// The weight operand: the user weight (K, N) or its transpose (`layout`), float32 or bfloat16, read
// in place where the product takes it as it is (float32 activations: a reorder into a blocked
// layout would copy it on every call; bfloat16 ones: a bfloat16 weight of a product of few rows),
// else reordered to bfloat16 in the same layout or, from kBlockedWeightRows rows, in oneDNN's.
struct Weights {
  dnnl::memory::desc user, desc;
  Weights(const Key& key, int64_t rows, int64_t cols, tag layout)
      : user(Matrix(rows, cols, WeightType(key), layout)),
        desc(!std::get<3>(key)                           ? user
             : std::get<0>(key) >= kBlockedWeightRows ? Matrix(rows, cols, dt::bf16, tag::any)
                                                        : Matrix(rows, cols, dt::bf16, layout)) {}
};

// A product whose weight comes from a user weight.
struct WithWeights {
  dnnl::memory::desc user_weights;
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  dnnl::reorder to_weights;  // bfloat16 activations only
  WithWeights(const Weights& w, const dnnl::memory::desc& src,
              const std::optional<dnnl::memory::desc>& bias, const dnnl::memory::desc& dst,
              const dnnl::primitive_attr& attr)
      : user_weights(w.user),
        pd(bias ? dnnl::matmul::primitive_desc(Engine(), src, w.desc, *bias, dst, attr)
                : dnnl::matmul::primitive_desc(Engine(), src, w.desc, dst, attr)),
        prim(pd) {
    if (pd.weights_desc() != user_weights) {
      to_weights = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), user_weights, Engine(),
                                                               pd.weights_desc()));
    }
  }

  dnnl::memory WeightsOf(void* data) const {
    if (pd.weights_desc() == user_weights) return dnnl::memory(user_weights, Engine(), data);
    return Reordered(to_weights, user_weights, pd.weights_desc(), data);
  }
};

// y (M, N) = x (M, K) @ w (K, N) + b, ReLU'd if asked, plus a residual r (M, N) if asked.
struct Forward : WithWeights {
  explicit Forward(const Key& key) : Forward(key, Output(key)) {}

 private:
  static dnnl::memory::desc Output(const Key& key) {
    return Matrix(std::get<0>(key), std::get<2>(key), Activations(key));
  }
  Forward(const Key& key, const dnnl::memory::desc& out)
      : WithWeights(Weights(key, std::get<1>(key), std::get<2>(key), tag::ab),
                    Matrix(std::get<0>(key), std::get<1>(key), Activations(key)),
                    Matrix(1, std::get<2>(key), dt::f32), out,
                    Attributes(std::get<4>(key), std::get<7>(key) ? &out : nullptr)) {}
};

// dx (M, K) = dy (M, N) @ w^T: the (K, N) weight read as its (N, K) transpose.
struct BackwardData : WithWeights {
  explicit BackwardData(const Key& key)
      : WithWeights(Weights(key, std::get<2>(key), std::get<1>(key), tag::ba),
                    Matrix(std::get<0>(key), std::get<2>(key), Activations(key)), std::nullopt,
                    Matrix(std::get<0>(key), std::get<1>(key), Activations(key)),
                    UserScratchpad()) {}
};

// dw (K, N) float32 = x^T (K, M) @ dy (M, N): x read as its transpose, no copy.
struct BackwardWeights {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  explicit BackwardWeights(const Key& key)
      : pd(Engine(), Matrix(std::get<1>(key), std::get<0>(key), Activations(key), tag::ba),
           Matrix(std::get<0>(key), std::get<2>(key), Activations(key)),
           Matrix(std::get<1>(key), std::get<2>(key), dt::f32), UserScratchpad()),
        prim(pd) {}
};

// The rows of an activation: the product of every dimension but the last.
int64_t Rows(ffi::Span<const int64_t> dims) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) rows *= dims[i];
  return rows;
}

// x (..., K) against a (K, N) weight or weight gradient; a `weight` float32, or bfloat16 for
// bfloat16 activations.
ffi::Error Check(const ffi::AnyBuffer& x, ffi::Span<const int64_t> w,
                 std::optional<ffi::AnyBuffer> weight = std::nullopt) {
  auto xd = x.dimensions();
  if (xd.size() == 0 || w.size() != 2 || xd[xd.size() - 1] != w[0]) {
    return ffi::Error::InvalidArgument("gsvit_onednn_matmul: x (..., K) and w (K, N)");
  }
  if (!IsFloat(x)) {
    return ffi::Error::InvalidArgument("gsvit_onednn_matmul: float32 or bfloat16 activations");
  }
  if (weight && !IsFloat(*weight)) {
    return ffi::Error::InvalidArgument("gsvit_onednn_matmul: a float32 or bfloat16 weight");
  }
  if (weight && x.element_type() == ffi::DataType::F32 &&
      weight->element_type() != ffi::DataType::F32) {
    return ffi::Error::InvalidArgument("gsvit_onednn_matmul: float32 activations, float32 weight");
  }
  return ffi::Error::Success();
}

ffi::Error Sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (dnnl_sgemm(transa, transb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc) != dnnl_success) {
    return ffi::Error::Internal("gsvit_onednn_matmul: oneDNN sgemm failed");
  }
  return ffi::Error::Success();
}

// y = x @ w + b (ReLU'd if `relu`), plus the residual r (y's shape and dtype) if one is given.
ffi::Error ForwardWith(const ffi::AnyBuffer& x, const ffi::AnyBuffer& w,
                       const ffi::Buffer<ffi::F32>& b, const ffi::AnyBuffer* residual,
                       ffi::Result<ffi::AnyBuffer>& y, bool relu, int64_t threads) {
  auto wd = w.dimensions();
  if (auto e = Check(x, wd, w); e.failure()) return e;
  int64_t rows = Rows(x.dimensions());
  if (residual && (residual->element_type() != x.element_type() ||
                   residual->element_count() != static_cast<size_t>(rows * wd[1]))) {
    return ffi::Error::InvalidArgument("gsvit_onednn_matmul: residual (M, N) in x's dtype");
  }
  SetThreads(threads);
  bool bf16 = x.element_type() == ffi::DataType::BF16;
  if (!bf16 && !relu) {  // y = b (+ r), rows split over the team, then y += x @ w
    float* out = static_cast<float*>(y->untyped_data());
    const float* bias = b.typed_data();
    const float* r = residual ? static_cast<const float*>(residual->untyped_data()) : nullptr;
#pragma omp parallel for
    for (int64_t i = 0; i < rows; ++i) {
      float* row = out + i * wd[1];
      if (r) {
        std::transform(r + i * wd[1], r + (i + 1) * wd[1], bias, row, std::plus<float>());
      } else {
        std::copy_n(bias, wd[1], row);
      }
    }
    return Sgemm('N', 'N', rows, wd[1], wd[0], static_cast<const float*>(x.untyped_data()), wd[0],
                 static_cast<const float*>(w.untyped_data()), wd[1], 1.f, out, wd[1]);
  }
  Key key{rows, wd[0], wd[1], bf16, relu, threads, w.element_type() == ffi::DataType::BF16,
          residual != nullptr};
  return Guarded("gsvit_onednn_matmul", [&] {
    const Forward& f = Lookup<Forward>(key);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(f.pd.src_desc(), Engine(), x.untyped_data())},
        {DNNL_ARG_WEIGHTS, f.WeightsOf(w.untyped_data())},
        {DNNL_ARG_BIAS, dnnl::memory(f.pd.bias_desc(), Engine(), b.untyped_data())},
        {DNNL_ARG_DST, dnnl::memory(f.pd.dst_desc(), Engine(), y->untyped_data())}};
    if (residual) {
      args.insert({AddedArg(relu),
                   dnnl::memory(f.pd.dst_desc(), Engine(), residual->untyped_data())});
    }
    Execute(f.prim, f.pd.scratchpad_desc(), std::move(args));
  });
}

ffi::Error ForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Buffer<ffi::F32> b,
                       ffi::Result<ffi::AnyBuffer> y, bool relu, int64_t threads) {
  return ForwardWith(x, w, b, nullptr, y, relu, threads);
}

ffi::Error ForwardResidualImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Buffer<ffi::F32> b,
                               ffi::AnyBuffer residual, ffi::Result<ffi::AnyBuffer> y,
                               bool relu, int64_t threads) {
  return ForwardWith(x, w, b, &residual, y, relu, threads);
}

ffi::Error BackwardDataImpl(ffi::AnyBuffer dy, ffi::AnyBuffer w,
                            ffi::Result<ffi::AnyBuffer> dx, int64_t threads) {
  auto wd = w.dimensions();
  if (auto e = Check(*dx, wd, w); e.failure()) return e;
  SetThreads(threads);
  Key key{Rows(dx->dimensions()), wd[0], wd[1], dx->element_type() == ffi::DataType::BF16, false,
          threads, w.element_type() == ffi::DataType::BF16, false};
  return Guarded("gsvit_onednn_matmul", [&] {
    const BackwardData& bd = Lookup<BackwardData>(key);
    Execute(bd.prim, bd.pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, dnnl::memory(bd.pd.src_desc(), Engine(), dy.untyped_data())},
             {DNNL_ARG_WEIGHTS, bd.WeightsOf(w.untyped_data())},
             {DNNL_ARG_DST, dnnl::memory(bd.pd.dst_desc(), Engine(), dx->untyped_data())}});
  });
}

ffi::Error BackwardWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                               ffi::Result<ffi::Buffer<ffi::F32>> dw, int64_t threads) {
  auto wd = dw->dimensions();
  if (auto e = Check(x, wd); e.failure()) return e;
  SetThreads(threads);
  int64_t rows = Rows(x.dimensions());
  if (x.element_type() == ffi::DataType::F32) {  // dw = x^T @ dy
    return Sgemm('T', 'N', wd[0], wd[1], rows, static_cast<const float*>(x.untyped_data()), wd[0],
                 static_cast<const float*>(dy.untyped_data()), wd[1], 0.f, dw->typed_data(), wd[1]);
  }
  Key key{rows, wd[0], wd[1], true, false, threads, false, false};
  return Guarded("gsvit_onednn_matmul", [&] {
    const BackwardWeights& bw = Lookup<BackwardWeights>(key);
    Execute(bw.prim, bw.pd.scratchpad_desc(),
            {{DNNL_ARG_SRC, dnnl::memory(bw.pd.src_desc(), Engine(), x.untyped_data())},
             {DNNL_ARG_WEIGHTS, dnnl::memory(bw.pd.weights_desc(), Engine(), dy.untyped_data())},
             {DNNL_ARG_DST, dnnl::memory(bw.pd.dst_desc(), Engine(), dw->untyped_data())}});
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnMatmul, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("relu")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnMatmulResidual, ForwardResidualImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("relu")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnMatmulBackwardData, BackwardDataImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GsvitOnednnMatmulBackwardWeights, BackwardWeightsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));
