/*
 * The C decoder as a command-line tool, for differential fuzzing against the Python codec
 * (tests/test_firmware_bridge.py). Built with ASan + UBSan by the Makefile.
 *
 *   decode_tool frames FILE   FILE holds records "u32 length (LE) | stuffed bytes"; prints one
 *                             line per record: "ok TYPE STREAM SEQ LENGTH CRC32(payload)" or
 *                             the drop reason ("crc", "cobs", ...)
 *   decode_tool stream FILE   FILE is a raw byte stream fed byte by byte to elb_decoder; prints
 *                             a line per frame as above, then "errors REASON=N ..." at the end
 */
#include "edgelstm_bridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_frame(const elb_frame *f)
{
    printf("ok %u %u %lu %u %08lx\n", (unsigned)f->type, (unsigned)f->stream, (unsigned long)f->seq,
           (unsigned)f->length, (unsigned long)elb_crc32(0, f->payload, f->length));
}

static int frames(FILE *fh)
{
    static uint8_t buf[70000];
    uint8_t head[4];
    elb_frame f;
    while (fread(head, 1, 4, fh) == 4) {
        size_t len = (size_t)head[0] | ((size_t)head[1] << 8) | ((size_t)head[2] << 16) | ((size_t)head[3] << 24);
        elb_status st;
        if (len > sizeof buf || fread(buf, 1, len, fh) != len) {
            fprintf(stderr, "decode_tool: truncated or oversized record\n");
            return 2;
        }
        st = elb_frame_decode(&f, buf, len);
        if (st == ELB_OK) print_frame(&f);
        else printf("%s\n", elb_status_name(st));
    }
    return 0;
}

static int stream(FILE *fh)
{
    static uint8_t rx[ELB_DECODER_BUFFER_SIZE];
    elb_decoder dec;
    elb_frame f;
    int c, s;
    elb_decoder_init(&dec, rx, sizeof rx);
    while ((c = fgetc(fh)) != EOF)
        if (elb_decoder_feed(&dec, (uint8_t)c, &f) == ELB_FRAME) print_frame(&f);
    printf("errors");
    for (s = ELB_ERR_COBS; s <= ELB_ERR_OVERSIZE; s++)
        if (dec.errors[s]) printf(" %s=%lu", elb_status_name((elb_status)s), (unsigned long)dec.errors[s]);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    FILE *fh;
    int rc;
    if (argc != 3 || (strcmp(argv[1], "frames") != 0 && strcmp(argv[1], "stream") != 0)) {
        fprintf(stderr, "usage: decode_tool frames|stream FILE\n");
        return 2;
    }
    fh = fopen(argv[2], "rb");
    if (!fh) {
        perror(argv[2]);
        return 2;
    }
    rc = strcmp(argv[1], "frames") == 0 ? frames(fh) : stream(fh);
    fclose(fh);
    return rc;
}
