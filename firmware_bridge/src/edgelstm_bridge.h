/*
 * edgelstm_bridge: the board side of the edgelstm serial frame protocol, version 1.
 * The specification is firmware_bridge/PROTOCOL.md; this library and the Python codec are
 * both checked against firmware_bridge/vectors/frames.json.
 *
 * C99, no heap, no variable-length arrays, no stdio. Every buffer is owned by the caller.
 * Functions return an elb_status (0 = ELB_OK) or a result struct carrying one.
 *
 * Compile-time options (define before including, or with -D):
 *   ELB_MAX_PAYLOAD   largest payload this build accepts, bytes (default 1024, the protocol's
 *                     limit). A board that only sends readings and receives predictions can
 *                     lower it to shrink ELB_DECODER_BUFFER_SIZE, e.g. 64.
 *   ELB_CRC_TABLE     1 = table-driven CRC-32 (1 KiB of flash, ~8x faster);
 *                     0 = bitwise (default: no table, fine at serial speeds).
 *
 * Typical use on a board:
 *   uint8_t wire[ELB_WIRE_SIZE(4 + 4 * 3)];
 *   elb_len_result r = elb_encode_reading(wire, sizeof wire, stream, seq, millis(), x, 3);
 *   if (r.status == ELB_OK) Serial.write(wire, r.len);
 *
 *   static uint8_t rx_buf[ELB_DECODER_BUFFER_SIZE];
 *   static elb_decoder dec;  elb_decoder_init(&dec, rx_buf, sizeof rx_buf);
 *   elb_frame f;  if (elb_decoder_feed(&dec, Serial.read(), &f) == ELB_FRAME) { ... }
 */
#ifndef EDGELSTM_BRIDGE_H
#define EDGELSTM_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef ELB_MAX_PAYLOAD
#define ELB_MAX_PAYLOAD 1024
#endif
#ifndef ELB_CRC_TABLE
#define ELB_CRC_TABLE 0
#endif

#define ELB_PROTOCOL_VERSION 1
#define ELB_HEADER_SIZE 10   /* version u8 | type u8 | stream u16 | seq u32 | length u16 */
#define ELB_CRC_SIZE 4
#define ELB_FRAME_SIZE(payload) (ELB_HEADER_SIZE + (payload) + ELB_CRC_SIZE)
/* COBS adds one byte per 254 (rounded up), plus the 0x00 delimiter. */
#define ELB_WIRE_SIZE(payload) (ELB_FRAME_SIZE(payload) + (ELB_FRAME_SIZE(payload) + 253) / 254 + 1)
/* The receive buffer elb_decoder needs: one stuffed frame without its delimiter. */
#define ELB_DECODER_BUFFER_SIZE (ELB_WIRE_SIZE(ELB_MAX_PAYLOAD) - 1)

typedef enum {
    ELB_OK = 0,
    ELB_FRAME,          /* elb_decoder_feed: a valid frame is ready */
    ELB_NEED_MORE,      /* elb_decoder_feed: keep feeding */
    /* A received frame to drop (PROTOCOL.md, "What a receiver does"); counted per kind. */
    ELB_ERR_COBS,       /* not valid COBS */
    ELB_ERR_SHORT,      /* fewer than header + CRC bytes */
    ELB_ERR_CRC,        /* checksum mismatch */
    ELB_ERR_VERSION,    /* another protocol version */
    ELB_ERR_LENGTH,     /* length field disagrees with the frame */
    ELB_ERR_TYPE,       /* unknown message type */
    ELB_ERR_OVERSIZE,   /* more bytes than any frame without a 0x00; skipped to the next 0x00 */
    /* Caller errors. */
    ELB_ERR_BUFFER,     /* the output buffer is too small */
    ELB_ERR_ARGUMENT,   /* payload too large, NULL pointer, wrong payload size for the type */
    ELB_STATUS_COUNT
} elb_status;

typedef enum {
    ELB_READING = 1,     /* board -> host: t_ms u32 | float32 x[n] */
    ELB_PREDICTION = 2,  /* host -> board: float32 y[m]; seq echoes the reading's */
    ELB_RESET = 3,       /* either: forget this stream's state; empty payload */
    ELB_HELLO = 4,       /* board -> host after boot: boot_id u32 | protocol u8 | n_inputs u8 */
    ELB_ERROR = 5        /* either: code u16 | UTF-8 text */
} elb_type;

typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t stream;
    uint32_t seq;
    uint16_t length;          /* payload bytes */
    const uint8_t *payload;   /* points into the caller's buffer; valid until it is reused */
} elb_frame;

typedef struct {
    elb_status status;
    size_t len;               /* bytes written on ELB_OK */
} elb_len_result;

/* Short label of a status, the same as the Python codec's counter labels ("crc", "cobs", ...). */
const char *elb_status_name(elb_status status);

/* CRC-32 (IEEE, as zlib's crc32): pass 0 to start, the previous value to continue. */
uint32_t elb_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* COBS. Encoding writes no delimiter; decoding rejects a 0x00 inside or a code past the end.
 * elb_cobs_decode may decode in place (dst == src). */
elb_len_result elb_cobs_encode(uint8_t *dst, size_t dst_cap, const uint8_t *src, size_t src_len);
elb_len_result elb_cobs_decode(uint8_t *dst, size_t dst_cap, const uint8_t *src, size_t src_len);

/* A whole frame onto the wire: COBS(header | payload | crc) 0x00. Needs
 * ELB_WIRE_SIZE(frame->length) bytes; frame->version is ignored (this library speaks 1). */
elb_len_result elb_frame_encode(uint8_t *wire, size_t wire_cap, const elb_frame *frame);

/* One frame from its stuffed bytes without the delimiter, decoded in place in `buf`;
 * on ELB_OK frame->payload points into buf. */
elb_status elb_frame_decode(elb_frame *frame, uint8_t *buf, size_t len);

/* Byte-at-a-time receiver: feed every byte read from the link. Returns ELB_NEED_MORE,
 * ELB_FRAME (then *frame is valid until the next feed), or the ELB_ERR_* of a dropped frame. */
typedef struct {
    uint8_t *buf;
    size_t cap, len;
    int skipping;                          /* discarding an oversize run up to the next 0x00 */
    uint32_t frames;                       /* valid frames received */
    uint32_t errors[ELB_STATUS_COUNT];     /* dropped frames, by status */
} elb_decoder;

void elb_decoder_init(elb_decoder *dec, uint8_t *buf, size_t cap);
elb_status elb_decoder_feed(elb_decoder *dec, uint8_t byte, elb_frame *frame);
/* After a reconnect: forget a partial frame so it is never glued to new bytes. */
void elb_decoder_reset(elb_decoder *dec);

/* Message helpers (little-endian floats whatever the board's byte order). */
elb_len_result elb_encode_reading(uint8_t *wire, size_t cap, uint16_t stream, uint32_t seq,
                                  uint32_t t_ms, const float *x, size_t n);
elb_len_result elb_encode_hello(uint8_t *wire, size_t cap, uint16_t stream, uint32_t boot_id,
                                uint8_t n_inputs);
elb_len_result elb_encode_reset(uint8_t *wire, size_t cap, uint16_t stream, uint32_t seq);
elb_len_result elb_encode_prediction(uint8_t *wire, size_t cap, uint16_t stream, uint32_t seq,
                                     const float *y, size_t m);
/* y[m] from a PREDICTION frame; ELB_ERR_ARGUMENT if its payload is not m floats. */
elb_status elb_decode_prediction(const elb_frame *frame, float *y, size_t m);
/* t_ms and x[n] from a READING frame; ELB_ERR_ARGUMENT if its payload is not 4 + 4n bytes. */
elb_status elb_decode_reading(const elb_frame *frame, uint32_t *t_ms, float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
