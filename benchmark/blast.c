/* blast: a closed-loop order generator in C, for the daemon's peak throughput.
 *
 *   blast HOST PORT CONNECTIONS WINDOW WARMUP_S SECONDS LOGON_HEX...
 *
 * Built and run by benchmark/peak.py.  Each connection sends its Logon frame
 * (given in hex, one per connection, encoded by the caller), waits for
 * LogonAck, then keeps WINDOW orders in flight: a new order for each
 * OrderAccepted or OrderRejected that comes back.  Orders alternate a GTC
 * buy and an IOC sell of 1 lot of symbol 1 at price 10000, so each sell
 * trades with the buy before it and the book stays empty.  Frames are the
 * protocol's (docs/protocol.md): a little-endian u32 length, then a
 * MessagePack array [4, seq, cl_ord_id, symbol, side, price, qty, tif,
 * post_only, stp], with seq and cl_ord_id as uint64 so every frame has the
 * same size.  Answers are only counted, by tag, never decoded further.
 *
 * It prints one JSON object: orders answered during the measured SECONDS
 * after WARMUP_S, rejections, its own CPU seconds over them, the orders
 * answered in the whole run (warm-up included), or the error that stopped it.  Plain POSIX (epoll on Linux): x86-64 and arm64 alike.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ORDER_FRAME 4 + 1 + 1 + 9 + 9 + 1 + 1 + 3 + 1 + 1 + 1 + 1 /* 33 bytes */
#define TAG_LOGON_ACK 32
#define TAG_LOGON_REJECT 33
#define TAG_DISCONNECT 35
#define TAG_REJECT 36
#define TAG_ACCEPTED 40
#define TAG_REJECTED 41
#define RBUF (1 << 20)

typedef struct {
    int fd;
    int logged_on;
    uint64_t seq;        /* last sequence number sent */
    uint64_t next_cl;
    long in_flight;
    unsigned char *rbuf;
    size_t rlen;
    unsigned char *wbuf;
    size_t wlen, woff;
} Conn;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put_be64(unsigned char *p, uint64_t v) {
    for (int k = 7; k >= 0; k--) {
        p[k] = (unsigned char)v;
        v >>= 8;
    }
}

static size_t encode_order(unsigned char *p, uint64_t seq, uint64_t cl) {
    int buy = (cl & 1) == 1;
    unsigned char *b = p + 4;
    size_t n = 0;
    b[n++] = 0x9a;                        /* fixarray of 10 */
    b[n++] = 0x04;                        /* NewOrder */
    b[n++] = 0xcf; put_be64(b + n, seq); n += 8;
    b[n++] = 0xcf; put_be64(b + n, cl); n += 8;
    b[n++] = 0x01;                        /* symbol 1 */
    b[n++] = buy ? 0x01 : 0x02;           /* side */
    b[n++] = 0xcd; b[n++] = 10000 >> 8; b[n++] = 10000 & 0xff; /* price 10000 */
    b[n++] = 0x01;                        /* qty 1 */
    b[n++] = buy ? 0x00 : 0x01;           /* GTC buy, IOC sell */
    b[n++] = 0xc2;                        /* post_only false */
    b[n++] = 0x00;                        /* stp NONE */
    p[0] = (unsigned char)n; p[1] = 0; p[2] = 0; p[3] = 0;
    return n + 4;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static void fail(const char *what) {
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    exit(1);
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: blast HOST PORT CONNECTIONS WINDOW WARMUP_S SECONDS LOGON_HEX...\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]);
    long window = atol(argv[4]);
    double warmup = atof(argv[5]), seconds = atof(argv[6]);
    if (nconn < 1 || argc != 7 + nconn || window < 1) {
        fprintf(stderr, "blast: need one LOGON_HEX per connection and WINDOW >= 1\n");
        return 2;
    }
    int ep = epoll_create1(0);
    if (ep < 0) fail("epoll_create1");
    Conn *conns = calloc((size_t)nconn, sizeof(Conn));
    size_t wcap = (size_t)window * ORDER_FRAME + 4096;
    for (int i = 0; i < nconn; i++) {
        Conn *c = &conns[i];
        c->rbuf = malloc(RBUF);
        c->wbuf = malloc(wcap);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) fail("socket");
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { errno = EINVAL; fail("address"); }
        if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) fail("connect");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        const char *hex = argv[7 + i];
        size_t hl = strlen(hex);
        for (size_t k = 0; k + 1 < hl; k += 2)
            c->wbuf[c->wlen++] = (unsigned char)(hexval(hex[k]) * 16 + hexval(hex[k + 1]));
        c->seq = 1;                       /* the Logon */
        c->next_cl = 1;
        if (write(c->fd, c->wbuf, c->wlen) != (ssize_t)c->wlen) fail("write logon");
        c->wlen = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("epoll_ctl");
    }
    double start = now_s(), measure_from = 0, end = 0;
    long answered = 0, rejected = 0, logged = 0, total = 0;
    double cpu0 = 0;
    struct epoll_event events[64];
    for (;;) {
        double t = now_s();
        if (logged == nconn && measure_from == 0) {
            measure_from = t + warmup;
            end = measure_from + seconds;
        }
        if (measure_from != 0 && t >= end) break;
        if (measure_from == 0 && t - start > 10) { errno = ETIMEDOUT; fail("logon"); }
        if (measure_from != 0 && cpu0 == 0 && t >= measure_from) {
            cpu0 = cpu_s();
            answered = rejected = 0;
        }
        /* Top every logged-on connection up to WINDOW orders in flight. */
        for (int i = 0; i < nconn; i++) {
            Conn *c = &conns[i];
            if (!c->logged_on) continue;
            if (c->woff == c->wlen) c->woff = c->wlen = 0;
            while (c->in_flight < window && c->wlen + ORDER_FRAME <= wcap) {
                c->wlen += encode_order(c->wbuf + c->wlen, ++c->seq, c->next_cl++);
                c->in_flight++;
            }
            while (c->woff < c->wlen) {
                ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_DONTWAIT);
                if (w < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    fail("send");
                }
                c->woff += (size_t)w;
            }
        }
        int n = epoll_wait(ep, events, 64, 1);
        if (n < 0 && errno != EINTR) fail("epoll_wait");
        for (int e = 0; e < n; e++) {
            Conn *c = &conns[events[e].data.u32];
            ssize_t r = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, MSG_DONTWAIT);
            if (r == 0) { errno = ECONNRESET; fail("the daemon closed the connection"); }
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) continue;
                fail("recv");
            }
            c->rlen += (size_t)r;
            size_t off = 0;
            while (c->rlen - off >= 4) {
                uint32_t len = c->rbuf[off] | (uint32_t)c->rbuf[off + 1] << 8 |
                               (uint32_t)c->rbuf[off + 2] << 16 | (uint32_t)c->rbuf[off + 3] << 24;
                if (len + 4 > RBUF) { errno = EMSGSIZE; fail("frame"); }
                if (c->rlen - off < 4 + (size_t)len) break;
                unsigned char tag = len >= 2 ? c->rbuf[off + 5] : 0;
                if (tag == TAG_ACCEPTED || tag == TAG_REJECTED || tag == TAG_REJECT) {
                    c->in_flight--;
                    answered++;
                    total++;
                    if (tag != TAG_ACCEPTED) rejected++;
                } else if (tag == TAG_LOGON_ACK) {
                    c->logged_on = 1;
                    logged++;
                } else if (tag == TAG_LOGON_REJECT || tag == TAG_DISCONNECT) {
                    errno = EPERM;
                    fail(tag == TAG_LOGON_REJECT ? "logon rejected" : "disconnected");
                }
                off += 4 + (size_t)len;
            }
            memmove(c->rbuf, c->rbuf + off, c->rlen - off);
            c->rlen -= off;
        }
    }
    double elapsed = now_s() - measure_from;
    printf("{\"answered\": %ld, \"rejected\": %ld, \"seconds\": %.6f, \"cpu_s\": %.6f, "
           "\"answered_total\": %ld}\n",
           answered, rejected, elapsed, cpu_s() - cpu0, total);
    return 0;
}
