#ifndef WARREN_CSPAWN_H
#define WARREN_CSPAWN_H

#include <sys/types.h>

/// Creates a pipe whose two descriptors are close-on-exec and above 2, so binding them to a
/// child's stdin, stdout or stderr can never overwrite one another. Returns 0 or an errno.
int warren_pipe(int fds[2]);

/// Starts `path` (no PATH search, no shell) with `argv` and `envp` through posix_spawn, which
/// glibc runs with CLONE_VM|CLONE_VFORK: nothing of the caller's address space is copied.
/// The child leads a new process group, has an empty signal mask and default dispositions
/// (warren ignores SIGPIPE; its handlers must not inherit that), `stdin_fd`, `stdout_fd` and
/// `stderr_fd` as its 0, 1 and 2, no other descriptor, and `cwd` as its working directory
/// (NULL: warren's). Returns 0 and the pid in `*pid`, or the errno of the failed step
/// (chdir or exec included).
int warren_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *cwd,
                 int stdin_fd, int stdout_fd, int stderr_fd);

/// pidfd_open(2): a descriptor that polls readable once `pid` has exited; -1 and errno if the
/// kernel has none (before Linux 5.3).
int warren_pidfd_open(pid_t pid);

/// A non-blocking, close-on-exec eventfd: how a run is told to stop. -1 and errno on failure.
int warren_eventfd(void);

/// Unblocks SIGCHLD in the calling thread, so the exits of the children it starts raise
/// nothing. SIGCHLD's default action is to ignore it, but the kernel discards it only when the
/// thread that started the child does not block it; libdispatch's threads block it, and then it
/// is queued for the one thread that does not: the main thread, which libdispatch parks in
/// sigsuspend for the life of the process, and which every run would wake for nothing. pidfds
/// and waitpid do not need the signal.
void warren_thread_discard_sigchld(void);

#endif
