/* Intel AMX's tile instructions in plain C, for tests only (int8_gemm.c built with
 * CHARGEN_X86_EMULATE): the tile configuration, loads, stores, zeroing and TDPBUSD as the Intel
 * SDM defines them (palette 1: eight tiles of up to 16 rows of 64 bytes; the configuration's
 * colsb[16] at byte 16, rows[16] at byte 48), on any CPU. A tile's bytes past its configured rows
 * and columns read as zeros after a load, as on the hardware. */
#ifndef CHARGEN_AMX_EMULATE_H
#define CHARGEN_AMX_EMULATE_H

#include <stdint.h>
#include <string.h>

static __thread struct {
    uint8_t t[8][16][64];
    uint16_t colsb[8];
    uint8_t rows[8];
    int configured;
} amx_emu;

static void _tile_loadconfig(const void *config) {
    const uint8_t *c = (const uint8_t *)config;
    int i;
    memset(&amx_emu, 0, sizeof amx_emu);
    if (c[0] != 1) return; /* palette 0: tiles off */
    for (i = 0; i < 8; i++) {
        memcpy(&amx_emu.colsb[i], c + 16 + 2 * i, 2);
        amx_emu.rows[i] = c[48 + i];
    }
    amx_emu.configured = 1;
}

static void _tile_release(void) { memset(&amx_emu, 0, sizeof amx_emu); }

static void amx_emu_check(int tile) {
    if (!amx_emu.configured || amx_emu.rows[tile] == 0 || amx_emu.colsb[tile] == 0 || amx_emu.rows[tile] > 16 ||
        amx_emu.colsb[tile] > 64)
        __builtin_trap(); /* the hardware raises #UD for an unconfigured tile */
}

static void _tile_zero(int tile) {
    amx_emu_check(tile);
    memset(amx_emu.t[tile], 0, sizeof amx_emu.t[tile]);
}

static void _tile_loadd(int tile, const void *base, long stride) {
    int r;
    amx_emu_check(tile);
    memset(amx_emu.t[tile], 0, sizeof amx_emu.t[tile]);
    for (r = 0; r < amx_emu.rows[tile]; r++)
        memcpy(amx_emu.t[tile][r], (const uint8_t *)base + r * stride, amx_emu.colsb[tile]);
}

static void _tile_stored(int tile, void *base, long stride) {
    int r;
    amx_emu_check(tile);
    for (r = 0; r < amx_emu.rows[tile]; r++) memcpy((uint8_t *)base + r * stride, amx_emu.t[tile][r], amx_emu.colsb[tile]);
}

/* dst (M x N int32) += src1 (M x 4K uint8) . src2 (K x 4N int8, four k of an output per 4 bytes);
 * M = dst's rows = src1's rows, K = src1's colsb / 4 = src2's rows, N = dst's colsb / 4 */
static void _tile_dpbusd(int dst, int src1, int src2) {
    const int M = amx_emu.rows[dst], N = amx_emu.colsb[dst] / 4, K = amx_emu.colsb[src1] / 4;
    int m, n, k, i;
    amx_emu_check(dst), amx_emu_check(src1), amx_emu_check(src2);
    if (amx_emu.rows[src1] != M || amx_emu.rows[src2] != K || amx_emu.colsb[src2] != amx_emu.colsb[dst])
        __builtin_trap(); /* shapes that do not fit: #UD */
    for (m = 0; m < M; m++)
        for (n = 0; n < N; n++) {
            int32_t c;
            memcpy(&c, &amx_emu.t[dst][m][4 * n], 4);
            for (k = 0; k < K; k++)
                for (i = 0; i < 4; i++) c += (int32_t)amx_emu.t[src1][m][4 * k + i] * (int8_t)amx_emu.t[src2][k][4 * n + i];
            memcpy(&amx_emu.t[dst][m][4 * n], &c, 4);
        }
}

#endif /* CHARGEN_AMX_EMULATE_H */
