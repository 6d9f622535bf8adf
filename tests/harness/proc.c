/*
 * Harness processes, paths and readiness polling.  Every child is started
 * in its own process group, dies with the test (PR_SET_PDEATHSIG) and
 * writes stdout+stderr to a log file the test can read.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROC_POLL_MS      10
#define PROC_FIND_DEPTH   8
#define PROC_ENV_MAX      4096
#define PROC_READ_MAX     (256u * 1024 * 1024)
#define PROC_HTTP_POLL_MS 500

extern char **environ;

static long long
proc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
proc_nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static const char *
proc_env_dir(const char *name)
{
	const char *v = getenv(name);

	if (v == NULL || v[0] == '\0') {
		fprintf(stderr, "harness: %s is not set (run through ctest)\n",
		    name);
		abort();
	}
	return v;
}

const char *
h_build_dir(void)
{
	return proc_env_dir("AIPROXY_BUILD_DIR");
}

const char *
h_source_dir(void)
{
	return proc_env_dir("AIPROXY_SOURCE_DIR");
}

/* Depth-first search of dir for an executable regular file called name.
 * Caller frees the result. */
static char *
proc_find(const char *dir, const char *name, int depth)
{
	DIR *d;
	struct dirent *de;
	char path[PATH_MAX];
	char *found = NULL;
	struct stat st;
	int n;

	if (depth > PROC_FIND_DEPTH)
		return NULL;
	n = snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (n > 0 && (size_t)n < sizeof(path) && stat(path, &st) == 0 &&
	    S_ISREG(st.st_mode) && access(path, X_OK) == 0)
		return strdup(path);
	d = opendir(dir);
	if (d == NULL)
		return NULL;
	while (found == NULL && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    strcmp(de->d_name, "CMakeFiles") == 0)
			continue;
		n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (n < 0 || (size_t)n >= sizeof(path))
			continue;
		if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		found = proc_find(path, name, depth + 1);
	}
	closedir(d);
	return found;
}

char *
h_bin_path(const char *name)
{
	if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL)
		return NULL;
	return proc_find(h_build_dir(), name, 0);
}

/* A free port from bind(0): in the ephemeral range. */
static int
free_port_kernel(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd, port;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = 0;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		port = -errno;
		close(fd);
		return port;
	}
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* Whether 127.0.0.1:port can be bound now. */
static bool
port_free(int port)
{
	struct sockaddr_in sa;
	bool ok;
	int fd;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return false;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/*
 * A port below the kernel's ephemeral range (ip_local_port_range), so that
 * no outgoing connection takes it as its source port between now and the
 * listen; picked at random to keep parallel tests apart.  Falls back to
 * bind(0).
 */
int
h_free_port(void)
{
	static _Atomic uint64_t state;
	int low = 32768, high, span;
	uint64_t x;
	FILE *f;

	if ((f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) !=
	    NULL) {
		char line[64];

		if (fgets(line, sizeof(line), f) != NULL)
			low = (int)strtol(line, NULL, 10);
		fclose(f);
	}
	high = low - 1;
	if (high > 32767)
		high = 32767;
	span = high - 15000;
	if (span < 1000)
		return free_port_kernel();
	x = atomic_load(&state);
	if (x == 0)
		x = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^
		    (uint64_t)(uintptr_t)&x;
	for (int i = 0; i < 64; i++) {
		int port;

		/* xorshift64 */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		port = 15000 + (int)(x % (uint64_t)span);
		if (port_free(port)) {
			atomic_store(&state, x);
			return port;
		}
	}
	atomic_store(&state, x);
	return free_port_kernel();
}

char *
h_tmpdir(const char *prefix)
{
	const char *base = getenv("TMPDIR");
	char tmpl[PATH_MAX];
	int n;

	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	n = snprintf(tmpl, sizeof(tmpl), "%s/aiproxy-%s-XXXXXX", base,
	    prefix != NULL ? prefix : "test");
	if (n < 0 || (size_t)n >= sizeof(tmpl))
		return NULL;
	if (mkdtemp(tmpl) == NULL)
		return NULL;
	return strdup(tmpl);
}

static int
proc_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int
h_rmtree(const char *path)
{
	struct stat st;
	int rv;

	if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0)
		return -EINVAL;
	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	rv = nftw(path, proc_rm_one, 32, FTW_DEPTH | FTW_PHYS);
	if (rv == -1)
		return -errno;
	return rv;
}

/* Current environment with env_extra overriding/adding entries.  Only the
 * array is allocated; strings are borrowed.  Caller frees the array. */
static char **
proc_env_build(char *const env_extra[])
{
	size_t n_env = 0, n_extra = 0, i, j, k = 0;
	char **env;

	while (environ != NULL && environ[n_env] != NULL)
		n_env++;
	while (env_extra != NULL && env_extra[n_extra] != NULL)
		n_extra++;
	if (n_env + n_extra >= PROC_ENV_MAX)
		return NULL;
	env = calloc(n_env + n_extra + 1, sizeof(*env));
	if (env == NULL)
		return NULL;
	for (i = 0; i < n_env; i++) {
		const char *eq = strchr(environ[i], '=');
		size_t name_len =
		    eq != NULL ? (size_t)(eq - environ[i]) : strlen(environ[i]);
		bool overridden = false;

		for (j = 0; j < n_extra; j++) {
			if (strncmp(env_extra[j], environ[i], name_len) == 0 &&
			    env_extra[j][name_len] == '=') {
				overridden = true;
				break;
			}
		}
		if (!overridden)
			env[k++] = environ[i];
	}
	for (j = 0; j < n_extra; j++)
		env[k++] = env_extra[j];
	env[k] = NULL;
	return env;
}

int
h_proc_start(struct hproc *p, const char *name, char *const argv[],
    char *const env_extra[], const char *log_path, const char *run_as)
{
	struct passwd *pw = NULL;
	uid_t uid = 0;
	gid_t gid = 0;
	char **env = NULL;
	int log_fd = -1, null_fd = -1, pipe_fd[2] = {-1, -1};
	pid_t parent, pid;
	int child_errno = 0;
	ssize_t r;
	int rv;

	if (p == NULL || argv == NULL || argv[0] == NULL || argv[0][0] != '/' ||
	    log_path == NULL)
		return -EINVAL;
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name != NULL ? name : argv[0]);
	if (snprintf(p->log_path, sizeof(p->log_path), "%s", log_path) >=
	    (int)sizeof(p->log_path))
		return -ENAMETOOLONG;

	if (run_as != NULL && geteuid() == 0) {
		pw = getpwnam(run_as);
		if (pw == NULL)
			return -ENOENT;
		uid = pw->pw_uid;
		gid = pw->pw_gid;
	}
	env = proc_env_build(env_extra);
	if (env == NULL)
		return -ENOMEM;
	log_fd =
	    open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		rv = -errno;
		goto out_env;
	}
	if (pw != NULL && fchown(log_fd, uid, gid) != 0) {
		rv = -errno;
		goto out_log;
	}
	null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0) {
		rv = -errno;
		goto out_log;
	}
	if (pipe2(pipe_fd, O_CLOEXEC) != 0) {
		rv = -errno;
		goto out_null;
	}
	parent = getpid();
	pid = fork();
	if (pid < 0) {
		rv = -errno;
		goto out_pipe;
	}
	if (pid == 0) {
		/* Child: async-signal-safe calls only. */
		int e;

		setpgid(0, 0);
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
		    getppid() != parent)
			_exit(127);
		if (dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 ||
		    dup2(log_fd, 2) < 0)
			goto child_fail;
		if (pw != NULL) {
			if (setgroups(1, &gid) != 0 || setgid(gid) != 0 ||
			    setuid(uid) != 0)
				goto child_fail;
		}
		execve(argv[0], argv, env);
	child_fail:
		e = errno;
		if (write(pipe_fd[1], &e, sizeof(e)) < 0)
			_exit(126);
		_exit(127);
	}
	/* Parent: the pipe reads EOF once execve() succeeded. */
	close(pipe_fd[1]);
	pipe_fd[1] = -1;
	do {
		r = read(pipe_fd[0], &child_errno, sizeof(child_errno));
	} while (r < 0 && errno == EINTR);
	if (r == (ssize_t)sizeof(child_errno)) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		rv = child_errno > 0 ? -child_errno : -EIO;
		goto out_pipe;
	}
	p->pid = pid;
	rv = 0;
out_pipe:
	if (pipe_fd[0] >= 0)
		close(pipe_fd[0]);
	if (pipe_fd[1] >= 0)
		close(pipe_fd[1]);
out_null:
	close(null_fd);
out_log:
	close(log_fd);
out_env:
	free(env);
	return rv;
}

int
h_proc_stop(struct hproc *p, int sig, int timeout_ms)
{
	long long deadline;
	int status = 0;
	pid_t r;

	if (p == NULL || p->pid <= 0)
		return -ESRCH;
	if (kill(p->pid, sig) != 0 && errno != ESRCH)
		return -errno;
	deadline = proc_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	for (;;) {
		r = waitpid(p->pid, &status, WNOHANG);
		if (r == p->pid)
			break;
		if (r < 0 && errno != EINTR) {
			status = -errno;
			break;
		}
		if (proc_now_ms() >= deadline) {
			fprintf(stderr,
			    "harness: %s (pid %d) ignored signal %d, killing\n",
			    p->name, (int)p->pid, sig);
			kill(-p->pid, SIGKILL);
			kill(p->pid, SIGKILL);
			while ((r = waitpid(p->pid, &status, 0)) < 0 &&
			       errno == EINTR)
				;
			if (r < 0)
				status = -errno;
			break;
		}
		proc_nap_ms(PROC_POLL_MS);
	}
	/* Leftover members of the child's process group. */
	kill(-p->pid, SIGKILL);
	p->pid = 0;
	return status;
}

bool
h_proc_alive(struct hproc *p)
{
	siginfo_t info;

	if (p == NULL || p->pid <= 0)
		return false;
	memset(&info, 0, sizeof(info));
	if (waitid(P_PID, (id_t)p->pid, &info, WEXITED | WNOHANG | WNOWAIT) !=
	    0)
		return false;
	return info.si_pid == 0;
}

int
h_wait_tcp(int port, int timeout_ms)
{
	long long deadline = proc_now_ms() + timeout_ms;
	struct sockaddr_in sa;
	int fd, rv;

	if (port <= 0 || port > 65535)
		return -EINVAL;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	for (;;) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		rv = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		close(fd);
		if (rv == 0)
			return 0;
		if (proc_now_ms() >= deadline)
			return -ETIMEDOUT;
		proc_nap_ms(PROC_POLL_MS);
	}
}

int
h_wait_http(const char *url, int timeout_ms)
{
	long long deadline = proc_now_ms() + timeout_ms;
	struct h_resp resp;
	int rv;

	for (;;) {
		rv =
		    h_http("GET", url, NULL, NULL, 0, PROC_HTTP_POLL_MS, &resp);
		if (rv == 0) {
			h_resp_free(&resp);
			return 0;
		}
		if (proc_now_ms() >= deadline)
			return -ETIMEDOUT;
		proc_nap_ms(PROC_POLL_MS);
	}
}

int
h_wait_file_contains(const char *path, const char *needle, int timeout_ms)
{
	long long deadline = proc_now_ms() + timeout_ms;
	size_t len;
	char *buf;
	bool found;

	if (path == NULL || needle == NULL)
		return -EINVAL;
	for (;;) {
		buf = h_read_file(path, &len);
		found = buf != NULL && memmem(buf, len, needle, strlen(needle));
		free(buf);
		if (found)
			return 0;
		if (proc_now_ms() >= deadline)
			return -ETIMEDOUT;
		proc_nap_ms(PROC_POLL_MS);
	}
}

char *
h_read_file(const char *path, size_t *ret_len)
{
	size_t cap = 4096, len = 0;
	char *buf, *nbuf;
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = malloc(cap);
	if (buf == NULL)
		goto fail_fd;
	for (;;) {
		if (cap - len < 2) {
			if (cap >= PROC_READ_MAX)
				goto fail_buf;
			nbuf = realloc(buf, cap * 2);
			if (nbuf == NULL)
				goto fail_buf;
			buf = nbuf;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto fail_buf;
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	if (ret_len != NULL)
		*ret_len = len;
	return buf;
fail_buf:
	free(buf);
fail_fd:
	close(fd);
	return NULL;
}
