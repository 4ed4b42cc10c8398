/* The hash-grid encoding's per-corner work, fused into three loops (ntf_utils/model/_native.py).
 *
 * The PyTorch backend computes the same numbers with dozens of small tensor operations per step;
 * on a CPU their overhead, not the arithmetic, is most of the encoding's time. These loops do each
 * operation in the order, and with the float32 rounding, of the PyTorch expressions they replace,
 * so the results are bitwise the same (built without contraction of a * b + c into one rounding):
 *
 *   corners:     pos = x * scale + 0.5; cell = floor(pos); frac = pos - cell; the weight of corner c
 *                is w_{D-1} * (... * (w_1 * w_0)), w_d = frac_d or 1 - frac_d as bit d of c says; its
 *                row is the dense row-major index modulo the table size (coarse levels) or the xor of
 *                coordinate * prime in uint32, masked to the power-of-two table (hashed levels), plus
 *                the level's offset in the flat table.
 *   interpolate: out[n, l, f] = sum over corners c, in order, of weight * table[row, f].
 *   scatter:     grad[row, f] += weight * grad_out[n, l, f], points in order within each level
 *                (index_add_'s order: the levels' rows are disjoint, so levels may go in any order,
 *                and two threads may take different levels).
 *
 * Each function works on a range (of points, or of levels for the scatter) so that the Python side
 * can run ranges on several threads (ctypes releases the GIL); the ranges write disjoint memory.
 *
 * Plain C with no Python or torch headers: it compiles in well under a second, and the Python side
 * passes tensors' data pointers through ctypes.
 */
#include <math.h>
#include <stdint.h>

void ntf_corners(const float *x, int64_t begin, int64_t end, int dims, int levels, const float *scales,
                 const int32_t *sizes, const int32_t *offsets, const int32_t *strides,
                 const uint32_t *primes, int n_dense, int32_t *rows, float *weights)
{
    const int corners = 1 << dims;
    for (int64_t i = begin; i < end; ++i) {
        const float *xi = x + i * dims;
        for (int l = 0; l < levels; ++l) {
            const int dense = l < n_dense;
            /* corners built axis by axis as PyTorch's _combine_corners does: after axis d the first
               2**(d+1) entries hold every combination of the axes so far, bit d set = upper */
            float w[128];
            uint32_t index[128];
            for (int d = 0; d < dims; ++d) {
                float pos = xi[d] * scales[l];
                pos = pos + 0.5f;
                const float lower = floorf(pos);
                const float frac = pos - lower;
                const uint32_t cell = (uint32_t)(int32_t)lower;
                const uint32_t factor = dense ? (uint32_t)strides[l * dims + d] : primes[d];
                const uint32_t low = cell * factor, high = (cell + 1u) * factor;
                const float w_low = 1.0f - frac;
                if (d == 0) {
                    w[0] = w_low;
                    w[1] = frac;
                    index[0] = low;
                    index[1] = high;
                    continue;
                }
                const int half = 1 << d;
                for (int c = 0; c < half; ++c) {
                    w[half + c] = frac * w[c];
                    w[c] = w_low * w[c];
                    index[half + c] = dense ? index[c] + high : index[c] ^ high;
                    index[c] = dense ? index[c] + low : index[c] ^ low;
                }
            }
            const int64_t base = (i * levels + l) * corners;
            const int32_t size = sizes[l];
            for (int c = 0; c < corners; ++c) {
                int32_t row;
                if (dense && index[c] < (uint32_t)size) {
                    row = (int32_t)index[c]; /* inside the table: the remainder below is the index itself */
                } else if (dense) {
                    row = (int32_t)index[c] % size; /* int32 remainder with the divisor's sign, as torch's % */
                    if (row < 0) {
                        row += size;
                    }
                } else {
                    row = (int32_t)(index[c] & (uint32_t)(size - 1));
                }
                rows[base + c] = row + offsets[l];
                weights[base + c] = w[c];
            }
        }
    }
}

/* How many points ahead the table rows are prefetched: the table is larger than the caches at
   instant-ngp's sizes (2^19 rows per level), and waiting for each row in turn is most of the time. */
#define AHEAD 8

void ntf_interpolate(const float *table, int features, const int32_t *rows, const float *weights,
                     int64_t begin, int64_t end, int levels, int corners, float *out)
{
    for (int64_t p = begin * levels; p < end * levels; ++p) {
        if (p + AHEAD * levels < end * levels) {
            const int32_t *next = rows + (p + AHEAD * levels) * corners;
            for (int c = 0; c < corners; ++c) {
                __builtin_prefetch(table + (int64_t)next[c] * features, 0);
            }
        }
        const int32_t *r = rows + p * corners;
        const float *w = weights + p * corners;
        float *o = out + p * features;
        for (int f = 0; f < features; ++f) {
            float sum = 0.0f;
            for (int c = 0; c < corners; ++c) {
                sum = sum + w[c] * table[(int64_t)r[c] * features + f];
            }
            o[f] = sum;
        }
    }
}

void ntf_scatter(float *grad, int features, const int32_t *rows, const float *weights,
                 const float *grad_out, int64_t n, int levels, int corners, int level_begin, int level_end)
{
    for (int l = level_begin; l < level_end; ++l) {
        for (int64_t i = 0; i < n; ++i) {
            const int64_t p = i * levels + l;
            if (i + AHEAD < n) {
                const int32_t *next = rows + (p + AHEAD * levels) * corners;
                for (int c = 0; c < corners; ++c) {
                    __builtin_prefetch(grad + (int64_t)next[c] * features, 1);
                }
            }
            const int32_t *r = rows + p * corners;
            const float *w = weights + p * corners;
            const float *g = grad_out + p * features;
            for (int c = 0; c < corners; ++c) {
                float *t = grad + (int64_t)r[c] * features;
                for (int f = 0; f < features; ++f) {
                    t[f] = t[f] + w[c] * g[f];
                }
            }
        }
    }
}
