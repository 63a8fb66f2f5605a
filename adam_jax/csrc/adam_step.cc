// One fused Adam / AMSGrad step over every leaf, as an XLA FFI handler for the CPU.
//
// Per element, with the scalars of the step computed in JAX (see adam_jax/_fused.py):
//
//   g <- sign * g (+ wd_coupled * p)
//   m <- b1 * m + (1 - b1) * g
//   v <- b2 * v + (1 - b2) * g * g
//   r  = v, or with AMSGrad  r = v_max <- max(v_max, before_max * v)
//   d  = sqrt(inside * r + eps_root) + eps
//   s  = d == 0 ? 0 : numerator * m / d  (+ wd_decoupled * p)
//   p <- p + (-lr) * s
//
// in the order of operations (and with the same fused multiply-adds) of adam_jax.adam
// followed by optax.apply_updates, compiled by XLA, so that the results are the same bits.
// Only a zero denominator gives a zero step: a NaN or inf propagates, as in adam_jax.adam. Each array is read once and written once: 28 bytes per float32
// param (36 with AMSGrad). Params and moments are updated in place (the outputs alias the
// inputs). Work is split into chunks that the calling thread and XLA's intra-op thread pool
// take from a shared counter.

#define PY_SSIZE_T_CLEAN
#include <Python.h>  // first, as Python asks

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Scalar {
  kNegLr,
  kNumerator,
  kInside,
  kBeforeMax,
  kB1,
  kOneMinusB1,
  kB2,
  kOneMinusB2,
  kEps,
  kEpsRoot,
  kWdCoupled,
  kWdDecoupled,
  kSign,  // -1 with maximize, else 1
  kNumScalars,
};

// Elements per chunk: 64 Ki floats, 256 KiB per array.
constexpr int64_t kChunk = int64_t{1} << 16;

struct Leaf {
  float* p;
  const float* g;
  float* m;
  float* v;
  float* v_max;  // nullptr without AMSGrad
  int64_t n;
};

struct Chunk {
  int leaf;
  int64_t begin, end;
};

// NaN-propagating maximum, as jnp.maximum.
inline float Max(float a, float b) { return (a != a || a > b) ? a : b; }

// a * b + c, with one rounding where kFma. XLA's CPU backend lets LLVM contract a multiply
// and an add into a fused multiply-add when the machine has FMA; the contractions below are
// the ones it makes in adam_jax.adam's loops, so that both give the same bits.
//
// That includes the last one, p + (-lr) * s: XLA's loop multiplies the step by the learning
// rate right before adding it to p (LLVM moves the add into the arms of the zero-denominator
// select), so it is contracted whether lr is a constant, a schedule's value or traced.
template <bool kFma>
inline float MulAdd(float a, float b, float c) {
  if constexpr (kFma) {
    return __builtin_fmaf(a, b, c);
  } else {
    return a * b + c;
  }
}

template <bool kFma, bool kAmsgrad, bool kCoupled, bool kDecoupled>
__attribute__((always_inline)) inline void UpdateRange(const float* __restrict s,
                                                       float* __restrict p,
                                                       const float* __restrict g,
                                                       float* __restrict m, float* __restrict v,
                                                       float* __restrict v_max, int64_t n) {
  const float neg_lr = s[kNegLr], numerator = s[kNumerator], inside = s[kInside];
  const float before_max = s[kBeforeMax], b1 = s[kB1], omb1 = s[kOneMinusB1];
  const float b2 = s[kB2], omb2 = s[kOneMinusB2], eps = s[kEps], eps_root = s[kEpsRoot];
  const float wdc = s[kWdCoupled], wdd = s[kWdDecoupled], sign = s[kSign];
  for (int64_t i = 0; i < n; ++i) {
    const float pi = p[i];
    float gi = sign * g[i];
    if (kCoupled) gi = MulAdd<kFma>(wdc, pi, gi);
    const float mi = MulAdd<kFma>(b1, m[i], omb1 * gi);
    const float vi = MulAdd<kFma>(b2, v[i], omb2 * (gi * gi));
    m[i] = mi;
    v[i] = vi;
    float r = vi;
    if (kAmsgrad) {
      r = Max(v_max[i], vi * before_max);
      v_max[i] = r;
    }
    const float denom = std::sqrt(MulAdd<kFma>(r, inside, eps_root)) + eps;
    const float quotient = (numerator * mi) / denom;  // computed always, so the loop vectorises
    const float step = denom == 0.0f ? 0.0f : quotient;
    const float update = kDecoupled ? MulAdd<kFma>(wdd, pi, step) : step;
    p[i] = MulAdd<kFma>(neg_lr, update, pi);
  }
}

// What the step does, fixed when the optimizer is built (attributes of the FFI call).
struct Options {
  bool amsgrad, coupled, decoupled;
};

template <bool kFma>
__attribute__((always_inline)) inline void UpdateLeaf(const float* s, const Options& o,
                                                      const Leaf& leaf, int64_t begin,
                                                      int64_t end) {
  float* vm = leaf.v_max ? leaf.v_max + begin : nullptr;
  float* p = leaf.p + begin;
  const float* g = leaf.g + begin;
  float* m = leaf.m + begin;
  float* v = leaf.v + begin;
  const int64_t n = end - begin;
#define ADAM_JAX_DISPATCH(A, C, D)                                 \
  if (o.amsgrad == A && o.coupled == C && o.decoupled == D) \
    return UpdateRange<kFma, A, C, D>(s, p, g, m, v, vm, n);
  ADAM_JAX_DISPATCH(false, false, false)
  ADAM_JAX_DISPATCH(false, false, true)
  ADAM_JAX_DISPATCH(false, true, false)
  ADAM_JAX_DISPATCH(false, true, true)
  ADAM_JAX_DISPATCH(true, false, false)
  ADAM_JAX_DISPATCH(true, false, true)
  ADAM_JAX_DISPATCH(true, true, false)
  ADAM_JAX_DISPATCH(true, true, true)
#undef ADAM_JAX_DISPATCH
}

#if defined(__x86_64__) || defined(__i386__)
// The extension is built when the package is installed, without -march=native: the choice
// between the AVX2+FMA loop and the baseline (SSE2 on x86-64) is made at run time, as XLA
// makes it for its own loops.
__attribute__((target("avx2,fma"))) void UpdateAvx2Fma(const float* s, const Options& o,
                                                       const Leaf& leaf, int64_t begin,
                                                       int64_t end) {
  UpdateLeaf<true>(s, o, leaf, begin, end);
}

void UpdateBaseline(const float* s, const Options& o, const Leaf& leaf, int64_t begin,
                    int64_t end) {
  UpdateLeaf<false>(s, o, leaf, begin, end);
}

bool HaveAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const bool kHaveAvx2Fma = HaveAvx2Fma();

void Update(const float* s, const Options& o, const Leaf& leaf, int64_t begin, int64_t end) {
  if (kHaveAvx2Fma) {
    UpdateAvx2Fma(s, o, leaf, begin, end);
  } else {
    UpdateBaseline(s, o, leaf, begin, end);
  }
}
#else
// Elsewhere (e.g. AArch64) the baseline has FMA when __FP_FAST_FMAF says so.
void Update(const float* s, const Options& o, const Leaf& leaf, int64_t begin, int64_t end) {
#ifdef __FP_FAST_FMAF
  UpdateLeaf<true>(s, o, leaf, begin, end);
#else
  UpdateLeaf<false>(s, o, leaf, begin, end);
#endif
}
#endif

struct Work {
  float scalars[kNumScalars];
  Options options;
  std::vector<Leaf> leaves;
  std::vector<Chunk> chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  // Takes chunks until none is left.
  void Drain() {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) <
                    static_cast<int64_t>(chunks.size());) {
      const Chunk& k = chunks[c];
      Update(scalars, options, leaves[k.leaf], k.begin, k.end);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error AdamStepImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                        ffi::RemainingArgs args, ffi::RemainingRets rets, bool amsgrad,
                        bool coupled, bool decoupled) {
  const int64_t arrays = amsgrad ? 5 : 4;  // p, g, m, v (, v_max)
  if (scalars.element_count() != kNumScalars) {
    return ffi::Error::InvalidArgument("adam_jax_step: expected " +
                                       std::to_string(kNumScalars) + " scalars");
  }
  if (args.size() % arrays != 0 || rets.size() != (arrays - 1) * (args.size() / arrays)) {
    return ffi::Error::InvalidArgument("adam_jax_step: wrong number of arrays");
  }
  const int64_t n_leaves = static_cast<int64_t>(args.size()) / arrays;
  auto work = std::make_shared<Work>();
  std::memcpy(work->scalars, scalars.typed_data(), sizeof(work->scalars));
  work->options = {amsgrad, coupled, decoupled};
  work->leaves.reserve(n_leaves);
  for (int64_t i = 0; i < n_leaves; ++i) {
    float* in[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    int64_t n = 0;
    for (int64_t a = 0; a < arrays; ++a) {
      auto buf = args.get<ffi::Buffer<ffi::F32>>(a * n_leaves + i);
      if (buf.has_error()) return buf.error();
      if (a == 0) n = static_cast<int64_t>(buf->element_count());
      if (static_cast<int64_t>(buf->element_count()) != n) {
        return ffi::Error::InvalidArgument("adam_jax_step: leaf sizes differ");
      }
      in[a] = buf->typed_data();
    }
    float* out[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    for (int64_t a = 0; a + 1 < arrays; ++a) {  // outputs: p, m, v (, v_max)
      auto buf = rets.get<ffi::Buffer<ffi::F32>>(a * n_leaves + i);
      if (buf.has_error()) return buf.error();
      out[a] = (*buf)->typed_data();
      float* src = in[a == 0 ? 0 : a + 1];
      // The outputs alias the inputs; copy first should XLA ever give a separate buffer.
      if (out[a] != src) std::memcpy(out[a], src, n * sizeof(float));
    }
    work->leaves.push_back({out[0], in[1], out[1], out[2], amsgrad ? out[3] : nullptr, n});
    for (int64_t b = 0; b < n; b += kChunk) {
      work->chunks.push_back({static_cast<int>(i), b, std::min(n, b + kChunk)});
    }
  }
  const int64_t n_chunks = static_cast<int64_t>(work->chunks.size());
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n_chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) {
    pool.Schedule([work] { work->Drain(); });
  }
  work->Drain();
  // Every chunk is taken; wait for those that helpers are still running.
  while (work->done.load(std::memory_order_acquire) < n_chunks) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdamStep, AdamStepImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<bool>("amsgrad")
                                  .Attr<bool>("coupled")
                                  .Attr<bool>("decoupled"));

// The Python extension module adam_jax._adam_step, built when the package is installed: its
// attribute ``handler`` is the FFI handler above as a capsule, for jax.ffi.register_ffi_target.
namespace {

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_adam_step",
                       "adam_jax's fused Adam step (XLA FFI handler, CPU).", -1};

}  // namespace

PyMODINIT_FUNC PyInit__adam_step() {
  PyObject* module = PyModule_Create(&kModule);
  if (module == nullptr) return nullptr;
  PyObject* handler = PyCapsule_New(reinterpret_cast<void*>(AdamStep), nullptr, nullptr);
  if (handler == nullptr || PyModule_AddObject(module, "handler", handler) < 0) {
    Py_XDECREF(handler);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
