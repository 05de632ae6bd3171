/* perf/tlshs.c - new TLS handshakes (or plain TCP connects) per second, for perf/tls.sh.
 *
 *   tlshs -a ADDR -p PORT -s SECONDS [-n SNI -C CAFILE] [-P THREADS] [-t] [-w]
 *
 * Each of THREADS threads (default 1) loops until SECONDS have passed: connect(2) to
 * ADDR:PORT (IPv4), then
 *   TLS (default): a full handshake (OpenSSL, TLS 1.2 or 1.3, SNI = -n, the certificate
 *     verified against -C and the name -n, ALPN "http/1.1"; no session cache and no
 *     tickets, so every handshake is a full one), then close_notify, read until the
 *     server's EOF, close;
 *   -t: plain TCP: connect, write "BOGUS\r\n\r\n" (not TLS: an HTTPS server drops the
 *     connection at once), read until EOF, close.
 * Either way the server closes first, so TIME_WAIT stays with the server's side and never
 * piles up where the client runs: through ringnet, whose TCP offers no timestamps
 * (RFC 7323), the client's kernel could not reuse TIME_WAIT ports (tcp_tw_reuse needs
 * them) and connect(2) would slow down as the port range fills, whatever ran in the
 * previous minute.
 * -w: after the handshake, "GET / HTTP/1.1" with "connection: close" and read the response
 *     to EOF (a first request; not used by tls.sh by default).
 * Why not `openssl s_time`: it sends no SNI (OpenSSL 3.0 has no -servername there), and
 * ringnet splices TLS without SNI untouched, so s_time would never be intercepted.
 *
 * Output: one JSON line on stdout: {"ok": N, "errors": E, "seconds": S, "rate": N/S,
 * "first_error": "..."}. Exit 0 when at least one connection succeeded.
 *
 * Build: gcc -O2 -o tlshs tlshs.c -lssl -lcrypto -lpthread (Debian libssl-dev).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in dst;
static const char *sni;
static SSL_CTX *ctx;
static int plain_tcp, do_request;
static double deadline;
static atomic_long ok_total, err_total;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[200];

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void note_error(const char *what)
{
	char buf[160];
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	else
		snprintf(buf, sizeof buf, "%s", strerror(errno));
	ERR_clear_error();
	atomic_fetch_add(&err_total, 1);
	pthread_mutex_lock(&err_lock);
	if (!first_error[0])
		snprintf(first_error, sizeof first_error, "%s: %s", what, buf);
	pthread_mutex_unlock(&err_lock);
}

/* Read until EOF or error (the peer's close). */
static void drain(int fd)
{
	char buf[4096];
	while (read(fd, buf, sizeof buf) > 0)
		;
}

static int one(void)
{
	struct timeval tv = {.tv_sec = 5};
	int one_ = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		note_error("socket");
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_, sizeof one_);
	if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
		note_error("connect");
		close(fd);
		return -1;
	}
	if (plain_tcp) {
		static const char bogus[] = "BOGUS\r\n\r\n";
		if (write(fd, bogus, sizeof bogus - 1) < 0) {
			note_error("write");
			close(fd);
			return -1;
		}
		drain(fd);
		close(fd);
		return 0;
	}
	SSL *ssl = SSL_new(ctx);
	int rc = -1;
	if (!ssl) {
		note_error("SSL_new");
		close(fd);
		return -1;
	}
	SSL_set_tlsext_host_name(ssl, sni);
	SSL_set1_host(ssl, sni);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1) {
		note_error("handshake");
		goto out;
	}
	if (do_request) {
		char req[256], buf[16384];
		int n = snprintf(req, sizeof req,
				 "GET / HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n", sni);
		if (SSL_write(ssl, req, n) != n) {
			note_error("request");
			goto out;
		}
		while (SSL_read(ssl, buf, sizeof buf) > 0)
			;
	}
	rc = 0;
	SSL_shutdown(ssl); /* our close_notify; the server answers with its own and closes */
	drain(fd);
out:
	SSL_free(ssl);
	close(fd);
	return rc;
}

static void *worker(void *arg)
{
	(void)arg;
	while (now() < deadline) {
		if (one() == 0)
			atomic_fetch_add(&ok_total, 1);
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: tlshs -a ADDR -p PORT -s SECONDS [-n SNI -C CAFILE] "
			"[-P THREADS] [-t] [-w]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = NULL, *cafile = NULL;
	int port = 0, threads = 1, c;
	double secs = 10;
	while ((c = getopt(argc, argv, "a:p:s:n:C:P:tw")) != -1) {
		switch (c) {
		case 'a': addr = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 's': secs = atof(optarg); break;
		case 'n': sni = optarg; break;
		case 'C': cafile = optarg; break;
		case 'P': threads = atoi(optarg); break;
		case 't': plain_tcp = 1; break;
		case 'w': do_request = 1; break;
		default: usage();
		}
	}
	if (!addr || port <= 0 || port > 65535 || secs <= 0 || threads < 1 || threads > 256)
		usage();
	if (!plain_tcp && (!sni || !cafile))
		usage();
	memset(&dst, 0, sizeof dst);
	dst.sin_family = AF_INET;
	dst.sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, addr, &dst.sin_addr) != 1)
		usage();
	if (!plain_tcp) {
		static const unsigned char alpn[] = "\x08http/1.1";
		ctx = SSL_CTX_new(TLS_client_method());
		if (!ctx || SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
			fprintf(stderr, "tlshs: loading %s failed\n", cafile);
			return 2;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
	}
	pthread_t tids[256];
	double start = now();
	deadline = start + secs;
	for (int i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, worker, NULL) != 0) {
			fprintf(stderr, "tlshs: pthread_create failed\n");
			return 2;
		}
	for (int i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	double took = now() - start;
	long ok = atomic_load(&ok_total), errs = atomic_load(&err_total);
	for (char *p = first_error; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
			*p = ' ';
	printf("{\"ok\": %ld, \"errors\": %ld, \"seconds\": %.3f, \"rate\": %.1f, "
	       "\"first_error\": \"%s\"}\n",
	       ok, errs, took, (double)ok / took, first_error);
	return ok > 0 ? 0 : 1;
}
