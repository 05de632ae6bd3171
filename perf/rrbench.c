/*
 * rrbench - request/response, connection-rate and idle-connection tool for
 * ringnet's perf/ suite.  Compiled at run time by perf/compare.sh and
 * perf/rss.sh (gcc -O2 -o perf/results/tmp/rrbench perf/rrbench.c).
 *
 *   rrbench server  [-p PORT] [-L LIFETIME_S]
 *       TCP echo (epoll, any number of connections, idle ones are held) and
 *       UDP echo, both on PORT, all addresses.  Exits after LIFETIME_S.
 *   rrbench tcp_rr  -H HOST [-p PORT] [-d SECONDS]
 *       one TCP connection, 1-byte ping-pong; latency of every transaction.
 *   rrbench udp_rr  -H HOST [-p PORT] [-d SECONDS]
 *       1-byte UDP ping-pong (4-byte sequence number; 200 ms loss timeout).
 *   rrbench tcp_crr -H HOST [-p PORT] [-d SECONDS]
 *       connect, 1-byte request, 1-byte reply, close; back to back.
 *   rrbench bulk    [-p PORT] [-b BYTES] [-L LIFETIME_S]
 *       bulk peer for tcp_up/tcp_down, one connection at a time: PORT is a
 *       sink (read to EOF, then close), PORT+1 a source (send BYTES, shut
 *       down writing, wait for the peer's close).  One JSON line per
 *       transfer, timed from accept to EOF / the peer's close.
 *   rrbench tcp_up  -H HOST [-p PORT] [-b BYTES]
 *       send BYTES to a bulk sink, shut down writing, wait for the sink's
 *       close (so every byte has arrived); timed from connected to close.
 *   rrbench tcp_down -H HOST [-p PORT] [-b BYTES]
 *       read from a bulk source (PORT+1 of `bulk`) to EOF, expecting BYTES;
 *       timed from connected to EOF.
 *   rrbench hold    -H HOST [-p PORT] [-n CONNS] [-d SECONDS]
 *       open CONNS TCP connections and keep them idle; prints one JSON line
 *       once all are established, then holds them until stdin reaches EOF
 *       or SECONDS pass.  After -s SETTLE seconds (default 3) it prints a
 *       second line: how many connections the peer closed meanwhile and how
 *       many still answer a 1-byte echo.
 *
 * Every client prints one JSON object on stdout.  Every loop is bounded by
 * time (-d, capped at 600 s) and by count; bulk transfers by BYTES and a
 * 10 s stall timeout per send/recv.  tests/vm_perf.rs links it statically
 * (gcc -static) and runs the clients inside a QEMU guest.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 20000000L

static const char *opt_host = "127.0.0.1";
static int opt_port = 7801;
static double opt_secs = 5;
static long opt_n = 1000;
static double opt_life = 1800;
static double opt_settle = 3;
static long long opt_bytes = 64LL << 20;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what)
{
	fprintf(stderr, "rrbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static struct sockaddr_in target(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(opt_port) };
	if (inet_pton(AF_INET, opt_host, &a.sin_addr) != 1) {
		fprintf(stderr, "rrbench: bad IPv4 address %s\n", opt_host);
		exit(2);
	}
	return a;
}

/* samples */
static uint64_t *lat;
static long nlat;

static void add_sample(uint64_t ns)
{
	if (nlat < MAX_SAMPLES)
		lat[nlat++] = ns;
}

static int by_value(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static double pct(double p)
{
	long i = (long)(p * (double)nlat);
	if (i >= nlat)
		i = nlat - 1;
	return nlat ? (double)lat[i] / 1000.0 : 0;
}

static void emit(const char *mode, uint64_t elapsed_ns, long errors, long lost)
{
	double mean = 0;
	qsort(lat, (size_t)nlat, sizeof(*lat), by_value);
	for (long i = 0; i < nlat; i++)
		mean += (double)lat[i];
	if (nlat)
		mean /= (double)nlat * 1000.0;
	double s = (double)elapsed_ns / 1e9;
	printf("{\"mode\":\"%s\",\"count\":%ld,\"errors\":%ld,\"lost\":%ld,"
	       "\"seconds\":%.3f,\"rate\":%.1f,\"mean_us\":%.2f,"
	       "\"min_us\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,"
	       "\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f}\n",
	       mode, nlat, errors, lost, s, s > 0 ? (double)nlat / s : 0, mean,
	       nlat ? (double)lat[0] / 1000.0 : 0, pct(0.5), pct(0.9),
	       pct(0.99), pct(0.999),
	       nlat ? (double)lat[nlat - 1] / 1000.0 : 0);
	fflush(stdout);
}

static int tcp_open(const struct sockaddr_in *a, int timeout_s)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	struct timeval tv = { .tv_sec = timeout_s };
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int ping1(int fd)
{
	char c = 'p';
	if (send(fd, &c, 1, MSG_NOSIGNAL) != 1)
		return -1;
	return recv(fd, &c, 1, 0) == 1 ? 0 : -1;
}

static int client_tcp_rr(void)
{
	struct sockaddr_in a = target();
	int fd = tcp_open(&a, 2);
	if (fd < 0)
		fail("connect");
	for (int i = 0; i < 100; i++) /* warm-up, not recorded */
		if (ping1(fd))
			fail("warm-up");
	long errors = 0;
	uint64_t t0 = mono_ns(), stop = t0 + (uint64_t)(opt_secs * 1e9), t = t0;
	while (t < stop) {
		uint64_t s = t;
		if (ping1(fd)) {
			errors++;
			break;
		}
		t = mono_ns();
		add_sample(t - s);
	}
	emit("tcp_rr", t - t0, errors, 0);
	close(fd);
	return errors ? 1 : 0;
}

static int client_udp_rr(void)
{
	struct sockaddr_in a = target();
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("udp connect");
	struct timeval tv = { .tv_usec = 200000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	uint32_t seq = 0, got;
	long lost = 0, errors = 0;
	int ok = 0;
	for (int i = 0; i < 100; i++) { /* warm-up; also proves a path */
		seq++;
		send(fd, &seq, sizeof(seq), 0);
		while (recv(fd, &got, sizeof(got), 0) == sizeof(got))
			if (got == seq) {
				ok++;
				break;
			}
	}
	if (!ok) {
		fprintf(stderr, "rrbench: udp_rr: no reply during warm-up\n");
		emit("udp_rr", 0, 1, 100);
		return 1;
	}
	uint64_t t0 = mono_ns(), stop = t0 + (uint64_t)(opt_secs * 1e9), t = t0;
	while (t < stop) {
		uint64_t s = t;
		seq++;
		if (send(fd, &seq, sizeof(seq), 0) != sizeof(seq)) {
			errors++;
			t = mono_ns();
			continue;
		}
		for (;;) {
			ssize_t r = recv(fd, &got, sizeof(got), 0);
			if (r < 0) { /* timed out: lost request or reply */
				lost++;
				t = mono_ns();
				break;
			}
			if (r == sizeof(got) && got == seq) {
				t = mono_ns();
				add_sample(t - s);
				break;
			}
			/* a late reply to an earlier, timed-out request */
		}
	}
	emit("udp_rr", t - t0, errors, lost);
	close(fd);
	return 0;
}

static int client_tcp_crr(void)
{
	struct sockaddr_in a = target();
	long errors = 0;
	uint64_t t0 = mono_ns(), stop = t0 + (uint64_t)(opt_secs * 1e9), t = t0;
	while (t < stop && errors < 1000) {
		uint64_t s = t;
		int fd = tcp_open(&a, 2);
		if (fd < 0 || ping1(fd)) {
			errors++;
			if (fd >= 0)
				close(fd);
			t = mono_ns();
			continue;
		}
		close(fd);
		t = mono_ns();
		add_sample(t - s);
	}
	emit("tcp_crr", t - t0, errors, 0);
	return 0;
}

static int client_hold(void)
{
	struct sockaddr_in a = target();
	long errors = 0, open_ = 0;
	uint64_t t0 = mono_ns(), stop = t0 + (uint64_t)(opt_secs * 1e9);
	int *fds = calloc((size_t)opt_n + 1, sizeof(int));
	if (!fds)
		fail("calloc");
	while (open_ < opt_n && mono_ns() < stop && errors < 100) {
		int fd = tcp_open(&a, 5);
		if (fd < 0 || ping1(fd)) { /* echo proves end-to-end setup */
			errors++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		fds[open_++] = fd;
	}
	printf("{\"mode\":\"hold\",\"requested\":%ld,\"open\":%ld,"
	       "\"errors\":%ld,\"setup_seconds\":%.3f}\n",
	       opt_n, open_, errors, (double)(mono_ns() - t0) / 1e9);
	fflush(stdout);
	/* after -s seconds: are the connections still there?  Passive check
	 * (FIN/RST seen: readable without a request) then active check (one
	 * 1-byte echo on every connection at once, replies within 5 s). */
	uint64_t vt = mono_ns() + (uint64_t)(opt_settle * 1e9);
	while (mono_ns() < vt && mono_ns() < stop)
		usleep(50000);
	struct pollfd *pf = calloc((size_t)open_ + 1, sizeof(*pf));
	if (!pf)
		fail("calloc");
	long closed = 0, echoed = 0, sent = 0;
	for (long i = 0; i < open_; i++)
		pf[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN | POLLRDHUP };
	if (open_ && poll(pf, (nfds_t)open_, 0) > 0)
		for (long i = 0; i < open_; i++)
			if (pf[i].revents) {
				closed++;
				pf[i].fd = -1;
			}
	char c = 'v';
	for (long i = 0; i < open_; i++)
		if (pf[i].fd >= 0 && send(pf[i].fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
			sent++;
		else
			pf[i].fd = -1;
	/* epoll, not poll: a poll over 10,000 fds per wake-up made the client
	 * itself the bottleneck (replies trickling in one per 1 ms scan) */
	int ep = epoll_create1(0);
	if (ep < 0)
		fail("epoll_create1");
	for (long i = 0; i < open_; i++)
		if (pf[i].fd >= 0) {
			struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i };
			if (epoll_ctl(ep, EPOLL_CTL_ADD, pf[i].fd, &ev) < 0)
				fail("epoll_ctl");
		}
	struct epoll_event evs[256];
	uint64_t vstop = mono_ns() + 5000000000ull;
	while (echoed < sent && mono_ns() < vstop) {
		int n = epoll_wait(ep, evs, 256, 100);
		for (int k = 0; k < n; k++) {
			long i = (long)evs[k].data.u64;
			if (pf[i].fd < 0)
				continue;
			if (recv(pf[i].fd, &c, 1, MSG_DONTWAIT) == 1)
				echoed++;
			epoll_ctl(ep, EPOLL_CTL_DEL, pf[i].fd, NULL);
			pf[i].fd = -1;
		}
	}
	close(ep);
	printf("{\"mode\":\"verify\",\"open\":%ld,\"closed_by_peer\":%ld,"
	       "\"echo_ok\":%ld,\"after_seconds\":%.1f}\n",
	       open_, closed, echoed, (double)(mono_ns() - t0) / 1e9);
	fflush(stdout);
	free(pf);
	/* hold until stdin closes or time runs out */
	struct pollfd p = { .fd = 0, .events = POLLIN };
	char b[64];
	while (mono_ns() < stop) {
		int r = poll(&p, 1, 200);
		if (r > 0 && read(0, b, sizeof(b)) <= 0)
			break;
	}
	for (long i = 0; i < open_; i++)
		close(fds[i]);
	return open_ == opt_n ? 0 : 1;
}

static int server(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	int one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(opt_port) };
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int ufd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (lfd < 0 || ufd < 0)
		fail("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    bind(ufd, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("bind");
	if (listen(lfd, 4096) < 0)
		fail("listen");
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.fd = ufd;
	epoll_ctl(ep, EPOLL_CTL_ADD, ufd, &ev);
	struct epoll_event evs[256];
	char buf[65536];
	uint64_t stop = mono_ns() + (uint64_t)(opt_life * 1e9);
	fprintf(stderr, "rrbench server on port %d\n", opt_port);
	while (mono_ns() < stop) {
		int k = epoll_wait(ep, evs, 256, 500);
		for (int i = 0; i < k; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL,
						    SOCK_NONBLOCK)) >= 0) {
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY,
						   &one, sizeof(one));
					struct epoll_event ce = {
						.events = EPOLLIN, .data.fd = c
					};
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
				}
			} else if (fd == ufd) {
				for (int j = 0; j < 64; j++) {
					struct sockaddr_storage from;
					socklen_t fl = sizeof(from);
					ssize_t r = recvfrom(ufd, buf, sizeof(buf), 0,
							     (struct sockaddr *)&from, &fl);
					if (r < 0)
						break;
					sendto(ufd, buf, (size_t)r, 0,
					       (struct sockaddr *)&from, fl);
				}
			} else {
				ssize_t r = recv(fd, buf, sizeof(buf), 0);
				if (r > 0) {
					/* tiny echoes: a short write would mean
					 * a misbehaving peer; drop it */
					if (send(fd, buf, (size_t)r, MSG_NOSIGNAL) != r)
						close(fd);
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					close(fd);
				}
			}
		}
	}
	return 0;
}

/* bulk transfers: zeros from/into one static buffer (no per-byte work) */
static char bulk_buf[65536];

static void emit_bulk(const char *mode, long long bytes, uint64_t ns, int error)
{
	double s = (double)ns / 1e9;
	printf("{\"mode\":\"%s\",\"bytes\":%lld,\"expected\":%lld,\"seconds\":%.6f,"
	       "\"mib_s\":%.2f,\"error\":%d}\n",
	       mode, bytes, opt_bytes, s, s > 0 ? (double)bytes / s / 1048576.0 : 0,
	       error);
	fflush(stdout);
}

/* send `bytes` zeros; the count actually sent */
static long long send_zeros(int fd, long long bytes)
{
	long long sent = 0;
	while (sent < bytes) {
		long long left = bytes - sent;
		size_t n = left < (long long)sizeof(bulk_buf) ? (size_t)left : sizeof(bulk_buf);
		ssize_t w = send(fd, bulk_buf, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		sent += w;
	}
	return sent;
}

/* read to EOF; the byte count, or -1 after an error (timeout, reset) */
static long long drain(int fd)
{
	long long got = 0;
	for (;;) {
		ssize_t r = recv(fd, bulk_buf, sizeof(bulk_buf), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return got;
		got += r;
	}
}

static int client_tcp_up(void)
{
	struct sockaddr_in a = target();
	int fd = tcp_open(&a, 10);
	if (fd < 0)
		fail("connect");
	uint64_t t0 = mono_ns();
	long long sent = send_zeros(fd, opt_bytes);
	shutdown(fd, SHUT_WR);
	long long back = drain(fd); /* the sink closes once it has read EOF */
	uint64_t t1 = mono_ns();
	int err = sent != opt_bytes || back != 0;
	emit_bulk("tcp_up", sent, t1 - t0, err);
	close(fd);
	return err;
}

static int client_tcp_down(void)
{
	struct sockaddr_in a = target();
	int fd = tcp_open(&a, 10);
	if (fd < 0)
		fail("connect");
	uint64_t t0 = mono_ns();
	long long got = drain(fd);
	uint64_t t1 = mono_ns();
	int err = got != opt_bytes;
	emit_bulk("tcp_down", got < 0 ? 0 : got, t1 - t0, err);
	close(fd);
	return err;
}

static int listen_on(int port)
{
	int one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		fail("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("bind");
	if (listen(fd, 16) < 0)
		fail("listen");
	return fd;
}

static int bulk_server(void)
{
	struct pollfd l[2] = { { .fd = listen_on(opt_port), .events = POLLIN },
			       { .fd = listen_on(opt_port + 1), .events = POLLIN } };
	struct timeval tv = { .tv_sec = 10 };
	uint64_t stop = mono_ns() + (uint64_t)(opt_life * 1e9);
	fprintf(stderr, "rrbench bulk: sink on port %d, source on %d\n", opt_port,
		opt_port + 1);
	while (mono_ns() < stop) {
		if (poll(l, 2, 500) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (!(l[i].revents & POLLIN))
				continue;
			int c = accept(l[i].fd, NULL, NULL);
			if (c < 0)
				continue;
			setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
			uint64_t t0 = mono_ns();
			if (i == 0) {
				long long got = drain(c);
				emit_bulk("sink", got < 0 ? 0 : got, mono_ns() - t0,
					  got != opt_bytes);
			} else {
				long long sent = send_zeros(c, opt_bytes);
				shutdown(c, SHUT_WR);
				long long back = drain(c); /* the peer's close */
				emit_bulk("source", sent, mono_ns() - t0,
					  sent != opt_bytes || back != 0);
			}
			close(c);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: rrbench server|bulk|tcp_rr|udp_rr|tcp_crr|tcp_up|tcp_down|hold "
				"[-H host] [-p port] [-d secs] [-n conns] [-b bytes] [-L lifetime]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int o;
	optind = 2;
	while ((o = getopt(argc, argv, "H:p:d:n:L:s:b:")) != -1) {
		switch (o) {
		case 'H': opt_host = optarg; break;
		case 'p': opt_port = atoi(optarg); break;
		case 'd': opt_secs = atof(optarg); break;
		case 'n': opt_n = atol(optarg); break;
		case 'L': opt_life = atof(optarg); break;
		case 's': opt_settle = atof(optarg); break;
		case 'b': opt_bytes = atoll(optarg); break;
		default: return 2;
		}
	}
	if (opt_secs > 600)
		opt_secs = 600;
	if (opt_n < 0 || opt_n > 200000)
		opt_n = 200000;
	const char *m = argv[1];
	if (!strcmp(m, "server"))
		return server();
	if (!strcmp(m, "bulk"))
		return bulk_server();
	if (!strcmp(m, "tcp_up"))
		return client_tcp_up();
	if (!strcmp(m, "tcp_down"))
		return client_tcp_down();
	lat = calloc(MAX_SAMPLES, sizeof(*lat));
	if (!lat)
		fail("calloc");
	if (!strcmp(m, "tcp_rr"))
		return client_tcp_rr();
	if (!strcmp(m, "udp_rr"))
		return client_udp_rr();
	if (!strcmp(m, "tcp_crr"))
		return client_tcp_crr();
	if (!strcmp(m, "hold"))
		return client_hold();
	fprintf(stderr, "rrbench: unknown mode %s\n", m);
	return 2;
}
