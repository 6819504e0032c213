/*
 * Host tests of the bridge library: the shared vectors (vectors/frames.txt, generated with
 * frames.json by vectors/make_vectors.py) plus the cases a board meets on a real link.
 *
 *   make -C firmware_bridge/tests check      (strict warnings, then ASan + UBSan)
 *   ./test_bridge ../vectors/frames.txt      prints one line per failure, "ok N checks" at the end
 */
#include "edgelstm_bridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failures;

#define CHECK(cond, ...)                                                           \
    do {                                                                           \
        checks++;                                                                  \
        if (!(cond)) {                                                             \
            failures++;                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                   \
        }                                                                          \
    } while (0)

#define MAX_BYTES 4096

/* "-" is no bytes. Returns the length, or -1 for bad hex. */
static long from_hex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    if (strcmp(hex, "-") == 0) return 0;
    while (hex[0] && hex[1]) {
        unsigned v;
        if (n >= cap || sscanf(hex, "%2x", &v) != 1) return -1;
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return hex[0] ? -1 : (long)n;
}

static void check_cobs(const char *dec_hex, const char *enc_hex)
{
    static uint8_t dec[MAX_BYTES], enc[MAX_BYTES], out[MAX_BYTES];
    long nd = from_hex(dec_hex, dec, sizeof dec), ne = from_hex(enc_hex, enc, sizeof enc);
    elb_len_result r;
    CHECK(nd >= 0 && ne > 0, "bad vector line");
    r = elb_cobs_encode(out, sizeof out, dec, (size_t)nd);
    CHECK(r.status == ELB_OK && r.len == (size_t)ne && memcmp(out, enc, (size_t)ne) == 0,
          "encode of %ld bytes: status %s, %zu bytes, want %ld", nd, elb_status_name(r.status), r.len, ne);
    r = elb_cobs_encode(out, (size_t)ne, dec, (size_t)nd);             /* exactly enough room */
    CHECK(r.status == ELB_OK && r.len == (size_t)ne, "encode into %ld bytes: %s", ne, elb_status_name(r.status));
    r = elb_cobs_encode(out, (size_t)ne - 1, dec, (size_t)nd);         /* one byte short */
    CHECK(r.status == ELB_ERR_BUFFER, "encode into %ld bytes: %s", ne - 1, elb_status_name(r.status));
    r = elb_cobs_decode(out, sizeof out, enc, (size_t)ne);
    CHECK(r.status == ELB_OK && r.len == (size_t)nd && memcmp(out, dec, (size_t)nd) == 0,
          "decode: %s, %zu bytes, want %ld", elb_status_name(r.status), r.len, nd);
    memcpy(out, enc, (size_t)ne);                                       /* in place */
    r = elb_cobs_decode(out, (size_t)ne, out, (size_t)ne);
    CHECK(r.status == ELB_OK && r.len == (size_t)nd && memcmp(out, dec, (size_t)nd) == 0, "in-place decode");
}

static void check_frame(const char *line)
{
    static uint8_t payload[MAX_BYTES], wire[MAX_BYTES], out[MAX_BYTES], rx[ELB_DECODER_BUFFER_SIZE];
    char pay_hex[2 * MAX_BYTES + 2], wire_hex[2 * MAX_BYTES + 2];
    unsigned type, stream;
    unsigned long seq;
    long np, nw;
    size_t i;
    elb_frame f, got;
    elb_len_result r;
    elb_decoder dec;
    int frames = 0;

    CHECK(sscanf(line, "frame %u %u %lu %8193s %8193s", &type, &stream, &seq, pay_hex, wire_hex) == 5, "%s", line);
    np = from_hex(pay_hex, payload, sizeof payload);
    nw = from_hex(wire_hex, wire, sizeof wire);
    f.version = ELB_PROTOCOL_VERSION;
    f.type = (uint8_t)type;
    f.stream = (uint16_t)stream;
    f.seq = (uint32_t)seq;
    f.length = (uint16_t)np;
    f.payload = payload;
    r = elb_frame_encode(out, sizeof out, &f);
    CHECK(r.status == ELB_OK && r.len == (size_t)nw && memcmp(out, wire, (size_t)nw) == 0,
          "encode type %u seq %lu: %s, %zu bytes, want %ld", type, seq, elb_status_name(r.status), r.len, nw);
    CHECK(r.len <= ELB_WIRE_SIZE((size_t)np), "wire size bound");

    elb_decoder_init(&dec, rx, sizeof rx);
    for (i = 0; i < (size_t)nw; i++) {
        elb_status st = elb_decoder_feed(&dec, wire[i], &got);
        if (st == ELB_FRAME) frames++;
        CHECK(st == ELB_FRAME || st == ELB_NEED_MORE, "byte %zu: %s", i, elb_status_name(st));
    }
    CHECK(frames == 1, "decoded %d frames", frames);
    CHECK(got.type == f.type && got.stream == f.stream && got.seq == f.seq && got.length == f.length &&
          memcmp(got.payload, payload, (size_t)np) == 0, "decoded fields differ");
}

static void check_corrupt(const char *reason, const char *hex)
{
    static uint8_t buf[MAX_BYTES];
    elb_frame f;
    long n = from_hex(hex, buf, sizeof buf);
    elb_status st = elb_frame_decode(&f, buf, (size_t)n);
    CHECK(strcmp(elb_status_name(st), reason) == 0, "corrupt frame: %s, want %s", elb_status_name(st), reason);
}

static int run_vectors(const char *path)
{
    static char line[4 * MAX_BYTES + 64];
    char kind[16], a[2 * MAX_BYTES + 2], b[2 * MAX_BYTES + 2];
    int n = 0;
    FILE *fh = fopen(path, "r");
    if (!fh) {
        fprintf(stderr, "cannot open %s\n", path);
        return 0;
    }
    while (fgets(line, sizeof line, fh)) {
        if (sscanf(line, "%15s", kind) != 1) continue;
        n++;
        if (strcmp(kind, "cobs") == 0 && sscanf(line, "cobs %8193s %8193s", a, b) == 2) check_cobs(a, b);
        else if (strcmp(kind, "frame") == 0) check_frame(line);
        else if (strcmp(kind, "corrupt") == 0 && sscanf(line, "corrupt %15s %8193s", a, b) == 2) check_corrupt(a, b);
        else CHECK(0, "unknown vector line: %.40s", line);
    }
    fclose(fh);
    return n;
}

/* Readings round-trip; the seq wraps; the decoder resyncs after garbage and oversize runs. */
static void check_link_behaviour(void)
{
    static uint8_t stream_bytes[8192], rx[ELB_DECODER_BUFFER_SIZE];
    const float x[3] = {0.5f, -1.25f, 3.0f};
    float back[3];
    uint32_t t_ms, seqs[4] = {0xFFFFFFFEUL, 0xFFFFFFFFUL, 0, 1};
    size_t len = 0, i;
    int got = 0;
    elb_decoder dec;
    elb_frame f;
    elb_len_result r;

    stream_bytes[len++] = 0;                                    /* a board boots: 0x00 first */
    for (i = 0; i < 300; i++) stream_bytes[len++] = (uint8_t)(1 + i % 200);   /* line noise ... */
    stream_bytes[len++] = 0;                                                  /* ... then a 0x00 */
    for (i = 0; i < 4; i++) {
        r = elb_encode_reading(stream_bytes + len, sizeof stream_bytes - len, 7, seqs[i], 1000 * (uint32_t)i, x, 3);
        CHECK(r.status == ELB_OK, "encode reading: %s", elb_status_name(r.status));
        len += r.len;
    }
    memset(stream_bytes + len, 0x55, 1100);                     /* longer than any frame */
    len += 1100;
    stream_bytes[len++] = 0;
    r = elb_encode_reset(stream_bytes + len, sizeof stream_bytes - len, 7, 2);
    len += r.len;

    elb_decoder_init(&dec, rx, sizeof rx);
    for (i = 0; i < len; i++) {
        if (elb_decoder_feed(&dec, stream_bytes[i], &f) != ELB_FRAME) continue;
        if (f.type == ELB_READING) {
            CHECK(got < 4 && f.seq == seqs[got], "reading %d has seq %lu", got, (unsigned long)f.seq);
            CHECK(elb_decode_reading(&f, &t_ms, back, 3) == ELB_OK && back[1] == -1.25f && t_ms == 1000u * (uint32_t)got,
                  "reading payload");
            CHECK(elb_decode_reading(&f, &t_ms, back, 2) == ELB_ERR_ARGUMENT, "reading of the wrong size accepted");
        } else {
            CHECK(f.type == ELB_RESET && f.length == 0 && got == 4, "reset frame");
        }
        got++;
    }
    CHECK(got == 5 && dec.frames == 5, "frames: %d", got);
    CHECK(dec.errors[ELB_ERR_COBS] + dec.errors[ELB_ERR_CRC] == 1, "the noise is one dropped frame");
    CHECK(dec.errors[ELB_ERR_OVERSIZE] == 1, "oversize: %lu", (unsigned long)dec.errors[ELB_ERR_OVERSIZE]);

    /* A partial frame before a reconnect is never glued to the next frame. */
    r = elb_encode_prediction(stream_bytes, sizeof stream_bytes, 1, 9, x, 3);
    elb_decoder_reset(&dec);
    for (i = 0; i < r.len / 2; i++) elb_decoder_feed(&dec, stream_bytes[i], &f);
    elb_decoder_reset(&dec);
    got = 0;
    for (i = 0; i < r.len; i++) got += elb_decoder_feed(&dec, stream_bytes[i], &f) == ELB_FRAME;
    CHECK(got == 1 && elb_decode_prediction(&f, back, 3) == ELB_OK && back[2] == 3.0f, "after reset");

    /* Caller errors. */
    r = elb_encode_reading(stream_bytes, ELB_WIRE_SIZE(16) - 1, 0, 0, 0, x, 3);
    CHECK(r.status == ELB_ERR_BUFFER, "short buffer: %s", elb_status_name(r.status));
    r = elb_encode_prediction(stream_bytes, sizeof stream_bytes, 0, 0, x, ELB_MAX_PAYLOAD / 4 + 1);
    CHECK(r.status == ELB_ERR_ARGUMENT, "payload too large: %s", elb_status_name(r.status));
    r = elb_encode_hello(stream_bytes, sizeof stream_bytes, 2, 0xDEADBEEFUL, 3);
    CHECK(r.status == ELB_OK && r.len == ELB_WIRE_SIZE(6), "hello: %zu bytes", r.len);
    CHECK(elb_crc32(0, (const uint8_t *)"123456789", 9) == 0xCBF43926UL, "CRC-32 check value");
}

int main(int argc, char **argv)
{
    int lines = run_vectors(argc > 1 ? argv[1] : "../vectors/frames.txt");
    CHECK(lines >= 20, "only %d vector lines read", lines);
    check_link_behaviour();
    if (failures) {
        fprintf(stderr, "%d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("ok %d checks, %d vectors\n", checks, lines);
    return 0;
}
