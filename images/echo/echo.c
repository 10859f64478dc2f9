/* echo: the TCP and UDP echo server of Fun's test image fun/echo (images/build.sh).
 *
 *   echo [--tcp PORT] [--udp PORT]     (defaults: 7 and 7; 0 turns one off)
 *
 * One process, one epoll loop, no fork per connection: a VM under TCG serves thousands of
 * connections at once or in a row with it (busybox's servers fork per connection). TCP: what
 * a connection sends comes back; when the client half-closes, the server finishes sending and
 * closes. UDP: each datagram goes back to its sender. Prints "echo: listening" once ready.
 * Static, no dependencies but libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536

struct conn {
  int fd;
  size_t len, off; /* pending bytes in buf[off..len) */
  int read_done;
  char buf[BUF];
};

static int listen_on(int type, int port) {
  int fd = socket(AF_INET6, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int zero = 0, one = 1;
  setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)); /* IPv4 too */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof(a));
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_any;
  a.sin6_port = htons((unsigned short)port);
  if (bind(fd, (struct sockaddr*)&a, sizeof(a)) != 0) return -1;
  if (type == SOCK_STREAM && listen(fd, 4096) != 0) return -1;
  return fd;
}

static void drop(int ep, struct conn* c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

/* Moves bytes for one connection; returns 0 when it is finished (closed). */
static int pump(int ep, struct conn* c) {
  for (;;) {
    while (c->off < c->len) {
      ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return 1;
      }
      if (n < 0) return 0;
      c->off += (size_t)n;
    }
    c->off = c->len = 0;
    if (c->read_done) return 0;
    ssize_t n = read(c->fd, c->buf, BUF);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
      epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
      return 1;
    }
    if (n <= 0) {
      c->read_done = 1;
      return 0;
    }
    c->len = (size_t)n;
  }
}

int main(int argc, char** argv) {
  int tcp_port = 7, udp_port = 7;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--version") == 0) {
      puts("fun echo 1.0");
      return 0;
    }
    if (i + 1 < argc && strcmp(argv[i], "--tcp") == 0) {
      tcp_port = atoi(argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--udp") == 0) {
      udp_port = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: echo [--tcp PORT] [--udp PORT]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int tcp = -1, udp = -1;
  static char dgram[65536];
  if (tcp_port > 0) {
    if ((tcp = listen_on(SOCK_STREAM, tcp_port)) < 0) {
      perror("echo: tcp");
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tcp};
    epoll_ctl(ep, EPOLL_CTL_ADD, tcp, &ev);
  }
  if (udp_port > 0) {
    if ((udp = listen_on(SOCK_DGRAM, udp_port)) < 0) {
      perror("echo: udp");
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &udp};
    epoll_ctl(ep, EPOLL_CTL_ADD, udp, &ev);
  }
  printf("echo: listening (tcp %d, udp %d)\n", tcp_port, udp_port);
  fflush(stdout);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 1;
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.ptr == &tcp) {
        for (;;) {
          int fd = accept4(tcp, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          struct conn* c = calloc(1, sizeof(*c));
          if (c == NULL) {
            close(fd);
            continue;
          }
          c->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
      } else if (evs[i].data.ptr == &udp) {
        for (;;) {
          struct sockaddr_storage from;
          socklen_t len = sizeof(from);
          ssize_t got = recvfrom(udp, dgram, sizeof(dgram), 0, (struct sockaddr*)&from, &len);
          if (got < 0) break;
          sendto(udp, dgram, (size_t)got, 0, (struct sockaddr*)&from, len);
        }
      } else {
        struct conn* c = evs[i].data.ptr;
        if (!pump(ep, c)) {
          if (c->read_done) shutdown(c->fd, SHUT_WR);
          drop(ep, c);
        }
      }
    }
  }
}
