/*
 * Preloaded into Debian 13's SIPp (interop/sipp-tls.sh) so that it can send over TLS.
 *
 * SIPp 3.7.3 attaches its TLS sockets with SSL_set_bio(BIO_new_socket(fd)) and later asks
 * SSL_get_fd() for the descriptor before each write. OpenSSL answers with the BIO's
 * descriptor; wolfSSL, which Debian builds SIPp against, answers -1 for a BIO-attached
 * session, so SIPp's every TLS write fails ("Wrote -1 of N bytes") after a good handshake.
 * This answers what OpenSSL would: the descriptor of the session's socket BIO. Nothing
 * else in SIPp or wolfSSL is touched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

typedef int (*get_fd_fn)(const void *);
typedef void *(*get_wbio_fn)(const void *);
typedef long (*bio_get_fd_fn)(void *, int *);

int wolfSSL_get_fd(const void *ssl)
{
    get_fd_fn get_fd = (get_fd_fn)dlsym(RTLD_NEXT, "wolfSSL_get_fd");
    int fd = get_fd ? get_fd(ssl) : -1;
    if (fd >= 0) {
        return fd;
    }
    get_wbio_fn get_wbio = (get_wbio_fn)dlsym(RTLD_NEXT, "wolfSSL_SSL_get_wbio");
    bio_get_fd_fn bio_get_fd = (bio_get_fd_fn)dlsym(RTLD_NEXT, "wolfSSL_BIO_get_fd");
    void *bio = get_wbio ? get_wbio(ssl) : 0;
    if (bio && bio_get_fd) {
        bio_get_fd(bio, &fd);
    }
    return fd;
}
