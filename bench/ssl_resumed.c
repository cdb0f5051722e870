/*
 * An LD_PRELOAD shim for bench/tls.py: counts the TLS handshakes an OpenSSL
 * client (wrk) completes and how many of them resumed a session, so the
 * benchmark knows whether `wrk -H 'Connection: close'` measures full or
 * resumed handshakes against each server (a client-side count: it needs
 * nothing from the server).
 *
 * It wraps SSL_connect: when the real one returns 1 (the handshake is done;
 * wrk's sockets are non-blocking, so it is called until then), it asks
 * SSL_session_reused. At exit it writes "<handshakes> <resumed>\n" to the
 * file named by SSL_RESUMED_OUT.
 *
 *     cc -shared -fPIC -O2 -o ssl_resumed.so bench/ssl_resumed.c -ldl
 *     SSL_RESUMED_OUT=/tmp/n LD_PRELOAD=./ssl_resumed.so wrk ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_long handshakes;
static atomic_long resumed;

int SSL_connect(void *ssl)
{
    static int (*real_connect)(void *);
    static int (*reused)(const void *);
    if (!real_connect) {
        real_connect = (int (*)(void *))dlsym(RTLD_NEXT, "SSL_connect");
        reused = (int (*)(const void *))dlsym(RTLD_NEXT, "SSL_session_reused");
        if (!real_connect || !reused) {
            fprintf(stderr, "ssl_resumed: SSL_connect or SSL_session_reused not found\n");
            abort();
        }
    }
    int r = real_connect(ssl);
    if (r == 1) {
        atomic_fetch_add(&handshakes, 1);
        if (reused(ssl))
            atomic_fetch_add(&resumed, 1);
    }
    return r;
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("SSL_RESUMED_OUT");
    if (!path)
        return;
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "%ld %ld\n", atomic_load(&handshakes), atomic_load(&resumed));
    fclose(f);
}
