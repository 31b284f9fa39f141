# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True, embedsignature=True
"""chargen's int8 GRU step (csrc/int8_step.c, on csrc/'s int8 layers) for Python: the weights once, then one call a step.

    step = Int8Step(table, w_ih, w_hh, b_hh, head_w, head_b, threads=0)   # 0: one per CPU
    scratch = step.scratch(B)                        # one per concurrent caller
    step.step(token, h_in, h_out, logits, scratch)   # token (B) -> h_out (L, B, H), logits (B, V)

Built by chargen.runtime.engine from an int8 model's own weights; see there for
when the runtime uses it. The arrays are checked here (dtype, shape, C order,
the weight rows' padding and 64-byte alignment) and kept alive by the object;
the step runs without the GIL, its loops on the object's own pool of threads (csrc/pool.c).
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free

cnp.import_array()


cdef extern from "pool.h" nogil:
    ctypedef struct chargen_pool:
        pass
    chargen_pool *chargen_pool_new(int threads)
    void chargen_pool_free(chargen_pool *p)
    int chargen_pool_threads(const chargen_pool *p)
    int chargen_pool_usable(const chargen_pool *p)


cdef extern from "int8_matrix.h" nogil:
    ctypedef struct chargen_i8_matrix:
        size_t N, K, ldw
        const int8_t *w
        const float *scale
        const int32_t *wsum
        const float *bias
        const int8_t *packed
        int narrow

    void chargen_i8_row_sums(size_t N, size_t K, size_t ldw, const int8_t *w, int32_t *wsum)


cdef extern from "int8_matvec.h" nogil:
    const char *chargen_i8_kernel()


cdef extern from "int8_gemm.h" nogil:
    ctypedef struct chargen_i8_gemm_kernel:
        const char *name
        size_t rows
        size_t min_batch

    size_t chargen_i8_packed_bytes(size_t N, size_t ldw)
    int chargen_i8_pack(size_t N, size_t ldw, const int8_t *w, int8_t *packed)
    const chargen_i8_gemm_kernel *chargen_i8_gemm_pick()
    double chargen_i8_gemm_peak(const chargen_i8_gemm_kernel *k, int narrow, size_t reps, chargen_pool *pool,
                                int threads)
    uint64_t chargen_i8_read(const void *p, size_t nbytes, size_t reps, chargen_pool *pool, int threads)


cdef extern from "int8_step.h" nogil:
    ctypedef struct chargen_i8_kernels:
        const chargen_i8_gemm_kernel *packed
        size_t packed_from

    ctypedef struct chargen_i8_gru:
        size_t L, H, V
        const float *table
        const chargen_i8_matrix *w_ih
        const chargen_i8_matrix *w_hh
        const float *b_hh
        const float *head_w
        const float *head_b
        chargen_pool *pool
        int threads
        chargen_i8_kernels kernels

    enum:
        CHARGEN_I8_OK
        CHARGEN_I8_BAD_TOKEN

    size_t chargen_i8_scratch_bytes(const chargen_i8_gru *m, size_t B)
    int chargen_i8_init(chargen_i8_gru *m)
    int chargen_i8_step(const chargen_i8_gru *m, size_t B, const int64_t *token, const float *h_in,
                        float *h_out, float *logits, void *scratch)
    int chargen_i8_threaded()


def packed_kernel():
    """The packed (batched) product's kernel on this CPU, 'amx', 'avx512vnni', 'avx2' (x86),
    'neon-i8mm' or 'neon-dotprod' (aarch64), and the batch size the step takes it from; None where
    there is none (then every batch runs on kernel())."""
    cdef const chargen_i8_gemm_kernel *k = chargen_i8_gemm_pick()
    return None if k == NULL else (k.name.decode(), k.min_batch)


def kernel():
    """The int8 kernel this CPU gets: 'avx512vnni', 'avx2' (x86), 'neon-i8mm', 'neon-dotprod', 'neon' (aarch64) or 'c'."""
    return chargen_i8_kernel().decode()


def threaded():
    """Whether the step can run on several threads (csrc/pool.c built with threads: not on Windows)."""
    return bool(chargen_i8_threaded())


def _aligned_bytes(size_t n):
    """n zero bytes starting on a 64-byte boundary (the kernels' loads)."""
    buf = np.zeros(n + 64, np.int8)
    start = (-buf.ctypes.data) % 64
    return buf[start : start + n]


def _per_second(run, double seconds, size_t reps):
    """run(reps) -> the units it did, timed: units a second, from a run of at least `seconds`
    (reps grows until one is)."""
    import time

    while True:
        t = time.perf_counter()
        units = run(reps)
        elapsed = time.perf_counter() - t
        if elapsed >= seconds:
            return units / elapsed
        reps = <size_t>(reps * min(max(2.0, 1.2 * seconds / max(elapsed, 1e-6)), 1e4))


def _array(a, dtype, shape, what):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{what}: expected a C-contiguous {np.dtype(dtype)} array of shape {shape}, got {got}")
    return a


cdef class Int8Step:
    """The int8 step of one model (see the module docstring). Immutable: any number of threads
    may call step() at once, each with its own scratch (one of them at a time gets the pool's
    threads, the others step on their own thread: the same bits). A process forked after the
    pool's threads started makes a new pool at its first step."""

    cdef chargen_i8_gru gru
    cdef chargen_i8_matrix *mats
    cdef chargen_pool *pool
    cdef readonly size_t L, H, V
    cdef readonly int threads
    cdef readonly size_t weight_bytes  # the int8 products' weights: multiply-adds per stream and step
    cdef readonly size_t packed_bytes  # their packed copy for batches (0 where the CPU has no packed kernel)
    cdef readonly bint narrow  # every int8 weight in [-64, 64] (the export's 7-bit int8): AVX2's faster loop
    cdef list _keep

    def __cinit__(self):
        self.mats = NULL
        self.pool = NULL

    def __dealloc__(self):
        chargen_pool_free(self.pool)
        free(self.mats)

    def __init__(self, table, w_ih, w_hh, b_hh, head_w, head_b, int threads=0, bint packed=True):
        """table (V, 3H) float32; w_hh: L tuples (w, scale) with w int8 (3H, ldw), its rows
        zero-padded to ldw = H rounded up to 64 and 64-byte aligned, scale float32 (3H);
        w_ih: L entries, None for layer 0, then (w, scale, bias) like w_hh plus a float32 (3H)
        bias; b_hh (L, 3H), head_w (V, H), head_b (V) float32. threads: the step's threads,
        the caller's included (0: one per CPU this process may run on; 1: no pool). packed: False
        leaves the weights unpacked, so that every batch runs on the matrix-vector kernel()."""
        cdef size_t L = len(w_hh), k
        cdef const chargen_i8_gemm_kernel *packed_kernel = chargen_i8_gemm_pick() if packed else NULL
        self.weight_bytes = self.packed_bytes = 0
        self.narrow = True
        if L < 1 or len(w_ih) != L:
            raise ValueError("w_hh and w_ih need one entry per layer")
        V, H3 = np.shape(table)
        H = H3 // 3
        ldw = (H + 63) // 64 * 64
        keep = [_array(table, np.float32, (V, 3 * H), "table"), _array(b_hh, np.float32, (L, 3 * H), "b_hh"),
                _array(head_w, np.float32, (V, H), "head_w"), _array(head_b, np.float32, (V,), "head_b")]
        self.mats = <chargen_i8_matrix *>calloc(2 * L, sizeof(chargen_i8_matrix))
        if self.mats == NULL:
            raise MemoryError()
        for k in range(2 * L):
            layer, recurrent = k % L, k < L
            entry = w_hh[layer] if recurrent else w_ih[layer]
            what = f"layer {layer} {'W_hh' if recurrent else 'W_ih'}"
            if not recurrent and layer == 0:
                if entry is not None:
                    raise ValueError("w_ih[0] must be None: layer 0 gathers its input from the table")
                continue
            if len(entry) != (2 if recurrent else 3):
                raise ValueError(f"{what}: expected (w, scale{')' if recurrent else ', bias)'}")
            w = _array(entry[0], np.int8, (3 * H, ldw), what)
            if (<uintptr_t>cnp.PyArray_DATA(w)) % 64:
                raise ValueError(f"{what}: the weights must start on a 64-byte boundary")
            if ldw > H and w[:, H:].any():
                raise ValueError(f"{what}: the padding of the rows past H must be zeros")
            scale = _array(entry[1], np.float32, (3 * H,), what + " scale")
            wsum = np.empty(3 * H, np.int32)
            chargen_i8_row_sums(3 * H, H, ldw, <const int8_t *>cnp.PyArray_DATA(w), <int32_t *>cnp.PyArray_DATA(wsum))
            keep += [w, scale, wsum]
            self.narrow = self.narrow and bool(w.min() >= -64 and w.max() <= 64)
            if packed_kernel != NULL:  # the batched product's copy, in its layout (int8_gemm.h)
                copy = _aligned_bytes(chargen_i8_packed_bytes(3 * H, ldw))
                self.mats[k].narrow = chargen_i8_pack(3 * H, ldw, <const int8_t *>cnp.PyArray_DATA(w),
                                                      <int8_t *>cnp.PyArray_DATA(copy))
                keep.append(copy)
                self.mats[k].packed = <const int8_t *>cnp.PyArray_DATA(copy)
                self.packed_bytes += copy.nbytes
            self.weight_bytes += 3 * H * H
            self.mats[k].N, self.mats[k].K, self.mats[k].ldw = 3 * H, H, ldw
            self.mats[k].w = <const int8_t *>cnp.PyArray_DATA(w)
            self.mats[k].scale = <const float *>cnp.PyArray_DATA(scale)
            self.mats[k].wsum = <const int32_t *>cnp.PyArray_DATA(wsum)
            if not recurrent:
                bias = _array(entry[2], np.float32, (3 * H,), what + " bias")
                keep.append(bias)
                self.mats[k].bias = <const float *>cnp.PyArray_DATA(bias)
        self.gru.L, self.gru.H, self.gru.V = L, H, V
        self.gru.table = <const float *>cnp.PyArray_DATA(keep[0])
        self.gru.b_hh = <const float *>cnp.PyArray_DATA(keep[1])
        self.gru.head_w = <const float *>cnp.PyArray_DATA(keep[2])
        self.gru.head_b = <const float *>cnp.PyArray_DATA(keep[3])
        self.gru.w_hh = self.mats
        self.gru.w_ih = self.mats + L
        self.gru.threads = 0
        if chargen_i8_init(&self.gru) != CHARGEN_I8_OK:  # checks the shapes, picks the kernels once
            raise ValueError("the int8 step's shapes do not fit together")
        self._keep = keep
        self.pool = chargen_pool_new(max(threads, 0)) if threads != 1 else NULL  # threads start at the first step
        self.gru.pool = self.pool
        self.L, self.H, self.V, self.threads = L, H, V, chargen_pool_threads(self.pool)

    def kernel_for(self, size_t batch_size):
        """The kernel that runs this model's products at a batch size: kernel(), or
        packed_kernel()'s name + ' packed' from its batch size on ('avx2 packed narrow' where
        AVX2 runs the loop for weights in [-64, 64])."""
        cdef const chargen_i8_gemm_kernel *k = self.gru.kernels.packed
        if k != NULL and self.packed_bytes and batch_size >= self.gru.kernels.packed_from:
            name = k.name.decode()
            return name + " packed" + (" narrow" if name == "avx2" and self.narrow else "")
        return kernel()

    def peak(self, double seconds=0.2, int threads=0):
        """Multiply-adds a second of the packed kernel's inner loop on data in L1, on this step's
        threads (threads: 0 all of them): the ceiling of the batched product on this CPU. None
        where the CPU has no packed kernel."""
        if self.gru.kernels.packed == NULL:
            return None
        return _per_second(lambda reps: self._peak(reps, threads), seconds, 64)

    def read_rate(self, double seconds=0.2, int threads=0):
        """Bytes a second this step's threads read of its weights (the packed copy where there is
        one): what the product cannot beat once the weights dominate (small batches)."""
        packed = [a for a in self._keep if a.dtype == np.int8 and a.ndim == 1]
        buf = np.concatenate([a.reshape(-1) for a in packed or [a for a in self._keep if a.dtype == np.int8]])
        return _per_second(lambda reps: self._read(buf, reps, threads), seconds, 1)

    cdef double _peak(self, size_t reps, int threads):
        cdef const chargen_i8_gemm_kernel *k = self.gru.kernels.packed
        cdef double macs
        with nogil:
            macs = chargen_i8_gemm_peak(k, self.narrow, reps, self.pool, threads)
        return macs

    cdef double _read(self, cnp.ndarray buf, size_t reps, int threads):
        cdef const void *p = cnp.PyArray_DATA(buf)
        cdef size_t nbytes = buf.nbytes
        with nogil:
            chargen_i8_read(p, nbytes, reps, self.pool, threads)
        return <double>nbytes * reps

    def scratch(self, size_t batch_size):
        """A scratch buffer for steps over batch_size streams (one per concurrent caller)."""
        return np.zeros(chargen_i8_scratch_bytes(&self.gru, batch_size), np.uint8)

    def step(self, const int64_t[::1] token, const float[:, :, ::1] h_in, float[:, :, ::1] h_out,
             float[:, ::1] logits, uint8_t[::1] scratch, int threads=0):
        """One step for B = len(token) streams: h_in (L, B, H) -> h_out (L, B, H) (not h_in),
        logits (B, V). threads: this call's threads (0: the object's); the result does not
        depend on them. Raises ValueError for wrong shapes or a token outside [0, V) (then
        nothing is written)."""
        cdef size_t B = token.shape[0]
        cdef int status
        cdef chargen_i8_gru gru
        if self.pool != NULL and not chargen_pool_usable(self.pool):  # forked after its threads started
            chargen_pool_free(self.pool)
            self.pool = self.gru.pool = chargen_pool_new(self.threads)
        gru = self.gru
        if threads > 0:
            gru.threads = threads
        shape = (self.L, B, self.H)
        if B < 1:
            raise ValueError("step() needs at least one stream")
        if (h_in.shape[0], h_in.shape[1], h_in.shape[2]) != shape or (h_out.shape[0], h_out.shape[1], h_out.shape[2]) != shape:
            raise ValueError(f"h_in and h_out must have shape {shape}")
        if logits.shape[0] != B or logits.shape[1] != self.V:
            raise ValueError(f"logits must have shape {(B, self.V)}")
        if <size_t>scratch.shape[0] < chargen_i8_scratch_bytes(&self.gru, B):
            raise ValueError(f"scratch is too small for {B} streams: make it with scratch({B})")
        if &h_in[0, 0, 0] == &h_out[0, 0, 0]:
            raise ValueError("h_out must not be h_in")
        with nogil:
            status = chargen_i8_step(&gru, B, &token[0], &h_in[0, 0, 0], &h_out[0, 0, 0], &logits[0, 0],
                                     &scratch[0])
        if status == CHARGEN_I8_BAD_TOKEN:
            raise ValueError(f"a token is outside [0, {self.V})")
