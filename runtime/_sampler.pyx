# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True, embedsignature=True
"""The C sampler (csrc/sampler.c) for Python: one call, one id.

    s = Sampler(seed=42)                  # or Sampler(): a random seed, kept in s.seed
    s.sample(row, temperature=0.8, top_k=40, top_p=0.95)    -> int (stream 0)
    s.sample_batch(rows, 0.8, 40, 0.95, out=None)            -> int64 [B] (stream b for row b)
    s.sample_n(row, n, ...)        -> int64 [n], == n calls of sample(row, ...)
    s.probs(row, ...)              -> float64 [V], the exact distribution sampled
    s.get_state() / s.set_state(state)                       resume bit-exactly

    rs = RowSampler(V)            # rows with settings and RNG streams of their own (a server's slots)
    rs.sample(rows, temperature[B], top_k[B], top_p[B], active[B], rngs[B, 4], out[B])
    rng_state(seed, stream=0)     -> uint64 [4], the state of stream `stream` of `seed`

Logits: float32 arrays are used in place, without a copy (1-D C-contiguous
rows; for a batch, any [B, V] array whose rows are contiguous).  Any other
floating dtype (float16, float64, ...) or a list of floats is converted to
float32 first (a copy, so slower).  Integer, bool, complex or object data is
a TypeError: those are not logits.

Errors: TypeError for a wrong type or dtype; SamplerError (a ValueError) for
a wrong shape, an empty row, a NaN or +inf logit, a row that is all -inf
(naming the row of a batch), temperature < 0 or not finite, top_p <= 0.
The C side checks the values, so a valid call pays for no Python-level scan.

Randomness: one xoshiro256** stream per row, all derived from the seed
(stream b of seed S is the same on every platform); sample() and row 0 of
sample_batch() share stream 0, so sample_batch on one row equals sample().
A draw with temperature > 0 advances its stream by exactly one step;
temperature 0 (greedy argmax, ties to the lowest id) and errors do not.
get_state() / set_state() save and restore every stream bit-exactly.

A Sampler is not thread-safe: use one per thread (concurrent use of one
Sampler raises RuntimeError rather than corrupting it).
"""

import operator
import os

import numpy as np

cimport numpy as cnp
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

cnp.import_array()


cdef extern from "sampler.h" nogil:
    ctypedef struct chargen_rng:
        uint64_t s[4]

    enum:
        CHARGEN_ERR_SIZE
        CHARGEN_ERR_TEMPERATURE
        CHARGEN_ERR_TOP_P
        CHARGEN_ERR_NAN
        CHARGEN_ERR_POSINF
        CHARGEN_ERR_ALL_MASKED
        CHARGEN_MAX_V

    void chargen_rng_seed_streams(chargen_rng *rngs, size_t count, uint64_t seed,
                                  uint64_t first_stream)
    size_t chargen_scratch_bytes(int V)
    int chargen_sample(const float *logits, int V, double temperature, int top_k,
                       double top_p, chargen_rng *rng, void *scratch)
    int chargen_sample_n(const float *logits, int V, double temperature, int top_k,
                         double top_p, chargen_rng *rng, void *scratch, int64_t n,
                         int64_t *out)
    int chargen_sample_batch(const float *logits, int64_t B, int V, int64_t ld,
                             double temperature, int top_k, double top_p,
                             chargen_rng *rngs, void *scratch, int64_t *out,
                             int64_t *err_row)
    int chargen_sample_rows(const float *logits, int64_t B, int V, int64_t ld,
                            const double *temperature, const int32_t *top_k,
                            const double *top_p, const uint8_t *active,
                            chargen_rng *rngs, void *scratch, int64_t *out,
                            int64_t *err_row)
    void chargen_rng_seed(chargen_rng *rng, uint64_t seed, uint64_t stream)
    int chargen_distribution(const float *logits, int V, double temperature,
                             int top_k, double top_p, void *scratch, double *probs)
    const char *chargen_status_str(int status)


class SamplerError(ValueError):
    """Invalid logits or sampling parameters (a ValueError)."""


STATE_VERSION = 1
MAX_V = CHARGEN_MAX_V


cdef inline bint _is_f32_array(object x):
    return (type(x) is cnp.ndarray
            and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_FLOAT32)


cdef cnp.ndarray _as_f32(object x, str name):
    """x as a float32 ndarray: as is if it is one, else converted (floats only)."""
    cdef cnp.ndarray arr
    if not isinstance(x, cnp.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be an array of floats: {e}") from None
    arr = <cnp.ndarray>x
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array (float32 is used without a copy), "
            f"got dtype {arr.dtype}")
    if cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32:
        arr = arr.astype(np.float32)
    return arr


cdef cnp.ndarray _as_row(object logits):
    """A 1-D, non-empty, C-contiguous float32 array."""
    cdef cnp.ndarray arr = _as_f32(logits, "logits")
    if cnp.PyArray_NDIM(arr) != 1:
        raise SamplerError(
            f"logits must be 1-D (one row of V logits), got shape {(<object>arr).shape}; "
            "use sample_batch for [B, V]")
    if cnp.PyArray_DIMS(arr)[0] == 0:
        raise SamplerError("logits row is empty (V = 0)")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        arr = np.ascontiguousarray(arr)
    return arr


cdef cnp.ndarray _as_rows(object logits):
    """A 2-D float32 array whose rows are contiguous (they may be strided)."""
    cdef cnp.ndarray arr = _as_f32(logits, "logits")
    cdef cnp.npy_intp B, V, s0, s1
    if cnp.PyArray_NDIM(arr) != 2:
        raise SamplerError(f"logits must be 2-D [B, V], got shape {(<object>arr).shape}")
    B = cnp.PyArray_DIMS(arr)[0]
    V = cnp.PyArray_DIMS(arr)[1]
    s0 = cnp.PyArray_STRIDES(arr)[0]
    s1 = cnp.PyArray_STRIDES(arr)[1]
    if V == 0:
        raise SamplerError(f"logits rows are empty (V = 0), shape {(<object>arr).shape}")
    if not ((s1 == sizeof(float) or V == 1)
            and (B <= 1 or (s0 % <cnp.npy_intp>sizeof(float) == 0
                            and s0 >= V * <cnp.npy_intp>sizeof(float)))):
        arr = np.ascontiguousarray(arr)
    return arr


cdef inline int _top_k(object top_k, Py_ssize_t V) except -1:
    """top_k for the C side: 0 (no cut) unless 0 < top_k < V.  Any integer (a float
    is a TypeError, not silently truncated), of any size."""
    cdef int overflow = 0
    cdef long long k
    if type(top_k) is not int:
        top_k = operator.index(top_k)
    k = PyLong_AsLongLongAndOverflow(top_k, &overflow)
    if overflow or k <= 0 or k >= V:
        return 0
    return <int>k


cdef object _error(int status, Py_ssize_t row, double temperature, double top_p):
    """The exception for a C status; row >= 0 names the row of a batch."""
    where, has, be = ("logits", "contain", "are") if row < 0 else (f"logits row {row}", "contains", "is")
    if status == CHARGEN_ERR_TEMPERATURE:
        return SamplerError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature!r}")
    if status == CHARGEN_ERR_TOP_P:
        return SamplerError(f"top_p must be > 0 (1 or more = no nucleus cut), got {top_p!r}")
    if status == CHARGEN_ERR_NAN:
        return SamplerError(f"{where} {has} NaN")
    if status == CHARGEN_ERR_POSINF:
        return SamplerError(f"{where} {has} +inf")
    if status == CHARGEN_ERR_ALL_MASKED:
        return SamplerError(f"{where} {be} all -inf: every symbol is masked, nothing to sample")
    if status == CHARGEN_ERR_SIZE:
        return SamplerError(f"V out of range (1 .. {CHARGEN_MAX_V})")
    return SamplerError(f"sampler error {status}: {chargen_status_str(status).decode()}")


cdef class Sampler:
    """Samples symbol ids from logits with the C sampler; owns the RNG streams.

    Sampler(seed=None): seed is an int in [0, 2**64); None draws one from
    os.urandom (read it back from .seed to reproduce the run).
    """

    cdef chargen_rng *_rngs
    cdef Py_ssize_t _n_streams
    cdef Py_ssize_t _cap_streams
    cdef void *_scratch
    cdef Py_ssize_t _scratch_v
    cdef uint64_t _seed
    cdef bint _busy

    def __cinit__(self, seed=None):
        self._rngs = NULL
        self._scratch = NULL
        self._n_streams = 0
        self._cap_streams = 0
        self._scratch_v = 0
        self._busy = False
        self._seed = _check_seed(seed)
        self._ensure_streams(1)
        self._ensure_scratch(256)

    def __dealloc__(self):
        free(self._rngs)
        free(self._scratch)

    # ------------------------------------------------------------ storage
    cdef int _ensure_streams(self, Py_ssize_t n) except -1:
        """Streams 0..n-1 exist (new ones seeded from the seed, in O(1) each)."""
        cdef Py_ssize_t cap
        cdef chargen_rng *p
        if n <= self._n_streams:
            return 0
        if n > self._cap_streams:
            cap = max(n, 2 * self._cap_streams, 8)
            p = <chargen_rng *>realloc(self._rngs, cap * sizeof(chargen_rng))
            if p == NULL:
                raise MemoryError()
            self._rngs = p
            self._cap_streams = cap
        chargen_rng_seed_streams(self._rngs + self._n_streams, n - self._n_streams,
                                 self._seed, self._n_streams)
        self._n_streams = n
        return 0

    cdef int _ensure_scratch(self, Py_ssize_t V) except -1:
        cdef size_t nbytes
        cdef void *p
        if V <= self._scratch_v:
            return 0
        if V > CHARGEN_MAX_V:
            raise SamplerError(f"V = {V} is too large (at most {CHARGEN_MAX_V})")
        nbytes = chargen_scratch_bytes(<int>V)
        p = malloc(nbytes)  # malloc is 16-byte aligned; the C side needs 8
        if p == NULL:
            raise MemoryError()
        free(self._scratch)
        self._scratch = p
        self._scratch_v = V
        return 0

    cdef inline int _enter(self) except -1:
        if self._busy:
            raise RuntimeError("this Sampler is in use by another thread; use one Sampler per thread")
        self._busy = True
        return 0

    cdef int _claim(self, Py_ssize_t V, object top_k, Py_ssize_t streams) except -1:
        """Take the sampler for one call (as _enter) with scratch for V symbols and
        `streams` RNG streams; returns top_k for the C side. Releases it again on error."""
        self._enter()
        try:
            self._ensure_scratch(V)
            self._ensure_streams(streams)
            return _top_k(top_k, V)
        except BaseException:
            self._busy = False
            raise

    # ------------------------------------------------------------ sampling
    def sample(self, logits, double temperature=1.0, top_k=0, double top_p=1.0):
        """One id from one row of V logits (stream 0).

        temperature 0 is greedy (argmax, ties to the lowest id); top_k <= 0
        or >= V is no top-k cut; top_p >= 1 is no nucleus cut; -inf logits
        are never drawn.
        """
        cdef cnp.ndarray arr
        cdef const float *x
        cdef int V, k, r
        if (_is_f32_array(logits) and cnp.PyArray_NDIM(<cnp.ndarray>logits) == 1
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>logits)
                and 0 < cnp.PyArray_DIMS(<cnp.ndarray>logits)[0] <= self._scratch_v):
            arr = <cnp.ndarray>logits  # the fast path: no conversion, no allocation
            V = <int>cnp.PyArray_DIMS(arr)[0]
            k = _top_k(top_k, V)
            self._enter()
        else:
            arr = _as_row(logits)
            k = self._claim(cnp.PyArray_DIMS(arr)[0], top_k, 1)  # checks V's size before the cast
            V = <int>cnp.PyArray_DIMS(arr)[0]
        x = <const float *>cnp.PyArray_DATA(arr)
        with nogil:
            r = chargen_sample(x, V, temperature, k, top_p, self._rngs, self._scratch)
        self._busy = False
        if r < 0:
            raise _error(r, -1, temperature, top_p)
        return r

    def sample_batch(self, logits, double temperature=1.0, top_k=0,
                     double top_p=1.0, out=None):
        """One id per row of a [B, V] array; row b uses stream b.  -> int64 [B].

        out: an optional int64 array of B ids to fill (and return).  On error
        (SamplerError naming the row) no stream advances.
        """
        cdef cnp.ndarray arr, res
        cdef cnp.npy_intp B, ld
        cdef cnp.npy_intp dims[1]
        cdef int V, k, r
        cdef int64_t err_row = -1
        cdef const float *x
        cdef int64_t *o
        if (_is_f32_array(logits) and cnp.PyArray_NDIM(<cnp.ndarray>logits) == 2
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>logits)
                and 0 < cnp.PyArray_DIMS(<cnp.ndarray>logits)[1] <= self._scratch_v):
            arr = <cnp.ndarray>logits  # the fast path
        else:
            arr = _as_rows(logits)
        B = cnp.PyArray_DIMS(arr)[0]
        if out is None:
            dims[0] = B
            res = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        else:
            res = _check_out(out, B)
        if B == 0:
            return res
        k = self._claim(cnp.PyArray_DIMS(arr)[1], top_k, B)  # checks V's size before the cast
        V = <int>cnp.PyArray_DIMS(arr)[1]
        ld = cnp.PyArray_STRIDES(arr)[0] // <cnp.npy_intp>sizeof(float) if B > 1 else V
        x = <const float *>cnp.PyArray_DATA(arr)
        o = <int64_t *>cnp.PyArray_DATA(res)
        with nogil:
            r = chargen_sample_batch(x, B, V, ld, temperature, k, top_p, self._rngs,
                                     self._scratch, o, &err_row)
        self._busy = False
        if r < 0:
            raise _error(r, err_row, temperature, top_p)
        return res

    def sample_n(self, logits, Py_ssize_t n, double temperature=1.0, top_k=0,
                 double top_p=1.0, out=None):
        """n ids drawn from one row with stream 0 -> int64 [n].

        Exactly [sample(logits, ...) for _ in range(n)], but the distribution
        is prepared once and each draw is a binary search: fast many draws.
        """
        cdef cnp.ndarray arr = _as_row(logits)
        cdef cnp.ndarray res
        cdef cnp.npy_intp dims[1]
        cdef int V, k, r
        if n < 0:
            raise SamplerError(f"n must be >= 0, got {n}")
        if out is None:
            dims[0] = n
            res = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        else:
            res = _check_out(out, n)
        k = self._claim(cnp.PyArray_DIMS(arr)[0], top_k, 1)  # checks V's size before the cast
        V = <int>cnp.PyArray_DIMS(arr)[0]
        with nogil:
            r = chargen_sample_n(<const float *>cnp.PyArray_DATA(arr), V, temperature, k,
                                 top_p, self._rngs, self._scratch, n,
                                 <int64_t *>cnp.PyArray_DATA(res))
        self._busy = False
        if r < 0:
            raise _error(r, -1, temperature, top_p)
        return res

    def probs(self, logits, double temperature=1.0, top_k=0, double top_p=1.0):
        """The exact distribution sample() draws from -> float64 [V].

        Renormalised over the ids the cuts keep, 0 elsewhere; one-hot at the
        argmax for temperature 0.  Uses no randomness.
        """
        cdef cnp.ndarray arr = _as_row(logits)
        cdef cnp.ndarray res
        cdef cnp.npy_intp dims[1]
        cdef int V, k, r
        dims[0] = cnp.PyArray_DIMS(arr)[0]
        res = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
        k = self._claim(cnp.PyArray_DIMS(arr)[0], top_k, 1)  # checks V's size before the cast
        V = <int>cnp.PyArray_DIMS(arr)[0]
        r = chargen_distribution(<const float *>cnp.PyArray_DATA(arr), V, temperature,
                                 k, top_p, self._scratch, <double *>cnp.PyArray_DATA(res))
        self._busy = False
        if r < 0:
            raise _error(r, -1, temperature, top_p)
        return res

    # ------------------------------------------------------------ state
    @property
    def seed(self):
        """The seed (an int in [0, 2**64)) every stream derives from."""
        return self._seed

    @property
    def n_streams(self):
        """How many streams have been used so far (streams are made on demand)."""
        return self._n_streams

    def get_state(self):
        """(version, seed, streams): a plain picklable tuple.

        streams is bytes, 32 per stream (four little-endian uint64 each).
        set_state(get_state()) resumes every stream bit-exactly.
        """
        cdef Py_ssize_t i, j, b
        cdef uint64_t w
        cdef bytearray buf
        cdef unsigned char[::1] mv
        if self._busy:
            raise RuntimeError("this Sampler is in use by another thread")
        buf = bytearray(32 * self._n_streams)
        mv = buf
        for i in range(self._n_streams):
            for j in range(4):
                w = self._rngs[i].s[j]
                for b in range(8):
                    mv[32 * i + 8 * j + b] = <unsigned char>((w >> (8 * b)) & 0xFF)
        return (STATE_VERSION, int(self._seed), bytes(buf))

    def set_state(self, state):
        """Restore what get_state() returned (the seed and every stream)."""
        cdef Py_ssize_t i, j, b, n
        cdef uint64_t w
        cdef const unsigned char[::1] mv
        cdef chargen_rng *p
        try:
            version, seed, streams = state
        except (TypeError, ValueError):
            raise ValueError("state must be the (version, seed, streams) tuple from get_state()") from None
        if version != STATE_VERSION:
            raise ValueError(f"unsupported sampler state version {version!r} (expected {STATE_VERSION})")
        seed_value = _check_seed(seed)
        if not isinstance(streams, (bytes, bytearray)) or len(streams) == 0 or len(streams) % 32:
            raise ValueError("state streams must be non-empty bytes, 32 per stream")
        mv = bytes(streams)
        n = len(streams) // 32
        for i in range(n):
            if streams[32 * i: 32 * i + 32].count(0) == 32:
                raise ValueError(f"state stream {i} is all zero (not a valid xoshiro256** state)")
        if self._busy:
            raise RuntimeError("this Sampler is in use by another thread")
        if n > self._cap_streams:
            p = <chargen_rng *>realloc(self._rngs, n * sizeof(chargen_rng))
            if p == NULL:
                raise MemoryError()
            self._rngs = p
            self._cap_streams = n
        for i in range(n):
            for j in range(4):
                w = 0
                for b in range(8):
                    w |= (<uint64_t>mv[32 * i + 8 * j + b]) << (8 * b)
                self._rngs[i].s[j] = w
        self._n_streams = n
        self._seed = seed_value

    def __reduce__(self):
        return (Sampler, (int(self._seed),), self.get_state())

    def __setstate__(self, state):
        self.set_state(state)

    def __repr__(self):
        return f"Sampler(seed={int(self._seed)})"


cdef uint64_t _check_seed(object seed) except? 0:
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    try:
        value = seed.__index__()
    except AttributeError:
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}") from None
    if not 0 <= value < 2 ** 64:
        raise ValueError(f"seed must be in [0, 2**64), got {value}")
    return value


cdef cnp.ndarray _check_out(object out, cnp.npy_intp n):
    if type(out) is not cnp.ndarray or cnp.PyArray_TYPE(<cnp.ndarray>out) != cnp.NPY_INT64:
        raise TypeError("out must be a numpy int64 array")
    if (cnp.PyArray_NDIM(<cnp.ndarray>out) != 1 or cnp.PyArray_DIMS(<cnp.ndarray>out)[0] != n
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>out)
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)):
        raise SamplerError(f"out must be a writeable, contiguous 1-D int64 array of length {n}")
    return <cnp.ndarray>out


def rng_state(seed, stream=0):
    """The xoshiro256** state of stream `stream` of `seed` as uint64 [4]: what a
    Sampler(seed) draws row `stream` of a batch with (stream 0: sample())."""
    cdef chargen_rng rng
    cdef uint64_t value = _check_seed(seed)
    cdef uint64_t st = _check_seed(stream)
    chargen_rng_seed(&rng, value, st)
    return np.array([rng.s[0], rng.s[1], rng.s[2], rng.s[3]], np.uint64)


cdef cnp.ndarray _row_array(object x, int typenum, str dtype, cnp.npy_intp B, str name, bint writeable):
    if (type(x) is not cnp.ndarray or cnp.PyArray_TYPE(<cnp.ndarray>x) != typenum
            or cnp.PyArray_NDIM(<cnp.ndarray>x) != 1 or cnp.PyArray_DIMS(<cnp.ndarray>x)[0] < B
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
            or (writeable and not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>x))):
        raise TypeError(f"{name} must be a contiguous 1-D {dtype} array of at least {B} entries")
    return <cnp.ndarray>x


cdef class RowSampler:
    """Samples the rows of a batch whose streams each have their own settings and
    RNG state, owned by the caller (a server's slots). Row b is drawn exactly as
    Sampler.sample would draw it with that row's settings and stream, whatever the
    other rows are. Not thread-safe: one per thread."""

    cdef void *_scratch
    cdef int _V

    def __cinit__(self, Py_ssize_t V):
        if not 0 < V <= CHARGEN_MAX_V:
            raise SamplerError(f"V out of range (1 .. {CHARGEN_MAX_V})")
        self._V = <int>V
        self._scratch = malloc(chargen_scratch_bytes(self._V))
        if self._scratch == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self._scratch)

    def sample(self, logits, temperature, top_k, top_p, active, rngs, out):
        """Draw rows b < B of logits (float32 [B, V], C-contiguous) where active[b] (uint8)
        is non-zero, with temperature[b] (float64), top_k[b] (int32; <= 0 or >= V: no
        cut), top_p[b] (float64) and the stream rngs[b] (uint64 [>= B, 4], advanced in
        place), into out[b] (int64). The settings arrays may be longer than B. Rows left
        inactive keep their out entry and stream. On error (SamplerError naming the row)
        no stream advances."""
        cdef cnp.ndarray x, t, k, p, a, r, o
        cdef cnp.npy_intp B
        cdef int rc
        cdef int64_t err_row = -1
        if not (type(logits) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>logits) == cnp.NPY_FLOAT32
                and cnp.PyArray_NDIM(<cnp.ndarray>logits) == 2 and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>logits)
                and cnp.PyArray_DIMS(<cnp.ndarray>logits)[1] == self._V):
            raise TypeError(f"logits must be a C-contiguous float32 [B, {self._V}] array")
        x = <cnp.ndarray>logits
        B = cnp.PyArray_DIMS(x)[0]
        t = _row_array(temperature, cnp.NPY_FLOAT64, "float64", B, "temperature", False)
        k = _row_array(top_k, cnp.NPY_INT32, "int32", B, "top_k", False)
        p = _row_array(top_p, cnp.NPY_FLOAT64, "float64", B, "top_p", False)
        a = _row_array(active, cnp.NPY_UINT8, "uint8", B, "active", False)
        o = _row_array(out, cnp.NPY_INT64, "int64", B, "out", True)
        if not (type(rngs) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>rngs) == cnp.NPY_UINT64
                and cnp.PyArray_NDIM(<cnp.ndarray>rngs) == 2 and cnp.PyArray_DIMS(<cnp.ndarray>rngs)[0] >= B
                and cnp.PyArray_DIMS(<cnp.ndarray>rngs)[1] == 4
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>rngs) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>rngs)):
            raise TypeError(f"rngs must be a writeable C-contiguous uint64 [>= {B}, 4] array")
        r = <cnp.ndarray>rngs
        if B == 0:
            return out
        with nogil:
            rc = chargen_sample_rows(<const float *>cnp.PyArray_DATA(x), B, self._V, self._V,
                                     <const double *>cnp.PyArray_DATA(t), <const int32_t *>cnp.PyArray_DATA(k),
                                     <const double *>cnp.PyArray_DATA(p), <const uint8_t *>cnp.PyArray_DATA(a),
                                     <chargen_rng *>cnp.PyArray_DATA(r), self._scratch,
                                     <int64_t *>cnp.PyArray_DATA(o), &err_row)
        if rc < 0:
            row = int(err_row)
            raise _error(rc, row, float(t[row]) if row >= 0 else 0.0, float(p[row]) if row >= 0 else 1.0)
        return out
