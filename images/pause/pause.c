/* pause.c: the process that holds a pod sandbox's namespaces (Fun's own, in place of
 * registry.k8s.io/pause). It sleeps until a signal comes, reaps any child that exits (a pod
 * sharing its PID namespace makes it PID 1, so orphans are reparented to it), and exits 0 on
 * SIGINT or SIGTERM. Other signals keep their default action.
 *
 * The stop and child signals are blocked except inside sigsuspend(), so a signal that comes
 * between the check and the sleep is not lost (the race of a plain pause() loop).
 *
 * Built static and stripped by images/build.sh: gcc -static -Os -s -o pause pause.c
 * With any argument (-v, --version) it prints "fun pause" and exits 0: a smoke test of the
 * binary that needs no signal.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;

static void on_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void on_child(int sig) {
  (void)sig;
  const int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static void say(int fd, const char* s) {
  ssize_t n = write(fd, s, strlen(s));
  (void)n;
}

static int install(int sig, void (*handler)(int), int flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  sigfillset(&sa.sa_mask);
  return sigaction(sig, &sa, NULL);
}

int main(int argc, char** argv) {
  (void)argv;
  if (argc > 1) {
    say(1, "fun pause\n");
    return 0;
  }
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGINT);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGCHLD);
  sigset_t waiting;
  if (sigprocmask(SIG_BLOCK, &handled, &waiting) != 0 || install(SIGINT, on_stop, 0) != 0 ||
      install(SIGTERM, on_stop, 0) != 0 ||
      install(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) != 0) {
    say(2, "pause: cannot set up signal handling\n");
    return 1;
  }
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGCHLD);
  if (getpid() != 1) say(2, "pause: warning: not running as PID 1\n");
  on_child(SIGCHLD); /* children that exited before the handler was there */
  while (!stop_requested) sigsuspend(&waiting);
  return 0;
}
