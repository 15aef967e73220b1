// fastsoftmax CUDA kernels (compiled at run time by CuPy's RawModule / NVRTC).
//
// One row kernel, `fs_rows`, serves softmax / log_softmax / softmin, logsumexp and the fused
// cross-entropy (loss + gradient).  It is templated on
//   T    the storage type (float, double, fs_f16, fs_bf16: the half types are raw 16-bit words,
//        converted with PTX `cvt`, so no CUDA header is needed),
//   TPR  threads per row chunk (1 .. 1024, a power of two),
//   VPT  16-byte vectors per thread (the chunk is held in registers: TPR * VPT * VEC elements),
//   VEC  elements per vector (16 / sizeof(T), or 1 when the rows are not 16-byte aligned),
//   MODE what to compute (see the MODE_ constants).
// Each element is read from global memory once and written once.  A row longer than one chunk, or
// rows too few to fill the GPU, are split into S chunks handled by S blocks that exchange their
// partial (max, count-of-max, sum, extra sums) through a small workspace and a per-row arrival
// counter (reset by the last block of the row to leave).  Blocks take their work item from an atomic
// ticket (the counter only grows; the host passes its value at launch), so a block only
// ever waits for blocks that already started or will start once an earlier row has finished: the
// launch is deadlock-free as long as S blocks can be resident at once (the host checks this).
//
// Numerics: accumulation in float for the half types and float32, in double for float64.  The sum
// is kept as (number of elements equal to the max, sum of exp(x - max) over the others) so that
// logsumexp = max + log1p((count - 1) + rest), as SciPy does for accuracy.

typedef unsigned short fs_u16;
typedef long long fs_i64;

struct fs_f16 { fs_u16 b; };
struct fs_bf16 { fs_u16 b; };

#define MODE_SOFTMAX 0
#define MODE_LOGSOFTMAX 1
#define MODE_LSE 2
#define MODE_CE 3

template <typename T> struct Cvt;
template <> struct Cvt<float> {
    typedef float A;
    static __device__ __forceinline__ float ld(float v) { return v; }
    static __device__ __forceinline__ float st(float v) { return v; }
};
template <> struct Cvt<double> {
    typedef double A;
    static __device__ __forceinline__ double ld(double v) { return v; }
    static __device__ __forceinline__ double st(double v) { return v; }
};
template <> struct Cvt<fs_f16> {
    typedef float A;
    static __device__ __forceinline__ float ld(fs_f16 v) {
        float r;
        asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(v.b));
        return r;
    }
    static __device__ __forceinline__ fs_f16 st(float v) {
        fs_f16 r;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.b) : "f"(v));
        return r;
    }
};
template <> struct Cvt<fs_bf16> {
    typedef float A;
    static __device__ __forceinline__ float ld(fs_bf16 v) {
        return __uint_as_float(((unsigned int)v.b) << 16);
    }
    static __device__ __forceinline__ fs_bf16 st(float v) {
        fs_bf16 r;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.b) : "f"(v));
        return r;
    }
};

// Math in the accumulation type (explicit names: no overload surprises under NVRTC).
__device__ __forceinline__ float fs_exp(float v) { return expf(v); }
__device__ __forceinline__ double fs_exp(double v) { return exp(v); }
__device__ __forceinline__ float fs_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double fs_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float fs_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double fs_tanh(double v) { return tanh(v); }
template <typename A> __device__ __forceinline__ A fs_inf();
template <> __device__ __forceinline__ float fs_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double fs_inf<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}
template <typename A> __device__ __forceinline__ A fs_nan();
template <> __device__ __forceinline__ float fs_nan<float>() { return __int_as_float(0x7fffffff); }
template <> __device__ __forceinline__ double fs_nan<double>() {
    return __longlong_as_double(0x7fffffffffffffffLL);
}
// (a - b) / T, with the difference and the scaling done in double when T != 1 (float32 inputs then
// see a single rounding, as with T = 1).
template <typename A> __device__ __forceinline__ A fs_sd(A a, A b, bool unit, double it) {
    return unit ? a - b : (A)(((double)a - (double)b) * it);
}
// max that propagates NaN from either side
template <typename A> __device__ __forceinline__ A fs_max(A a, A b) {
    return (a > b || a != a) ? a : b;
}

struct __align__(16) fs_v16 { unsigned int w[4]; };

template <typename T, int VEC> union fs_pack {
    fs_v16 v;
    T e[VEC];
};

// Stores VEC computed values at dst as T: one 16-byte store when VEC > 1 (dst is then aligned).
template <typename T, int VEC, typename A>
__device__ __forceinline__ void fs_store(T* dst, const A (&o)[VEC]) {
    if (VEC == 1) {
        dst[0] = Cvt<T>::st(o[0]);
        return;
    }
    fs_pack<T, VEC> p;
#pragma unroll
    for (int j = 0; j < VEC; ++j) p.e[j] = Cvt<T>::st(o[j]);
    *reinterpret_cast<fs_v16*>(dst) = p.v;
}

// Writes this thread's part of a row chunk held in registers v: the element of column idx, loaded
// as u, becomes f(u, idx), and each vector is one store.
template <typename T, int TPR, int VPT, int VEC, typename A, int N, typename F>
__device__ __forceinline__ void fs_write(T* yr, fs_i64 beg, fs_i64 end, int t, const A (&v)[N], F f) {
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
        const fs_i64 i0 = beg + ((fs_i64)k * TPR + t) * VEC;
        if (i0 < end) {
            A o[VEC];
#pragma unroll
            for (int j = 0; j < VEC; ++j) o[j] = f(v[k * VEC + j], i0 + j);
            fs_store<T, VEC>(yr + i0, o);
        }
    }
}

// Reduce NV values over the TPR threads of a group.  For TPR <= 32 the group lives inside one warp
// (shuffles only); for TPR > 32 the group is the whole block (shuffles, then shared memory).
// Every thread of the block must call this (no divergent early exits).
template <int TPR, int NV, bool IS_MAX, typename A>
__device__ __forceinline__ void group_reduce(A (&v)[NV], A* smem) {
    const int lim = TPR < 32 ? TPR : 32;
#pragma unroll
    for (int o = lim / 2; o > 0; o >>= 1) {
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            A u = __shfl_xor_sync(0xffffffffu, v[k], o);
            v[k] = IS_MAX ? fs_max(v[k], u) : v[k] + u;
        }
    }
    if (TPR > 32) {
        const int NW = TPR / 32;
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        __syncthreads();  // smem may still be read by a previous reduction
        if (lane == 0) {
#pragma unroll
            for (int k = 0; k < NV; ++k) smem[k * 32 + warp] = v[k];
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            A r = smem[k * 32];
            for (int j = 1; j < NW; ++j) {
                A u = smem[k * 32 + j];
                r = IS_MAX ? fs_max(r, u) : r + u;
            }
            v[k] = r;
        }
    }
}

// Slots of a partial result in the split workspace.
#define FS_NPART 5

template <typename T, int TPR, int VPT, int VEC, int MODE>
__global__ void __launch_bounds__(TPR <= 32 ? 128 : TPR, (TPR <= 32 ? 8 : (1024 / TPR > 1 ? 1024 / TPR : 1)))
fs_rows(const T* x,                    // (rows, cols) C-contiguous
        T* y,                          // output (softmax / log_softmax / CE gradient); may be x
        typename Cvt<T>::A* rowout,    // per-row logsumexp (MODE_LSE) or loss (MODE_CE)
        fs_i64 rows, fs_i64 cols, fs_i64 chunk, int S,
        double inv_t,                  // 1/T; negative for softmin (the row is -x/T)
        typename Cvt<T>::A* part,      // split workspace: rows * S * FS_NPART
        int* sync,                     // [ticket, unused, arrive[rows]] (arrive self-resetting)
        unsigned int tbase,            // ticket counter value at this launch (host-tracked)
        const fs_i64* tgt,             // CE hard labels (rows,) or null
        const typename Cvt<T>::A* q,   // CE soft labels (rows, cols) or null
        const typename Cvt<T>::A* w,   // CE class weights (cols,) or null
        const typename Cvt<T>::A* coef,// CE [inv_ce, inv_z, W] on device, or null
        fs_i64 ignore_index,
        typename Cvt<T>::A eps,        // label smoothing
        typename Cvt<T>::A zl,         // z-loss coefficient
        typename Cvt<T>::A cap,        // softcap (0 = none)
        typename Cvt<T>::A Wdef,       // sum of weights when coef is null
        int write_out) {
    typedef typename Cvt<T>::A A;
    const int BLOCK = TPR <= 32 ? 128 : TPR;  // TPR > 32: one group (row chunk) per block
    const int GPB = BLOCK / TPR;
    const int N = VPT * VEC;
    const int NS = (MODE == MODE_CE) ? 4 : 2;
    __shared__ A smem[4 * 32];
    __shared__ fs_i64 s_ticket;

    const int t = threadIdx.x % TPR;
    const int g = threadIdx.x / TPR;
    fs_i64 work;
    if (S > 1) {
        if (threadIdx.x == 0)
            s_ticket = (fs_i64)(atomicAdd(reinterpret_cast<unsigned int*>(sync), 1u) - tbase);
        __syncthreads();
        work = s_ticket;
    } else {
        work = (fs_i64)blockIdx.x * GPB + g;
    }
    fs_i64 row = work / S;
    const int c = (int)(work - row * S);
    const bool active = row < rows;
    if (!active) row = rows - 1;  // keep indexing in range; nothing is written
    const fs_i64 beg = (fs_i64)c * chunk;
    const fs_i64 end = beg + chunk < cols ? beg + chunk : cols;
    const T* xr = x + row * cols;
    const A NEG_INF = -fs_inf<A>();
    const A C = (A)cols;
    const double it = inv_t < 0.0 ? -inv_t : inv_t;
    const bool unit = (MODE == MODE_CE) || it == 1.0;

    // Cross-entropy row status: 0 normal, 1 ignored, 2 label out of range.
    int status = 0;
    fs_i64 yl = -1;
    A wy = (A)1;
    if (MODE == MODE_CE && tgt != 0) {
        yl = tgt[row];
        if (yl == ignore_index) status = 1;
        else if (yl < 0 || yl >= cols) status = 2;
        else if (w != 0) wy = w[yl];
    }
    const bool do_load = active && status == 0;
    const bool keep_v = (MODE == MODE_LOGSOFTMAX) || (MODE == MODE_CE && cap > (A)0);

    // ---- load the chunk into registers (one read of each element) ----
    A v[N];
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
        const fs_i64 i0 = beg + ((fs_i64)k * TPR + t) * VEC;
        if (do_load && i0 < end) {
            if (VEC == 1) {
                v[k * VEC] = Cvt<T>::ld(xr[i0]);
            } else {
                fs_pack<T, VEC> p;
                p.v = *reinterpret_cast<const fs_v16*>(xr + i0);
#pragma unroll
                for (int j = 0; j < VEC; ++j) v[k * VEC + j] = Cvt<T>::ld(p.e[j]);
            }
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                A u = v[k * VEC + j];
                if (MODE == MODE_CE) {
                    if (cap > (A)0) u = cap * fs_tanh(u / cap);
                } else if (inv_t < 0.0) {
                    u = -u;
                }
                v[k * VEC + j] = u;
            }
        } else {
#pragma unroll
            for (int j = 0; j < VEC; ++j) v[k * VEC + j] = NEG_INF;
        }
    }

    // ---- chunk max ----
    A mred[1];
    mred[0] = NEG_INF;
#pragma unroll
    for (int n = 0; n < N; ++n) mred[0] = fs_max(mred[0], v[n]);
    group_reduce<TPR, 1, true>(mred, smem);
    const A mc = mred[0];
    const A shift = (mc == NEG_INF) ? (A)0 : mc;

    // ---- chunk sums: count of max, rest = sum exp(v - max) of the others, CE extras ----
    A s[NS];
#pragma unroll
    for (int k = 0; k < NS; ++k) s[k] = (A)0;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            const int n = k * VEC + j;
            const A o = v[n];
            const A e = fs_exp(fs_sd(o, shift, unit, it));
            if (o == mc && mc > NEG_INF) s[0] += (A)1;
            else s[1] += e;
            if (!keep_v) v[n] = e;
            if (MODE == MODE_CE) {
                const fs_i64 idx = beg + ((fs_i64)k * TPR + t) * VEC + j;
                if (do_load && idx < end) {
                    if (q != 0) {
                        const A qq = ((A)1 - eps) * q[row * cols + idx] + eps / C;
                        const A wq = (w != 0 ? w[idx] : (A)1) * qq;
                        s[2] += wq;
                        s[3] += wq * o;
                    } else {
                        if (eps > (A)0) s[2] += (w != 0 ? w[idx] : (A)1) * o;
                        if (idx == yl) s[3] += o;
                    }
                }
            }
        }
    }
    group_reduce<TPR, NS, false>(s, smem);

    // ---- merge the chunks of a split row ----
    A M = mc;
    if (S > 1) {
        // Every block of this row takes the same branch (status is per row).
        if (do_load) {
            if (threadIdx.x == 0) {
                A* pp = part + (row * S + c) * FS_NPART;
                pp[0] = mc;
                pp[1] = s[0];
                pp[2] = s[1];
                pp[3] = NS > 2 ? s[NS > 2 ? 2 : 0] : (A)0;
                pp[4] = NS > 3 ? s[NS > 3 ? 3 : 0] : (A)0;
                __threadfence();
                atomicAdd(&sync[2 + row], 1);
                volatile int* arr = sync + 2 + row;
                while (*arr < S) {
                    __nanosleep(64);
                }
                __threadfence();
            }
            __syncthreads();
            const volatile A* pv = part + row * S * FS_NPART;
            A mm[1];
            mm[0] = NEG_INF;
            for (int j = threadIdx.x; j < S; j += BLOCK) mm[0] = fs_max(mm[0], (A)pv[j * FS_NPART]);
            group_reduce<TPR, 1, true>(mm, smem);
            M = mm[0];
            A r[NS];
#pragma unroll
            for (int k = 0; k < NS; ++k) r[k] = (A)0;
            for (int j = threadIdx.x; j < S; j += BLOCK) {
                const A mj = pv[j * FS_NPART];
                const A cj = pv[j * FS_NPART + 1];
                const A rj = pv[j * FS_NPART + 2];
                if (mj == M) {
                    r[0] += cj;
                    r[1] += rj;
                } else {
                    r[1] += (cj + rj) * fs_exp(fs_sd(mj, M, unit, it));
                }
                if (NS > 2) r[NS > 2 ? 2 : 0] += pv[j * FS_NPART + 3];
                if (NS > 3) r[NS > 3 ? 3 : 0] += pv[j * FS_NPART + 4];
            }
            group_reduce<TPR, NS, false>(r, smem);
#pragma unroll
            for (int k = 0; k < NS; ++k) s[k] = r[k];
            // departure: the last block of the row resets its counter for the next launch
            __syncthreads();
            if (threadIdx.x == 0) {
                if (atomicAdd(&sync[2 + row], 1) == 2 * S - 1) sync[2 + row] = 0;
            }
        }
    }

    const A L = s[0] + s[1];
    const A off = fs_log1p((s[0] - (A)1) + s[1]);  // log(L) for a finite max
    A lse;
    if (M == NEG_INF) lse = NEG_INF;
    else if (M == fs_inf<A>()) lse = fs_inf<A>();
    else lse = (unit ? M : (A)((double)M * it)) + off;
    // factor turning the stored exp(v - shift) into a probability
    A factor = fs_exp(fs_sd(mc, M, unit, it)) / L;
    if (M == fs_inf<A>()) factor = fs_nan<A>();

    const bool lead = active && t == 0 && c == 0;

    if (MODE == MODE_LSE) {
        if (lead) rowout[row] = lse;
        return;
    }

    T* yr = y + row * cols;
    if (MODE == MODE_SOFTMAX || MODE == MODE_LOGSOFTMAX) {
        if (!active) return;
        fs_write<T, TPR, VPT, VEC>(yr, beg, end, t, v, [&](A u, fs_i64) {
            if (MODE == MODE_SOFTMAX) return u * factor;
            return (M == fs_inf<A>()) ? fs_nan<A>() : fs_sd(u, M, unit, it) - off;
        });
        return;
    }

    // ---- cross-entropy: loss and gradient ----
    const A inv_ce = coef != 0 ? coef[0] : (A)1;
    const A inv_z = coef != 0 ? coef[1] : (A)1;
    const A W = coef != 0 ? coef[2] : Wdef;
    A alpha = (A)0, gy = (A)0, beps = (A)0, loss = (A)0;
    if (status == 0) {
        if (q != 0) {
            loss = (lse * s[2] - s[3]) * inv_ce;
            alpha = inv_ce * s[2];
        } else {
            const A nll = lse - s[3];
            A ce = wy * ((A)1 - eps) * nll;
            if (eps > (A)0) ce += eps / C * (W * lse - s[2]);
            loss = ce * inv_ce;
            alpha = inv_ce * (wy * ((A)1 - eps) + eps / C * W);
            gy = inv_ce * wy * ((A)1 - eps);
            beps = inv_ce * eps / C;
        }
        if (zl != (A)0) {
            loss += zl * lse * lse * inv_z;
            alpha += inv_z * (A)2 * zl * lse;
        }
    } else if (status == 2) {
        loss = fs_nan<A>();
    }
    if (lead) rowout[row] = loss;
    if (!write_out || !active) return;
    const A fill = status == 2 ? fs_nan<A>() : (A)0;
    fs_write<T, TPR, VPT, VEC>(yr, beg, end, t, v, [&](A u, fs_i64 idx) {
        if (status != 0) return fill;
        const A p = (keep_v ? fs_exp(u - shift) : u) * factor;  // CE: unit scale
        A gr = alpha * p;
        if (q != 0) {
            const A qq = ((A)1 - eps) * q[row * cols + idx] + eps / C;
            gr -= inv_ce * (w != 0 ? w[idx] : (A)1) * qq;
        } else {
            if (eps > (A)0) gr -= beps * (w != 0 ? w[idx] : (A)1);
            if (idx == yl) gr -= gy;
        }
        if (cap > (A)0) {
            const A tc = u / cap;
            gr *= (A)1 - tc * tc;
        }
        return gr;
    });
}

// Cross-entropy coefficients on the device (no host synchronisation):
// coef[0] = 1 / sum(weight[y]) over non-ignored rows ("mean", hard labels), 1 / N (soft labels),
//           1 otherwise; 0 when the denominator is 0 (every row ignored: the loss is 0.0);
// coef[1] = 1 / (number of non-ignored rows) for "mean", 1 otherwise;
// coef[2] = sum(weight) (or C without weights).
// One block; N and C are small next to the logits this accompanies.
template <typename A>
__global__ void __launch_bounds__(1024)
fs_ce_coef(const fs_i64* tgt, const A* w, fs_i64 n, fs_i64 C, fs_i64 ignore_index, int mean,
           A* coef) {
    __shared__ A smem[4 * 32];
    A r[3];
    r[0] = (A)0;
    r[1] = (A)0;
    r[2] = (A)0;
    if (tgt != 0) {
        for (fs_i64 i = threadIdx.x; i < n; i += 1024) {
            const fs_i64 yv = tgt[i];
            if (yv != ignore_index) {
                r[1] += (A)1;
                if (yv >= 0 && yv < C) r[0] += (w != 0 ? w[yv] : (A)1);
            }
        }
    }
    if (w != 0) {
        for (fs_i64 i = threadIdx.x; i < C; i += 1024) r[2] += w[i];
    }
    group_reduce<1024, 3, false>(r, smem);
    if (threadIdx.x == 0) {
        A dce, dz;
        if (tgt != 0) {
            dce = r[0];
            dz = r[1];
        } else {
            dce = (A)n;
            dz = (A)n;
        }
        coef[0] = mean ? (dce != (A)0 ? (A)1 / dce : (A)0) : (A)1;
        coef[1] = mean ? (dz != (A)0 ? (A)1 / dz : (A)0) : (A)1;
        coef[2] = w != 0 ? r[2] : (A)C;
    }
}
