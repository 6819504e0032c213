/* edgelstm_bridge: see edgelstm_bridge.h and firmware_bridge/PROTOCOL.md. */
#include "edgelstm_bridge.h"

#include <string.h>

/* ---- little-endian fields, whatever the board's byte order ---------------------------- */

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void put_f32(uint8_t *p, float v) { uint32_t u; memcpy(&u, &v, 4); put_u32(p, u); }
static float get_f32(const uint8_t *p) { uint32_t u = get_u32(p); float v; memcpy(&v, &u, 4); return v; }

const char *elb_status_name(elb_status status)
{
    switch (status) {
    case ELB_OK: return "ok";
    case ELB_FRAME: return "frame";
    case ELB_NEED_MORE: return "need_more";
    case ELB_ERR_COBS: return "cobs";
    case ELB_ERR_SHORT: return "short";
    case ELB_ERR_CRC: return "crc";
    case ELB_ERR_VERSION: return "version";
    case ELB_ERR_LENGTH: return "length";
    case ELB_ERR_TYPE: return "type";
    case ELB_ERR_OVERSIZE: return "oversize";
    case ELB_ERR_BUFFER: return "buffer";
    case ELB_ERR_ARGUMENT: return "argument";
    default: return "unknown";
    }
}

/* ---- CRC-32 (IEEE 802.3, reflected 0xEDB88320, as zlib) ------------------------------- */

#if ELB_CRC_TABLE
static const uint32_t crc_table[256] = {
    0x00000000UL, 0x77073096UL, 0xee0e612cUL, 0x990951baUL, 0x076dc419UL, 0x706af48fUL,
    0xe963a535UL, 0x9e6495a3UL, 0x0edb8832UL, 0x79dcb8a4UL, 0xe0d5e91eUL, 0x97d2d988UL,
    0x09b64c2bUL, 0x7eb17cbdUL, 0xe7b82d07UL, 0x90bf1d91UL, 0x1db71064UL, 0x6ab020f2UL,
    0xf3b97148UL, 0x84be41deUL, 0x1adad47dUL, 0x6ddde4ebUL, 0xf4d4b551UL, 0x83d385c7UL,
    0x136c9856UL, 0x646ba8c0UL, 0xfd62f97aUL, 0x8a65c9ecUL, 0x14015c4fUL, 0x63066cd9UL,
    0xfa0f3d63UL, 0x8d080df5UL, 0x3b6e20c8UL, 0x4c69105eUL, 0xd56041e4UL, 0xa2677172UL,
    0x3c03e4d1UL, 0x4b04d447UL, 0xd20d85fdUL, 0xa50ab56bUL, 0x35b5a8faUL, 0x42b2986cUL,
    0xdbbbc9d6UL, 0xacbcf940UL, 0x32d86ce3UL, 0x45df5c75UL, 0xdcd60dcfUL, 0xabd13d59UL,
    0x26d930acUL, 0x51de003aUL, 0xc8d75180UL, 0xbfd06116UL, 0x21b4f4b5UL, 0x56b3c423UL,
    0xcfba9599UL, 0xb8bda50fUL, 0x2802b89eUL, 0x5f058808UL, 0xc60cd9b2UL, 0xb10be924UL,
    0x2f6f7c87UL, 0x58684c11UL, 0xc1611dabUL, 0xb6662d3dUL, 0x76dc4190UL, 0x01db7106UL,
    0x98d220bcUL, 0xefd5102aUL, 0x71b18589UL, 0x06b6b51fUL, 0x9fbfe4a5UL, 0xe8b8d433UL,
    0x7807c9a2UL, 0x0f00f934UL, 0x9609a88eUL, 0xe10e9818UL, 0x7f6a0dbbUL, 0x086d3d2dUL,
    0x91646c97UL, 0xe6635c01UL, 0x6b6b51f4UL, 0x1c6c6162UL, 0x856530d8UL, 0xf262004eUL,
    0x6c0695edUL, 0x1b01a57bUL, 0x8208f4c1UL, 0xf50fc457UL, 0x65b0d9c6UL, 0x12b7e950UL,
    0x8bbeb8eaUL, 0xfcb9887cUL, 0x62dd1ddfUL, 0x15da2d49UL, 0x8cd37cf3UL, 0xfbd44c65UL,
    0x4db26158UL, 0x3ab551ceUL, 0xa3bc0074UL, 0xd4bb30e2UL, 0x4adfa541UL, 0x3dd895d7UL,
    0xa4d1c46dUL, 0xd3d6f4fbUL, 0x4369e96aUL, 0x346ed9fcUL, 0xad678846UL, 0xda60b8d0UL,
    0x44042d73UL, 0x33031de5UL, 0xaa0a4c5fUL, 0xdd0d7cc9UL, 0x5005713cUL, 0x270241aaUL,
    0xbe0b1010UL, 0xc90c2086UL, 0x5768b525UL, 0x206f85b3UL, 0xb966d409UL, 0xce61e49fUL,
    0x5edef90eUL, 0x29d9c998UL, 0xb0d09822UL, 0xc7d7a8b4UL, 0x59b33d17UL, 0x2eb40d81UL,
    0xb7bd5c3bUL, 0xc0ba6cadUL, 0xedb88320UL, 0x9abfb3b6UL, 0x03b6e20cUL, 0x74b1d29aUL,
    0xead54739UL, 0x9dd277afUL, 0x04db2615UL, 0x73dc1683UL, 0xe3630b12UL, 0x94643b84UL,
    0x0d6d6a3eUL, 0x7a6a5aa8UL, 0xe40ecf0bUL, 0x9309ff9dUL, 0x0a00ae27UL, 0x7d079eb1UL,
    0xf00f9344UL, 0x8708a3d2UL, 0x1e01f268UL, 0x6906c2feUL, 0xf762575dUL, 0x806567cbUL,
    0x196c3671UL, 0x6e6b06e7UL, 0xfed41b76UL, 0x89d32be0UL, 0x10da7a5aUL, 0x67dd4accUL,
    0xf9b9df6fUL, 0x8ebeeff9UL, 0x17b7be43UL, 0x60b08ed5UL, 0xd6d6a3e8UL, 0xa1d1937eUL,
    0x38d8c2c4UL, 0x4fdff252UL, 0xd1bb67f1UL, 0xa6bc5767UL, 0x3fb506ddUL, 0x48b2364bUL,
    0xd80d2bdaUL, 0xaf0a1b4cUL, 0x36034af6UL, 0x41047a60UL, 0xdf60efc3UL, 0xa867df55UL,
    0x316e8eefUL, 0x4669be79UL, 0xcb61b38cUL, 0xbc66831aUL, 0x256fd2a0UL, 0x5268e236UL,
    0xcc0c7795UL, 0xbb0b4703UL, 0x220216b9UL, 0x5505262fUL, 0xc5ba3bbeUL, 0xb2bd0b28UL,
    0x2bb45a92UL, 0x5cb36a04UL, 0xc2d7ffa7UL, 0xb5d0cf31UL, 0x2cd99e8bUL, 0x5bdeae1dUL,
    0x9b64c2b0UL, 0xec63f226UL, 0x756aa39cUL, 0x026d930aUL, 0x9c0906a9UL, 0xeb0e363fUL,
    0x72076785UL, 0x05005713UL, 0x95bf4a82UL, 0xe2b87a14UL, 0x7bb12baeUL, 0x0cb61b38UL,
    0x92d28e9bUL, 0xe5d5be0dUL, 0x7cdcefb7UL, 0x0bdbdf21UL, 0x86d3d2d4UL, 0xf1d4e242UL,
    0x68ddb3f8UL, 0x1fda836eUL, 0x81be16cdUL, 0xf6b9265bUL, 0x6fb077e1UL, 0x18b74777UL,
    0x88085ae6UL, 0xff0f6a70UL, 0x66063bcaUL, 0x11010b5cUL, 0x8f659effUL, 0xf862ae69UL,
    0x616bffd3UL, 0x166ccf45UL, 0xa00ae278UL, 0xd70dd2eeUL, 0x4e048354UL, 0x3903b3c2UL,
    0xa7672661UL, 0xd06016f7UL, 0x4969474dUL, 0x3e6e77dbUL, 0xaed16a4aUL, 0xd9d65adcUL,
    0x40df0b66UL, 0x37d83bf0UL, 0xa9bcae53UL, 0xdebb9ec5UL, 0x47b2cf7fUL, 0x30b5ffe9UL,
    0xbdbdf21cUL, 0xcabac28aUL, 0x53b39330UL, 0x24b4a3a6UL, 0xbad03605UL, 0xcdd70693UL,
    0x54de5729UL, 0x23d967bfUL, 0xb3667a2eUL, 0xc4614ab8UL, 0x5d681b02UL, 0x2a6f2b94UL,
    0xb40bbe37UL, 0xc30c8ea1UL, 0x5a05df1bUL, 0x2d02ef8dUL
};
#endif

uint32_t elb_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < len; i++) {
#if ELB_CRC_TABLE
        crc = crc_table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
#else
        int k;
        crc ^= data[i];
        for (k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320UL & (0UL - (crc & 1UL)));
#endif
    }
    return ~crc;
}

/* ---- COBS ------------------------------------------------------------------------------ */

/* Streaming encoder: bytes go straight to the output, so a frame never needs a second
 * buffer. `code_pos` is the slot of the current block's code byte, filled in when it ends. */
typedef struct {
    uint8_t *dst;
    size_t cap, pos, code_pos;
    uint8_t code;        /* 1 + bytes in the current block */
    int after_full;      /* the previous block was a full 254-byte run */
    int overflow;
} cobs_writer;

static void cobs_begin(cobs_writer *w, uint8_t *dst, size_t cap)
{
    w->dst = dst; w->cap = cap; w->code_pos = 0; w->pos = 1; w->code = 1;
    w->after_full = 0; w->overflow = cap < 1;
}

/* The next block's code slot may lie at `cap`: that is only an overflow if it gets used. */
static void cobs_close_block(cobs_writer *w)
{
    if (w->code_pos >= w->cap) { w->overflow = 1; return; }
    w->dst[w->code_pos] = w->code;
    w->code_pos = w->pos++;
    w->code = 1;
}

static void cobs_put(cobs_writer *w, uint8_t byte)
{
    if (w->overflow) return;
    if (byte == 0) {
        w->after_full = 0;
        cobs_close_block(w);
        return;
    }
    if (w->pos >= w->cap) { w->overflow = 1; return; }
    w->dst[w->pos++] = byte;
    w->after_full = 0;
    if (++w->code == 0xFF) {
        cobs_close_block(w);
        w->after_full = 1;
    }
}

static void cobs_put_all(cobs_writer *w, const uint8_t *src, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) cobs_put(w, src[i]);
}

/* Ends the last block; returns the encoded length, 0 on overflow. */
static size_t cobs_end(cobs_writer *w)
{
    if (w->overflow) return 0;
    if (w->code == 1 && w->after_full) return w->code_pos;   /* canonical: no empty final block */
    if (w->code_pos >= w->cap) return 0;
    w->dst[w->code_pos] = w->code;
    return w->pos;
}

elb_len_result elb_cobs_encode(uint8_t *dst, size_t dst_cap, const uint8_t *src, size_t src_len)
{
    elb_len_result r = {ELB_ERR_ARGUMENT, 0};
    cobs_writer w;
    if (dst == NULL || (src == NULL && src_len > 0)) return r;
    cobs_begin(&w, dst, dst_cap);
    cobs_put_all(&w, src, src_len);
    r.len = cobs_end(&w);
    r.status = r.len ? ELB_OK : ELB_ERR_BUFFER;
    return r;
}

elb_len_result elb_cobs_decode(uint8_t *dst, size_t dst_cap, const uint8_t *src, size_t src_len)
{
    elb_len_result r = {ELB_ERR_ARGUMENT, 0};
    size_t i = 0, out = 0;
    if (dst == NULL || (src == NULL && src_len > 0)) return r;
    while (i < src_len) {
        size_t code = src[i], end = i + src[i], j;
        if (code == 0 || end > src_len) { r.status = ELB_ERR_COBS; return r; }
        for (j = i + 1; j < end; j++) {          /* out <= j: safe when dst == src */
            if (src[j] == 0) { r.status = ELB_ERR_COBS; return r; }
            if (out >= dst_cap) { r.status = ELB_ERR_BUFFER; return r; }
            dst[out++] = src[j];
        }
        if (code != 0xFF && end < src_len) {
            if (out >= dst_cap) { r.status = ELB_ERR_BUFFER; return r; }
            dst[out++] = 0;
        }
        i = end;
    }
    r.status = ELB_OK;
    r.len = out;
    return r;
}

/* ---- frames ---------------------------------------------------------------------------- */

/* A frame written field by field through the COBS writer, its CRC accumulated on the way. */
typedef struct {
    cobs_writer cobs;
    uint32_t crc;
} frame_writer;

static void fw_bytes(frame_writer *fw, const uint8_t *p, size_t n)
{
    fw->crc = elb_crc32(fw->crc, p, n);
    cobs_put_all(&fw->cobs, p, n);
}

static void fw_u32(frame_writer *fw, uint32_t v) { uint8_t b[4]; put_u32(b, v); fw_bytes(fw, b, 4); }
static void fw_f32(frame_writer *fw, float v) { uint8_t b[4]; put_f32(b, v); fw_bytes(fw, b, 4); }

static elb_status fw_begin(frame_writer *fw, uint8_t *wire, size_t cap, uint8_t type,
                           uint16_t stream, uint32_t seq, size_t length)
{
    uint8_t head[ELB_HEADER_SIZE];
    if (wire == NULL || length > ELB_MAX_PAYLOAD) return ELB_ERR_ARGUMENT;
    if (cap < ELB_WIRE_SIZE(length)) return ELB_ERR_BUFFER;
    head[0] = ELB_PROTOCOL_VERSION;
    head[1] = type;
    put_u16(head + 2, stream);
    put_u32(head + 4, seq);
    put_u16(head + 8, (uint16_t)length);
    fw->crc = 0;
    cobs_begin(&fw->cobs, wire, cap - 1);            /* keep room for the delimiter */
    fw_bytes(fw, head, sizeof head);
    return ELB_OK;
}

static elb_len_result fw_end(frame_writer *fw)
{
    elb_len_result r = {ELB_ERR_BUFFER, 0};
    uint8_t crc[ELB_CRC_SIZE];
    put_u32(crc, fw->crc);
    cobs_put_all(&fw->cobs, crc, sizeof crc);
    r.len = cobs_end(&fw->cobs);
    if (r.len == 0) return r;
    fw->cobs.dst[r.len++] = 0;
    r.status = ELB_OK;
    return r;
}

elb_len_result elb_frame_encode(uint8_t *wire, size_t wire_cap, const elb_frame *frame)
{
    elb_len_result r = {ELB_ERR_ARGUMENT, 0};
    frame_writer fw;
    if (frame == NULL || (frame->payload == NULL && frame->length > 0)) return r;
    r.status = fw_begin(&fw, wire, wire_cap, frame->type, frame->stream, frame->seq, frame->length);
    if (r.status != ELB_OK) return r;
    fw_bytes(&fw, frame->payload, frame->length);
    return fw_end(&fw);
}

elb_status elb_frame_decode(elb_frame *frame, uint8_t *buf, size_t len)
{
    elb_len_result raw;
    size_t body;
    if (frame == NULL || (buf == NULL && len > 0)) return ELB_ERR_ARGUMENT;
    if (len > ELB_DECODER_BUFFER_SIZE) return ELB_ERR_OVERSIZE;
    raw = elb_cobs_decode(buf, len, buf, len);
    if (raw.status != ELB_OK) return ELB_ERR_COBS;
    if (raw.len < ELB_HEADER_SIZE + ELB_CRC_SIZE) return ELB_ERR_SHORT;
    body = raw.len - ELB_CRC_SIZE;
    if (elb_crc32(0, buf, body) != get_u32(buf + body)) return ELB_ERR_CRC;
    if (buf[0] != ELB_PROTOCOL_VERSION) return ELB_ERR_VERSION;
    if (get_u16(buf + 8) != body - ELB_HEADER_SIZE) return ELB_ERR_LENGTH;
    if (buf[1] < ELB_READING || buf[1] > ELB_ERROR) return ELB_ERR_TYPE;
    frame->version = buf[0];
    frame->type = buf[1];
    frame->stream = get_u16(buf + 2);
    frame->seq = get_u32(buf + 4);
    frame->length = get_u16(buf + 8);
    frame->payload = buf + ELB_HEADER_SIZE;
    return ELB_OK;
}

/* ---- the byte-at-a-time receiver --------------------------------------------------------- */

void elb_decoder_init(elb_decoder *dec, uint8_t *buf, size_t cap)
{
    memset(dec, 0, sizeof *dec);
    dec->buf = buf;
    dec->cap = cap < ELB_DECODER_BUFFER_SIZE ? cap : ELB_DECODER_BUFFER_SIZE;
}

void elb_decoder_reset(elb_decoder *dec)
{
    dec->len = 0;
    dec->skipping = 0;
}

elb_status elb_decoder_feed(elb_decoder *dec, uint8_t byte, elb_frame *frame)
{
    elb_status st;
    if (byte != 0) {
        if (dec->skipping) return ELB_NEED_MORE;
        if (dec->len >= dec->cap) {              /* longer than any frame: skip to the next 0x00 */
            dec->len = 0;
            dec->skipping = 1;
            dec->errors[ELB_ERR_OVERSIZE]++;
            return ELB_ERR_OVERSIZE;
        }
        dec->buf[dec->len++] = byte;
        return ELB_NEED_MORE;
    }
    if (dec->skipping || dec->len == 0) {        /* end of a skipped run, or an idle delimiter */
        dec->skipping = 0;
        return ELB_NEED_MORE;
    }
    st = elb_frame_decode(frame, dec->buf, dec->len);
    dec->len = 0;
    if (st == ELB_OK) {
        dec->frames++;
        return ELB_FRAME;
    }
    dec->errors[st]++;
    return st;
}

/* ---- messages ------------------------------------------------------------------------------ */

elb_len_result elb_encode_reading(uint8_t *wire, size_t cap, uint16_t stream, uint32_t seq,
                                  uint32_t t_ms, const float *x, size_t n)
{
    elb_len_result r = {ELB_ERR_ARGUMENT, 0};
    frame_writer fw;
    size_t i;
    if (x == NULL && n > 0) return r;
    r.status = fw_begin(&fw, wire, cap, ELB_READING, stream, seq, 4 + 4 * n);
    if (r.status != ELB_OK) return r;
    fw_u32(&fw, t_ms);
    for (i = 0; i < n; i++) fw_f32(&fw, x[i]);
    return fw_end(&fw);
}

elb_len_result elb_encode_prediction(uint8_t *wire, size_t cap, uint16_t stream, uint32_t seq,
                                     const float *y, size_t m)
{
    elb_len_result r = {ELB_ERR_ARGUMENT, 0};
    frame_writer fw;
    size_t i;
    if (y == NULL && m > 0) return r;
    r.status = fw_begin(&fw, wire, cap, ELB_PREDICTION, stream, seq, 4 * m);
    if (r.status != ELB_OK) return r;
    for (i = 0; i < m; i++) fw_f32(&fw, y[i]);
    return fw_end(&fw);
}

elb_len_result elb_encode_hello(uint8_t *wire, size_t cap, uint16_t stream, uint32_t boot_id,
                                uint8_t n_inputs)
{
    elb_len_result r;
    frame_writer fw;
    uint8_t tail[2];
    r.len = 0;
    r.status = fw_begin(&fw, wire, cap, ELB_HELLO, stream, 0, 6);
    if (r.status != ELB_OK) return r;
    fw_u32(&fw, boot_id);
    tail[0] = ELB_PROTOCOL_VERSION;
    tail[1] = n_inputs;
    fw_bytes(&fw, tail, 2);
    return fw_end(&fw);
}

elb_len_result elb_encode_reset(uint8_t *wire, size_t cap, uint16_t stream, uint32_t seq)
{
    elb_len_result r;
    frame_writer fw;
    r.len = 0;
    r.status = fw_begin(&fw, wire, cap, ELB_RESET, stream, seq, 0);
    if (r.status != ELB_OK) return r;
    return fw_end(&fw);
}

elb_status elb_decode_prediction(const elb_frame *frame, float *y, size_t m)
{
    size_t i;
    if (frame == NULL || y == NULL || frame->type != ELB_PREDICTION || frame->length != 4 * m)
        return ELB_ERR_ARGUMENT;
    for (i = 0; i < m; i++) y[i] = get_f32(frame->payload + 4 * i);
    return ELB_OK;
}

elb_status elb_decode_reading(const elb_frame *frame, uint32_t *t_ms, float *x, size_t n)
{
    size_t i;
    if (frame == NULL || t_ms == NULL || x == NULL || frame->type != ELB_READING ||
        frame->length != 4 + 4 * n)
        return ELB_ERR_ARGUMENT;
    *t_ms = get_u32(frame->payload);
    for (i = 0; i < n; i++) x[i] = get_f32(frame->payload + 4 + 4 * i);
    return ELB_OK;
}
