/* mqtt_load: the load for bench_e2e, and the fastest service it can be compared with, in C:
 * the load generator takes (almost) no CPU from the service under test on a small machine.
 *
 *   mqtt_load load PORT TOPIC_PREFIX RATE SECONDS STREAMS DRAIN_S [SEQ0]
 *   mqtt_load relay PORT TOPIC_PREFIX
 *
 * MQTT v5 over plain sockets to 127.0.0.1:PORT, no library, one thread.
 *
 * load: two connections:
 *   publisher   QoS 1 JSON readings {"seq": SEQ0 + k / STREAMS, "t": <send time>, "x": [...]} on
 *               TOPIC_PREFIX/s<k % STREAMS>/r, paced to RATE per second for SECONDS, never more
 *               unacknowledged than the broker's Receive Maximum;
 *   subscriber  TOPIC_PREFIX/+/p at QoS 1: for each answer {"stream": "s<i>", "seq": n,
 *               "t_in": t, ...} the first one per (stream, seq) is timed: receive time - t_in.
 * After publishing it waits up to DRAIN_S seconds for the missing answers, then prints
 *   sent N received R send_s S drain_s D
 * and one latency in milliseconds per line (first answers only, in arrival order). SEQ0
 * (default 0) lets a second load continue the streams of a first one (bench_e2e's warm-up).
 *
 * relay: the floor for any service on this broker and machine. Subscribes to
 * TOPIC_PREFIX/+/r at QoS 1 and answers each reading on TOPIC_PREFIX/<stream>/p at QoS 1 with
 * an answer of the daemon's shape (y = x), then acknowledges the reading; all that one read
 * brought in is answered in one write. Prints "ready" once subscribed; runs until killed.
 *
 * Build: cc -O2 -std=c99 -o mqtt_load mqtt_load.c   (bench_e2e.py does this itself)
 */
#define _GNU_SOURCE                      /* ppoll: sub-millisecond waits */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RX_CAP (1 << 20)

typedef struct {
    int fd;
    uint8_t rx[RX_CAP];
    size_t rx_len;
} Conn;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void send_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, 0);
        if (k < 0) die("send");
        p += k;
        n -= (size_t)k;
    }
}

/* MQTT variable byte integer; returns bytes written */
static size_t put_varint(uint8_t *p, size_t v) {
    size_t n = 0;
    do {
        uint8_t b = v % 128;
        v /= 128;
        p[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

/* MQTT variable byte integer at p into *value; returns bytes read */
static size_t get_varint(const uint8_t *p, size_t *value) {
    size_t n = 0, mult = 1;
    *value = 0;
    do {
        *value += (size_t)(p[n] & 0x7f) * mult;
        mult *= 128;
    } while (p[n++] & 0x80);
    return n;
}

static size_t put_str(uint8_t *p, const char *s, size_t len) {
    p[0] = (uint8_t)(len >> 8);
    p[1] = (uint8_t)len;
    memcpy(p + 2, s, len);
    return len + 2;
}

/* a packet from its first byte and body: fixed header + body into out; returns length */
static size_t packet(uint8_t *out, uint8_t first, const uint8_t *body, size_t body_len) {
    size_t n = 0;
    out[n++] = first;
    n += put_varint(out + n, body_len);
    memcpy(out + n, body, body_len);
    return n + body_len;
}

/* One complete packet from c->rx, if any: its first byte, body and body length. */
static int next_packet(Conn *c, size_t *consumed, uint8_t *first, const uint8_t **body, size_t *body_len) {
    const uint8_t *p = c->rx + *consumed;
    size_t avail = c->rx_len - *consumed, len = 0, mult = 1, i = 1;
    if (avail < 2) return 0;
    for (;; i++) {
        if (i >= avail) return 0;
        len += (size_t)(p[i] & 0x7f) * mult;
        mult *= 128;
        if (!(p[i] & 0x80)) break;
    }
    if (avail < i + 1 + len) return 0;
    *first = p[0];
    *body = p + i + 1;
    *body_len = len;
    *consumed += i + 1 + len;
    return 1;
}

static void compact(Conn *c, size_t consumed) {
    memmove(c->rx, c->rx + consumed, c->rx_len - consumed);
    c->rx_len -= consumed;
}

static void read_some(Conn *c) {
    if (c->rx_len == RX_CAP) { fprintf(stderr, "mqtt_load: receive buffer full\n"); exit(2); }
    ssize_t k = recv(c->fd, c->rx + c->rx_len, RX_CAP - c->rx_len, 0);
    if (k <= 0) { fprintf(stderr, "mqtt_load: the broker closed the connection\n"); exit(2); }
    c->rx_len += (size_t)k;
}

/* Blocks until one whole packet arrives (used during the handshake only). */
static void wait_packet(Conn *c, uint8_t want, const uint8_t **body, size_t *body_len) {
    for (;;) {
        size_t consumed = 0;
        uint8_t first;
        if (next_packet(c, &consumed, &first, body, body_len)) {
            if ((first & 0xf0) != want) { fprintf(stderr, "mqtt_load: unexpected packet 0x%02x\n", first); exit(2); }
            static uint8_t keep[4096];     /* the handshake's body, copied out before compacting */
            memcpy(keep, *body, *body_len < sizeof keep ? *body_len : sizeof keep);
            *body = keep;
            compact(c, consumed);
            return;
        }
        read_some(c);
    }
}

/* Connects with a clean session and Receive Maximum 65535; returns the broker's Receive Maximum. */
static unsigned mqtt_connect(Conn *c, int port, const char *client_id) {
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->rx_len = 0;
    uint8_t body[512], pkt[600];
    size_t n = put_str(body, "MQTT", 4);
    body[n++] = 5;                       /* protocol level: MQTT v5 */
    body[n++] = 0x02;                    /* clean start */
    body[n++] = 0; body[n++] = 0;        /* keep alive: off */
    body[n++] = 3;                       /* properties: Receive Maximum 65535 */
    body[n++] = 0x21; body[n++] = 0xff; body[n++] = 0xff;
    n += put_str(body + n, client_id, strlen(client_id));
    send_all(c->fd, pkt, packet(pkt, 0x10, body, n));
    const uint8_t *ack;
    size_t ack_len;
    wait_packet(c, 0x20, &ack, &ack_len);
    if (ack_len < 2 || ack[1] != 0) { fprintf(stderr, "mqtt_load: connection refused (0x%02x)\n", ack[1]); exit(2); }
    unsigned receive_max = 65535;
    size_t props_len, i = 2;
    i += get_varint(ack + i, &props_len);
    for (size_t end = i + props_len; i < end && i < ack_len;) {     /* find property 0x21 */
        uint8_t id = ack[i++];
        if (id == 0x21) { receive_max = (unsigned)(ack[i] << 8 | ack[i + 1]); break; }
        if (id == 0x24 || id == 0x25 || id == 0x28 || id == 0x29 || id == 0x2a || id == 0x01 || id == 0x17
            || id == 0x19) i += 1;
        else if (id == 0x13 || id == 0x22 || id == 0x23) i += 2;
        else if (id == 0x11 || id == 0x27 || id == 0x18 || id == 0x02) i += 4;
        else break;                      /* strings and pairs: Receive Maximum is not among the rest */
    }
    return receive_max;
}

static void mqtt_subscribe(Conn *c, const char *filter) {
    uint8_t body[512], pkt[600];
    size_t n = 0;
    body[n++] = 0; body[n++] = 1;        /* packet id */
    body[n++] = 0;                       /* no properties */
    n += put_str(body + n, filter, strlen(filter));
    body[n++] = 1;                       /* QoS 1 */
    send_all(c->fd, pkt, packet(pkt, 0x82, body, n));
    const uint8_t *ack;
    size_t ack_len;
    wait_packet(c, 0x90, &ack, &ack_len);
}

typedef struct {
    const char *topic, *payload;
    size_t topic_len, payload_len;
    int qos;
    uint8_t id[2];                       /* packet id, when qos > 0 */
} Publish;

static Publish parse_publish(uint8_t first, const uint8_t *body, size_t body_len) {
    Publish m = {0};
    m.qos = (first >> 1) & 3;
    m.topic_len = (size_t)(body[0] << 8 | body[1]);
    m.topic = (const char *)body + 2;
    size_t i = 2 + m.topic_len;
    if (m.qos) {
        m.id[0] = body[i];
        m.id[1] = body[i + 1];
        i += 2;
    }
    size_t props_len;
    i += get_varint(body + i, &props_len);
    i += props_len;
    m.payload = (const char *)body + i;
    m.payload_len = body_len - i;
    return m;
}

/* a QoS 1 PUBLISH with no properties into out; returns its length */
static size_t publish_qos1(uint8_t *out, const char *topic, size_t topic_len, uint16_t id, const char *data,
                           size_t data_len) {
    static uint8_t body[1024];
    size_t n = put_str(body, topic, topic_len);
    body[n++] = (uint8_t)(id >> 8);
    body[n++] = (uint8_t)id;
    body[n++] = 0;                       /* no properties */
    memcpy(body + n, data, data_len);
    return packet(out, 0x32, body, n + data_len);
}

static size_t puback(uint8_t *out, const uint8_t id[2]) {
    out[0] = 0x40; out[1] = 2; out[2] = id[0]; out[3] = id[1];
    return 4;
}

/* JSON number after "key": in s (answers are small and flat) */
static double json_number(const char *s, size_t len, const char *key, int *ok) {
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    size_t plen = strlen(pat);
    for (size_t i = 0; i + plen < len; i++) {
        if (memcmp(s + i, pat, plen) == 0) {
            const char *v = s + i + plen;
            while (*v == ' ' || *v == '"' || *v == 's') v++;     /* "stream": "s12" -> 12 */
            *ok = 1;
            return strtod(v, NULL);
        }
    }
    *ok = 0;
    return 0;
}

static int run_load(char **argv) {
    int port = atoi(argv[1]);
    const char *prefix = argv[2];
    double rate = atof(argv[3]), seconds = atof(argv[4]), drain_s = atof(argv[6]);
    long streams = atol(argv[5]), total = (long)(rate * seconds), seq0 = argv[7] ? atol(argv[7]) : 0;
    static Conn pub, sub;
    char id[256], filter[256];
    snprintf(id, sizeof id, "%s-load-pub", prefix);
    unsigned receive_max = mqtt_connect(&pub, port, id);
    snprintf(id, sizeof id, "%s-load-sub", prefix);
    mqtt_connect(&sub, port, id);
    snprintf(filter, sizeof filter, "%s/+/p", prefix);
    mqtt_subscribe(&sub, filter);

    double *latency_ms = malloc((size_t)total * sizeof *latency_ms);
    long *arrival = malloc((size_t)total * sizeof *arrival);
    if (!latency_ms || !arrival) die("malloc");
    for (long k = 0; k < total; k++) latency_ms[k] = NAN;
    long sent = 0, received = 0;
    unsigned inflight = 0;
    uint16_t next_id = 1;
    double t0 = now_s(), send_end = 0, give_up = 0;
    static uint8_t acks[1 << 16];
    struct pollfd fds[2] = {{pub.fd, POLLIN, 0}, {sub.fd, POLLIN, 0}};

    while (received < total) {
        double t = now_s();
        while (sent < total && inflight < receive_max && t >= t0 + (double)sent / rate) {
            char topic[256], json[160];
            uint8_t pkt[1100];
            int tlen = snprintf(topic, sizeof topic, "%s/s%ld/r", prefix, sent % streams);
            int jlen = snprintf(json, sizeof json, "{\"seq\": %ld, \"t\": %.6f, \"x\": [0.1, -0.9, 0.3]}",
                                seq0 + sent / streams, now_s());
            send_all(pub.fd, pkt, publish_qos1(pkt, topic, (size_t)tlen, next_id, json, (size_t)jlen));
            next_id = next_id == 65535 ? 1 : next_id + 1;
            sent++;
            inflight++;
            t = now_s();
        }
        if (sent == total && send_end == 0) {
            send_end = t;
            give_up = t + drain_s;
        }
        if (send_end != 0 && t > give_up) break;
        double wait = sent < total ? t0 + (double)sent / rate - t : give_up - t;
        if (inflight >= receive_max && sent < total) wait = 0.01;
        struct timespec ts = {0, 0};
        if (wait > 0) { ts.tv_sec = (time_t)wait; ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9); }
        if (ppoll(fds, 2, &ts, NULL) < 0) die("ppoll");
        if (fds[0].revents) {                              /* publisher: PUBACKs */
            read_some(&pub);
            size_t consumed = 0, body_len;
            uint8_t first;
            const uint8_t *body;
            while (next_packet(&pub, &consumed, &first, &body, &body_len))
                if ((first & 0xf0) == 0x40 && inflight > 0) inflight--;
            compact(&pub, consumed);
        }
        if (fds[1].revents) {                              /* subscriber: answers */
            read_some(&sub);
            double arrived = now_s();
            size_t consumed = 0, body_len, n_acks = 0;
            uint8_t first;
            const uint8_t *body;
            while (next_packet(&sub, &consumed, &first, &body, &body_len)) {
                if ((first & 0xf0) != 0x30) continue;
                Publish m = parse_publish(first, body, body_len);
                if (m.qos) {                               /* PUBACKs go in one write below */
                    if (n_acks + 4 > sizeof acks) { send_all(sub.fd, acks, n_acks); n_acks = 0; }
                    n_acks += puback(acks + n_acks, m.id);
                }
                const char *json = m.payload;
                size_t jlen = m.payload_len;
                int ok_s, ok_q, ok_t;
                long stream = (long)json_number(json, jlen, "stream", &ok_s);
                long seq = (long)json_number(json, jlen, "seq", &ok_q);
                double t_in = json_number(json, jlen, "t_in", &ok_t);
                long k = (seq - seq0) * streams + stream;
                if (ok_s && ok_q && ok_t && k >= 0 && k < total && isnan(latency_ms[k])) {
                    latency_ms[k] = (arrived - t_in) * 1e3;
                    arrival[received++] = k;
                }
            }
            if (n_acks) send_all(sub.fd, acks, n_acks);
            compact(&sub, consumed);
        }
    }
    if (send_end == 0) send_end = now_s();
    printf("sent %ld received %ld send_s %.6f drain_s %.6f\n", sent, received, send_end - t0, now_s() - send_end);
    for (long r = 0; r < received; r++) printf("%.4f\n", latency_ms[arrival[r]]);
    uint8_t bye[2] = {0xe0, 0};
    send_all(pub.fd, bye, 2);
    send_all(sub.fd, bye, 2);
    close(pub.fd);
    close(sub.fd);
    return 0;
}

static int run_relay(char **argv) {
    int port = atoi(argv[2]);
    const char *prefix = argv[3];
    size_t prefix_len = strlen(prefix);
    static Conn c;
    static uint8_t out[1 << 20];
    char id[256], filter[256];
    snprintf(id, sizeof id, "%s-c-relay", prefix);
    unsigned receive_max = mqtt_connect(&c, port, id);
    snprintf(filter, sizeof filter, "%s/+/r", prefix);
    mqtt_subscribe(&c, filter);
    printf("ready\n");
    fflush(stdout);
    unsigned inflight = 0;
    uint16_t next_id = 1;
    for (;;) {
        read_some(&c);
        size_t consumed = 0, body_len, n_out = 0;
        uint8_t first;
        const uint8_t *body;
        while (next_packet(&c, &consumed, &first, &body, &body_len)) {
            if ((first & 0xf0) == 0x40) {                  /* PUBACK for one of our answers */
                if (inflight > 0) inflight--;
                continue;
            }
            if ((first & 0xf0) != 0x30) continue;
            Publish m = parse_publish(first, body, body_len);
            /* topic PREFIX/<stream>/r */
            if (m.topic_len < prefix_len + 4) continue;
            const char *stream = m.topic + prefix_len + 1;
            size_t stream_len = m.topic_len - prefix_len - 3;
            int ok_q, ok_t;
            long seq = (long)json_number(m.payload, m.payload_len, "seq", &ok_q);
            double t = json_number(m.payload, m.payload_len, "t", &ok_t);
            char topic[256], json[512];
            int tlen = snprintf(topic, sizeof topic, "%s/%.*s/p", prefix, (int)stream_len, stream);
            int jlen = snprintf(json, sizeof json, "{\"stream\":\"%.*s\",\"seq\":%ld,\"t_in\":%.6f,"
                                "\"t_out\":%.6f,\"model\":\"c-relay\",\"y\":[0.1,-0.9,0.3]}",
                                (int)stream_len, stream, seq, t, now_s());
            if (++inflight > receive_max) { fprintf(stderr, "mqtt_load relay: over Receive Maximum\n"); return 2; }
            if (n_out + 1200 > sizeof out) { send_all(c.fd, out, n_out); n_out = 0; }
            n_out += publish_qos1(out + n_out, topic, (size_t)tlen, next_id, json, (size_t)jlen);
            next_id = next_id == 65535 ? 1 : next_id + 1;
            if (m.qos) n_out += puback(out + n_out, m.id);
        }
        if (n_out) send_all(c.fd, out, n_out);
        compact(&c, consumed);
    }
}

int main(int argc, char **argv) {
    if ((argc == 8 || argc == 9) && strcmp(argv[1], "load") == 0) return run_load(argv + 1);
    if (argc == 4 && strcmp(argv[1], "relay") == 0) return run_relay(argv);
    fprintf(stderr, "usage: mqtt_load load PORT TOPIC_PREFIX RATE SECONDS STREAMS DRAIN_S [SEQ0]\n"
                    "       mqtt_load relay PORT TOPIC_PREFIX\n");
    return 2;
}
