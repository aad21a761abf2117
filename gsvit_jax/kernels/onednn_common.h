// What the oneDNN FFI handlers (onednn_conv.cc, onednn_matmul.cc) share: the engine, running a
// primitive with a per-call scratchpad, reorders, the primitive cache and exception fencing.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace gsvit {

namespace ffi = xla::ffi;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

inline dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Primitive attributes: the scratchpad is passed per call, so one primitive is safe from several
// threads (XLA runs the calls of a process's devices concurrently).
inline dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The same, with a ReLU applied to the primitive's output (a post-op) if `relu`, then, if given,
// a tensor `added` (the output's shape) added to it (a binary post-op, argument
// DNNL_ARG_ATTR_MULTIPLE_POST_OP(post-op index) | DNNL_ARG_SRC_1).
inline dnnl::primitive_attr Attributes(bool relu,
                                       const dnnl::memory::desc* added = nullptr) {
  dnnl::primitive_attr attr = UserScratchpad();
  dnnl::post_ops ops;
  if (relu) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  if (added) ops.append_binary(dnnl::algorithm::binary_add, *added);
  if (ops.len() > 0) attr.set_post_ops(ops);
  return attr;
}

// The execute argument that passes `Attributes(relu, added)`'s added tensor.
inline int AddedArg(bool relu) {
  return DNNL_ARG_ATTR_MULTIPLE_POST_OP(relu ? 1 : 0) | DNNL_ARG_SRC_1;
}

// This call's OpenMP team: the cores divided among the process's devices, whose calls XLA runs
// concurrently (8 fake devices on 2 cores would otherwise start 8 teams of 2).
inline void SetThreads(int64_t threads) { omp_set_num_threads(static_cast<int>(threads)); }

// The primitives `T` built from `key` (on its first call, then kept: shapes are static under jit).
template <typename T, typename Key>
const T& Lookup(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<T>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, std::make_unique<T>(key)).first;
  return *it->second;
}

// Runs `run`, turning oneDNN's exceptions into an FFI error: none may cross into XLA.
template <typename F>
ffi::Error Guarded(const char* name, F run) {
  try {
    run();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string(name) + ": oneDNN: " + e.what());
  }
  return ffi::Error::Success();
}

inline void Execute(const dnnl::primitive& prim, const dnnl::memory::desc& scratchpad,
                    std::unordered_map<int, dnnl::memory> args) {
  dnnl::stream stream(Engine());
  args.insert({DNNL_ARG_SCRATCHPAD, dnnl::memory(scratchpad, Engine())});
  prim.execute(stream, args);
  stream.wait();
}

// `data` (laid out as `from`) reordered into a new memory laid out as `to`.
inline dnnl::memory Reordered(const dnnl::reorder& reorder, const dnnl::memory::desc& from,
                              const dnnl::memory::desc& to, void* data) {
  dnnl::memory user(from, Engine(), data), out(to, Engine());
  dnnl::stream stream(Engine());
  reorder.execute(stream, user, out);
  stream.wait();
  return out;
}

inline bool IsFloat(const ffi::AnyBuffer& x) {
  return x.element_type() == ffi::DataType::F32 || x.element_type() == ffi::DataType::BF16;
}

}  // namespace gsvit
