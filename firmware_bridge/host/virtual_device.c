/*
 * A virtual sensor board: plays a microcontroller on a pseudo-terminal, built from the same
 * bridge sources a real board compiles. It replays a recording as READING frames (one or more
 * streams), optionally with noise, dropped readings and reboots, and reads the PREDICTION
 * frames the daemon sends back.
 *
 *   virtual_device [--wait-signal] --recording rec.csv [--streams 4] [--rate 50] [--count 1000] [--noise 0.01]
 *                  [--drop 0.01] [--reboot-every 500] [--seed 1] [--log sent.csv]
 *                  [--predictions got.csv] [--linger 2]
 *
 * --wait-signal (first) holds the boot until SIGUSR1: like a board powered on once the host
 * has opened the port (a host flushes what arrived before it opened).
 * rec.csv holds one reading per line, comma-separated numbers. Stream s replays it from row
 * 97*s. The pty's path is printed on the first line of stdout; point the daemon at it:
 *   edgelstm run --serial /dev/pts/N --out stdout --serial-reply
 * --log writes every reading as "stream,seq,boot,sent,x0,x1,..." (sent = 0 when dropped),
 * --predictions every PREDICTION received as "stream,seq,y0,y1,...".
 */
#define _XOPEN_SOURCE 700   /* posix_openpt, ptsname */
#define _DEFAULT_SOURCE     /* cfmakeraw, usleep */
#include "edgelstm_bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_INPUTS 64
#define MAX_ROWS 200000
#define MAX_STREAMS 256

typedef struct {
    const char *recording, *log_path, *pred_path;
    int streams, wait_signal;
    long count;
    double rate, noise, drop, linger;
    long reboot_every;
    unsigned long seed;
} options;

static volatile sig_atomic_t stopping, host_ready;
static void on_signal(int sig) { (void)sig; stopping = 1; }
static void on_usr1(int sig) { (void)sig; host_ready = 1; }

/* ---- a small deterministic RNG (xorshift64*) ------------------------------------------ */
static unsigned long long rng_state;
static double uniform01(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}
static double gaussian(void)
{
    double u = uniform01(), v = uniform01();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the recording ------------------------------------------------------------------- */
static float rows[MAX_ROWS][MAX_INPUTS];

static long load_csv(const char *path, int *n_inputs)
{
    static char line[8192];
    long n = 0;
    FILE *fh = fopen(path, "r");
    if (!fh) {
        perror(path);
        return -1;
    }
    *n_inputs = 0;
    while (n < MAX_ROWS && fgets(line, sizeof line, fh)) {
        char *p = line, *end;
        int k = 0;
        while (k < MAX_INPUTS) {
            float v = strtof(p, &end);
            if (end == p) break;
            rows[n][k++] = v;
            p = end;
            while (*p == ',' || *p == ' ') p++;
        }
        if (k == 0) continue;                       /* blank line or header */
        if (*n_inputs == 0) *n_inputs = k;
        if (k != *n_inputs) {
            fprintf(stderr, "%s:%ld: %d values, the first row had %d\n", path, n + 1, k, *n_inputs);
            fclose(fh);
            return -1;
        }
        n++;
    }
    fclose(fh);
    return n;
}

/* ---- the link -------------------------------------------------------------------------- */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                usleep(1000);
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct {
    elb_decoder dec;
    uint8_t buf[ELB_DECODER_BUFFER_SIZE];
    FILE *log;
    long predictions, rejected;
} receiver;

/* Reads whatever the host sent, waiting at most `wait_s`. */
static void receive(int fd, receiver *rx, double wait_s)
{
    uint8_t chunk[512];
    struct timeval tv;
    fd_set set;
    ssize_t n, i;
    elb_frame f;
    float y[256];
    FD_ZERO(&set);
    FD_SET(fd, &set);
    tv.tv_sec = (long)wait_s;
    tv.tv_usec = (long)((wait_s - (double)(long)wait_s) * 1e6);
    if (select(fd + 1, &set, NULL, NULL, &tv) <= 0) return;
    n = read(fd, chunk, sizeof chunk);
    for (i = 0; i < n; i++) {
        elb_status st = elb_decoder_feed(&rx->dec, chunk[i], &f);
        size_t m = f.length / 4, k;
        if (st != ELB_FRAME) {
            rx->rejected += st != ELB_NEED_MORE;
            continue;
        }
        if (f.type != ELB_PREDICTION || m > 256 || elb_decode_prediction(&f, y, m) != ELB_OK) continue;
        rx->predictions++;
        if (rx->log) {
            fprintf(rx->log, "%u,%lu", (unsigned)f.stream, (unsigned long)f.seq);
            for (k = 0; k < m; k++) fprintf(rx->log, ",%.9g", (double)y[k]);
            fputc('\n', rx->log);
        }
    }
}

static int parse_args(int argc, char **argv, options *o)
{
    int i;
    memset(o, 0, sizeof *o);
    o->streams = 1;
    o->count = -1;
    o->rate = 50;
    o->seed = 1;
    o->linger = 2;
    for (i = 1; i < argc && !strcmp(argv[i], "--wait-signal"); i++) o->wait_signal = 1;
    for (; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--recording")) o->recording = v;
        else if (!strcmp(k, "--streams")) o->streams = atoi(v);
        else if (!strcmp(k, "--count")) o->count = atol(v);
        else if (!strcmp(k, "--rate")) o->rate = atof(v);
        else if (!strcmp(k, "--noise")) o->noise = atof(v);
        else if (!strcmp(k, "--drop")) o->drop = atof(v);
        else if (!strcmp(k, "--reboot-every")) o->reboot_every = atol(v);
        else if (!strcmp(k, "--seed")) o->seed = strtoul(v, NULL, 10);
        else if (!strcmp(k, "--log")) o->log_path = v;
        else if (!strcmp(k, "--predictions")) o->pred_path = v;
        else if (!strcmp(k, "--linger")) o->linger = atof(v);
        else {
            fprintf(stderr, "unknown option %s\n", k);
            return -1;
        }
    }
    if (i != argc || !o->recording || o->streams < 1 || o->streams > MAX_STREAMS) {
        fprintf(stderr, "usage: virtual_device [--wait-signal] --recording rec.csv [--streams K<=%d] [--rate HZ] [--count N]\n"
                        "       [--noise SIGMA] [--drop P] [--reboot-every N] [--seed S] [--log F]\n"
                        "       [--predictions F] [--linger S]\n", MAX_STREAMS);
        return -1;
    }
    return 0;
}

/* A (re)boot as PROTOCOL.md asks: 0x00 first, then a HELLO per stream. */
static int boot(int fd, const options *o, uint32_t boot_id, int n_inputs)
{
    uint8_t wire[ELB_WIRE_SIZE(6)], zero = 0;
    int s;
    if (write_all(fd, &zero, 1)) return -1;
    for (s = 0; s < o->streams; s++) {
        elb_len_result r = elb_encode_hello(wire, sizeof wire, (uint16_t)s, boot_id, (uint8_t)n_inputs);
        if (r.status != ELB_OK || write_all(fd, wire, r.len)) return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    receiver rx;
    struct termios tio;
    int n_inputs, master, slave, s, k;
    long n_rows, step, sent = 0, dropped = 0, reboots = 0;
    uint32_t boot_id, seq = 0;
    double start;
    FILE *log = NULL;
    uint8_t wire[ELB_WIRE_SIZE(4 + 4 * MAX_INPUTS)];

    if (parse_args(argc, argv, &o)) return 2;
    n_rows = load_csv(o.recording, &n_inputs);
    if (n_rows <= 0) {
        fprintf(stderr, "%s: no readings\n", o.recording);
        return 2;
    }
    if (o.count < 0) o.count = n_rows;
    rng_state = 0x9E3779B97F4A7C15ULL ^ o.seed;
    boot_id = (uint32_t)(o.seed * 1000003UL);

    master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        perror("pty");
        return 1;
    }
    slave = open(ptsname(master), O_RDWR | O_NOCTTY);  /* held so the pty outlives daemon restarts */
    if (slave < 0 || tcgetattr(slave, &tio)) {
        perror("pty slave");
        return 1;
    }
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGUSR1, on_usr1);
    printf("%s\n", ptsname(master));
    fflush(stdout);
    memset(&rx, 0, sizeof rx);
    elb_decoder_init(&rx.dec, rx.buf, sizeof rx.buf);
    if (o.pred_path && !(rx.log = fopen(o.pred_path, "w"))) perror(o.pred_path);
    if (o.log_path && !(log = fopen(o.log_path, "w"))) perror(o.log_path);
    while (o.wait_signal && !host_ready && !stopping) receive(master, &rx, 0.05);
    if (boot(master, &o, boot_id, n_inputs)) return 1;

    start = now_s();
    for (step = 0; step < o.count && !stopping; step++, seq++) {
        double due = start + (o.rate > 0 ? (double)step / o.rate : 0.0);
        while (!stopping && now_s() < due) receive(master, &rx, due - now_s());
        if (o.reboot_every > 0 && step > 0 && step % o.reboot_every == 0) {
            boot_id++;
            seq = 0;
            reboots++;
            if (boot(master, &o, boot_id, n_inputs)) break;
        }
        for (s = 0; s < o.streams; s++) {
            const float *row = rows[(step + 97L * s) % n_rows];
            float x[MAX_INPUTS];
            int drop = o.drop > 0 && uniform01() < o.drop;
            elb_len_result r;
            for (k = 0; k < n_inputs; k++) x[k] = row[k] + (o.noise > 0 ? (float)(o.noise * gaussian()) : 0.0f);
            if (log) {
                fprintf(log, "%d,%lu,%lu,%d", s, (unsigned long)seq, (unsigned long)boot_id, !drop);
                for (k = 0; k < n_inputs; k++) fprintf(log, ",%.9g", (double)x[k]);
                fputc('\n', log);
            }
            if (drop) {
                dropped++;
                continue;
            }
            r = elb_encode_reading(wire, sizeof wire, (uint16_t)s, seq, (uint32_t)(step * 1000 / 50), x,
                                   (size_t)n_inputs);
            if (r.status != ELB_OK || write_all(master, wire, r.len)) {
                fprintf(stderr, "write failed: %s\n", r.status != ELB_OK ? elb_status_name(r.status) : strerror(errno));
                stopping = 1;
                break;
            }
            sent++;
        }
    }
    start = now_s();
    while (!stopping && now_s() - start < o.linger) receive(master, &rx, 0.05);
    if (log) fclose(log);
    if (rx.log) fclose(rx.log);
    fprintf(stderr, "virtual_device: sent %ld readings, dropped %ld, %ld reboots, received %ld predictions, "
                    "%ld bad frames\n", sent, dropped, reboots, rx.predictions, rx.rejected);
    close(slave);
    close(master);
    return 0;
}
